"""What the routes share, built once at start-up from the composition root (service.runtime):
the settings, the database engine and its read-only variant, the search thread's lookup of the
hits' rows, the search engine, the one thread that searches run on, and the queue that batches
the searches waiting for it."""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Engine

from db.connect import READ_ONLY, HitRows
from index.reader import BuildError
from service import runtime
from service.batching import Batcher
from service.search import Searcher
from service.settings import HanetSettings


@dataclass(frozen=True)
class ServiceState:
    """The app's long-lived parts (``app.state.hanet``)."""

    settings: HanetSettings
    engine: Engine  # for the routes that write (ingest, delete)
    reader: Engine  # for the routes that only read: never waits behind the indexer's writes
    hit_rows: HitRows  # the search thread's own connection
    searcher: Searcher  # the serving model and the live index
    torch_thread: ThreadPoolExecutor  # the one thread searches run on (see open_state)
    searches: Batcher  # searches that arrive while one runs go together next (on torch_thread)

    def close(self) -> None:
        """Stop the search thread and close the connections (the hits' reader's on the thread
        that uses it)."""
        self.torch_thread.submit(self.hit_rows.close).result()
        self.torch_thread.shutdown(wait=True)
        self.engine.dispose()


async def open_state(settings: HanetSettings) -> ServiceState:
    """Start the search thread and build the state on it. Searches run on that one thread, the
    one that loads the model: torch's OpenMP threads spin briefly between operations only
    while the process's OpenMP threads fit its cores, and every thread that runs torch work
    adds its own; searches on the thread pool's threads measured a third slower. Raises
    ``runtime.SchemaError`` on an out-of-date schema without ``settings.auto_migrate``."""
    torch_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hanet-search")
    try:
        return await asyncio.wrap_future(torch_thread.submit(_assemble, settings, torch_thread))
    except BaseException:
        torch_thread.shutdown(wait=False)
        raise


def _assemble(settings: HanetSettings, torch_thread: ThreadPoolExecutor) -> ServiceState:
    """On the search thread: its thread count, the database, the model, the search engine, and
    the published index read (and warmed) now rather than at the first search."""
    runtime.use_threads(settings.threads)
    engine = runtime.open_database(settings)
    try:
        model = runtime.load_model(settings, serving=True)
        searcher = runtime.build_searcher(settings, model)
    except BaseException:
        engine.dispose()
        raise
    with contextlib.suppress(BuildError):  # logged by the index; /ready and /search report it
        searcher.index.current()
    return ServiceState(
        settings=settings,
        engine=engine,
        reader=engine.execution_options(**READ_ONLY),
        hit_rows=HitRows(engine),
        searcher=searcher,
        torch_thread=torch_thread,
        searches=Batcher(torch_thread, settings.search_batch_max, settings.search_wait_s),
    )
