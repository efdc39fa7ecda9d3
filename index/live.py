"""The published index as a long-running reader (the API) sees it: the current version, loaded
once, replaced in the background when a newer one is published, so that searches never wait
for a reload."""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

from index import concepts
from index.reader import Build, BuildError, load_current
from index.vectors import VectorStoreError

log = logging.getLogger(__name__)
WATCH_INTERVAL_S = 0.5


class LiveIndex:
    """The published build of ``index_dir`` for the model ``expect_checkpoint`` (re-read when
    ``index/CURRENT`` changes, so new videos are searchable without a restart). ``concepts``:
    each build's concept lists (``index.concepts``) are made as it is read; ``rows_in_memory``:
    the share of the available memory up to which its rerank rows are read in (``Build.warm``;
    else searches read them cold), ``summaries_in_memory`` that of their summaries when cold."""

    def __init__(
        self,
        index_dir: Path,
        expect_checkpoint: str | None,
        concepts: bool = True,
        rows_in_memory: float | None = None,
        summaries_in_memory: float = 0.0,
    ) -> None:
        self.index_dir, self.expect_checkpoint = index_dir, expect_checkpoint
        self.concepts = concepts
        self.rows_in_memory = rows_in_memory  # Build.warm's share (None: its default)
        self.summaries_in_memory = summaries_in_memory  # and its share for summaries, when cold
        self._build: Build | None = None
        self._build_name: str | None = None  # "<build>/<version>" loaded (or that failed)
        self._error: BuildError | None = None  # why the published build cannot be used
        self._loading = False  # a newer version is being read in the background
        self._lock = threading.Lock()
        self.warming = False  # the rerank rows are being read into memory

    @property
    def loaded(self) -> Build | None:
        """The build in memory now, without looking for a newer one."""
        return self._build

    def current(self, wait: bool = False) -> Build | None:
        """The published build (None before the first publish). The first one is loaded on
        the spot; a newer version is loaded in the background while searches go on with the
        one in memory, so a new version serves within about its load time. ``wait`` loads a
        newer version on the spot instead. Raises BuildError when it cannot serve."""
        try:
            name = (self.index_dir / "CURRENT").read_text().strip()
        except FileNotFoundError:
            return None
        with self._lock:
            if name == self._build_name:
                if self._error is not None:
                    raise self._error
                return self._build
            if self._build is None or wait:
                self._install(*self._read())
                if self._error is not None:
                    raise self._error
                return self._build
            if not self._loading:
                self._loading = True
                threading.Thread(
                    target=self._load_in_background, name="hanet-load", daemon=True
                ).start()
            return self._build

    def watch(self, stop: threading.Event) -> threading.Thread:
        """Notice new versions (every WATCH_INTERVAL_S) and start loading them, so that they
        serve without waiting for a request to notice them first; until ``stop``."""

        def loop() -> None:
            while not stop.wait(WATCH_INTERVAL_S):
                with contextlib.suppress(BuildError, OSError):
                    self.current()

        thread = threading.Thread(target=loop, name="hanet-index-watcher", daemon=True)
        thread.start()
        return thread

    def _read(self) -> tuple[Build | None, BuildError | None, str]:
        """The published build, or why it cannot serve this model; and its name. A version
        that only adds tombstones to the build in memory (a delete's: the same FAISS files
        and rerank parts) shares its loaded indexes and rows: only the tombstones are read."""
        loaded = self._build
        try:
            build = load_current(
                self.index_dir, expect_checkpoint=self.expect_checkpoint, reuse=loaded
            )
        except BuildError as exc:
            return None, exc, (self.index_dir / "CURRENT").read_text().strip()
        if loaded is not None and build.shares_rows(loaded):
            build.warm(rows=False)  # the rows are warm: the new tombstones' selector only
        if self.concepts:  # its concept lists, here rather than in its first search
            concepts.prepare(build)
        return build, None, build.name

    def _install(self, build: Build | None, error: BuildError | None, name: str) -> None:
        """Make a read build the one searches use (the caller holds the lock)."""
        previous = self._build
        self._build, self._error, self._build_name = build, error, name
        if error is not None:
            log.error("cannot use the published index build: %s", error)
        if build is not None and (previous is None or not build.shares_rows(previous)):
            self._warm(build)

    def _load_in_background(self) -> None:
        try:
            result = self._read()
        except (OSError, VectorStoreError) as exc:  # a version dropped while read: retry later
            log.warning("reading the new index build failed, will retry: %s", exc)
            result = None
        with self._lock:
            self._loading = False
            if result is not None:
                self._install(*result)

    def _warm(self, build: Build) -> None:
        """Read the new build's rerank rows into memory in the background."""

        def work() -> None:
            try:
                read = build.warm(share=self.rows_in_memory, summaries=self.summaries_in_memory)
                log.info("touched %.1f MB of rerank rows", read / 1e6)
            except OSError as exc:  # a version dropped meanwhile: the next build warms again
                log.warning("could not warm the rerank rows: %s", exc)
            finally:
                self.warming = False

        self.warming = True
        threading.Thread(target=work, name="hanet-warm", daemon=True).start()
