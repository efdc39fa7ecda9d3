"""A rebuild's build in Milvus: the index side of ``indexer.rebuild`` in Milvus mode.

The new build is a set of collections of its own, named by the meta record "rebuild" (deletes
reach it as they reach the published one); the swap is one upsert of "current"
(``index.milvus_index.promote``). There is no write lock to hold across the swap, so the
published build is remembered as "retired" first: a worker of the old build whose write fell
just before the swap passed its pointer check before it, so its write is in the retired build,
and the rebuild's catch-up after the swap (``retired_contents``) finds it. The retired build's
collections are dropped once the rebuild's bookkeeping is done.
"""

from __future__ import annotations

import logging

from index.milvus import Meta, MilvusTarget, _query_all
from index.milvus_index import (
    CURRENT,
    REBUILD,
    MilvusWriter,
    contents,
    open_build,
    promote,
    start_build,
)
from model import HANetCfg

log = logging.getLogger(__name__)
RETIRED = "retired"


def published_build(target: MilvusTarget) -> str | None:
    current = Meta(target).get(CURRENT)
    return None if current is None else current["build"]


def open_rebuild(
    target: MilvusTarget, cfg: HANetCfg, checkpoint_sha256: str, factory: str, resume: str | None
) -> MilvusWriter:
    """The rebuild's build: the one named ``resume`` when it is still recorded, else a new
    one (a leftover build of an earlier rebuild dropped first)."""
    meta = Meta(target)
    staged = meta.get(REBUILD)
    if staged is not None and resume is not None and staged["build"] == resume:
        return MilvusWriter(target, open_build(target, staged), pointer=REBUILD)
    if staged is not None:
        drop_rebuild(target)
    return start_build(target, cfg, checkpoint_sha256, factory)


def staged_contents(target: MilvusTarget) -> tuple[set[int], set[int]]:
    """The rebuild's build's live videos and the tombstones."""
    return contents(target, REBUILD)


def remove_from_rebuild(target: MilvusTarget, video_ids: list[int]) -> None:
    """Remove videos from the rebuild's build (rows deleted without a tombstone yet)."""
    manifest = Meta(target).get(REBUILD)
    if manifest is not None and video_ids:
        store = open_build(target, manifest).vectors
        store.remove(sorted(video_ids))
        store.flush()


def swap(target: MilvusTarget) -> str:
    """Publish the rebuild's build, the published one remembered as "retired" first (one
    upsert each); returns the new build's name."""
    meta = Meta(target)
    current = meta.get(CURRENT)
    if current is not None and meta.get(RETIRED) is None:
        meta.put(RETIRED, current)
    return promote(target, drop_old=False)


def retired_contents(target: MilvusTarget) -> set[int]:
    """The live videos of the build the swap replaced (empty when none)."""
    meta = Meta(target)
    manifest = meta.get(RETIRED)
    if manifest is None:
        return set()
    store = open_build(target, manifest).vectors
    rows = _query_all(store.client, store.collection("rows"), "chunk == 0", ["video"])
    return {int(r["video"]) for r in rows} - meta.all_tombstones()


def drop_retired(target: MilvusTarget) -> None:
    """Drop the replaced build's collections (readers on it switch at their next look at
    "current"; a worker of the old checkpoint is refused by its pointer check)."""
    meta = Meta(target)
    manifest = meta.get(RETIRED)
    if manifest is None:
        return
    if manifest["build"] != published_build(target):
        open_build(target, manifest).vectors.drop()
        log.info("dropped the replaced build %s", manifest["build"])
    meta.drop(RETIRED)


def drop_rebuild(target: MilvusTarget) -> str | None:
    """Drop a rebuild's build under way (cancelled) unless it is the published one; returns
    its name, None when there was none."""
    meta = Meta(target)
    manifest = meta.get(REBUILD)
    if manifest is None:
        return None
    if manifest["build"] != published_build(target):
        open_build(target, manifest).vectors.drop()
    meta.drop(REBUILD)
    return manifest["build"]
