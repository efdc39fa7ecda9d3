"""The composition root: every entry point (the CLI, the app, the in-process indexer worker, the
demo, the benchmarks) gets its settings, database, model and search engine from here, so that
none of them opens, migrates or loads anything its own way."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from service.settings import HanetSettings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from index.milvus import MilvusTarget
    from model import HANet
    from service.search import Searcher

log = logging.getLogger(__name__)


class SchemaError(Exception):
    """The database's schema is not the one this code needs (and migrating was not asked for)."""


def load_settings(environ: Mapping[str, str] | None = None) -> HanetSettings:
    """The settings from the environment; an unknown ``HANET_*`` name (a typo such as
    ``HANET_TRHEADS``, which pydantic-settings would skip silently) is logged as a warning."""
    unknown = unknown_variables(os.environ if environ is None else environ)
    if unknown:
        known = ", ".join(f"HANET_{n.upper()}" for n in HanetSettings.model_fields)
        log.warning("ignoring unknown settings %s (known: %s)", ", ".join(unknown), known)
    return HanetSettings()


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """The ``HANET_*`` variables in ``environ`` that name no setting, sorted."""
    known = {f"HANET_{name.upper()}" for name in HanetSettings.model_fields}
    return sorted(k for k in environ if k.upper().startswith("HANET_") and k.upper() not in known)


def open_database(settings: HanetSettings, *, migrate: bool | None = None) -> Engine:
    """An engine for the configured database, its schema migrated to the newest revision
    (``migrate``, default ``settings.auto_migrate``) or checked to be there."""
    import migrations
    from db.connect import make_engine

    url = settings.resolved_database_url
    engine = make_engine(url)  # creates the SQLite folder when needed
    if settings.auto_migrate if migrate is None else migrate:
        migrations.upgrade(url)
        return engine
    current, head = migrations.current_revision(engine), migrations.head_revision()
    if current != head:
        engine.dispose()
        raise SchemaError(
            f"the database schema is at revision {current or 'none'}, this code needs {head}: "
            "run `hanet db upgrade` (or set HANET_AUTO_MIGRATE=true)"
        )
    return engine


def indexing_device(settings: HanetSettings) -> str:
    """Where the video branch runs: ``settings.device``, else CUDA when there is one."""
    if settings.device is not None:
        return settings.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(settings: HanetSettings, *, device: str = "cpu", serving: bool = False) -> HANet:
    """The configured checkpoint on ``device``; ``serving`` prepares its text branch for single
    queries (traced, int8 with ``settings.int8_text``). Raises ``model.CheckpointError``."""
    from model import load_checkpoint

    model = load_checkpoint(settings.checkpoint, map_location=device)
    if serving:
        from model.speed import for_serving

        model = for_serving(model, settings.int8_text)
    return model


def index_target(settings: HanetSettings) -> Path | MilvusTarget:
    """Where the index lives: the index folder (FAISS files, ``vector_store`` "faiss"), or
    Milvus, which this process then also uses for every entry point that names the index
    folder (the indexer job, deletes: ``index.milvus.use_milvus``)."""
    from index.milvus import MilvusTarget, use_milvus

    if settings.vector_store != "milvus":
        use_milvus(settings.index_dir, None)
        return settings.index_dir
    token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
    target = MilvusTarget(settings.resolved_milvus_uri, token, settings.milvus_collection)
    use_milvus(settings.index_dir, target)
    return target


def build_searcher(settings: HanetSettings, model: HANet) -> Searcher:
    """The search engine over the published index, for ``model`` (a serving model): FAISS
    builds in the index folder, or the build published in Milvus."""
    from index.live import LiveIndex
    from index.milvus_index import MilvusLive
    from service.candidates import Depth
    from service.search import QueryCache, Searcher

    target = index_target(settings)
    if isinstance(target, Path):
        index = LiveIndex(
            target,
            model.checkpoint_sha256,
            settings.search_concepts,
            settings.rows_in_memory,
            settings.summaries_in_memory,
        )
    else:
        index = MilvusLive(target, expect_checkpoint=model.checkpoint_sha256)  # same interface
    cache = QueryCache(model, settings.query_cache_size)
    depth = Depth(settings.search_list_depth, settings.search_exact)
    return Searcher(
        model, index, cache, settings.search_candidates, settings.search_concepts, depth
    )


def use_threads(count: int | None) -> None:
    """Torch's and FAISS's thread count for the calling thread's work (``None``: leave the
    defaults, one per core). On a small machine that indexes and searches at once, 1 measured
    faster for searches at the same indexing rate (docs/benchmarks.md)."""
    if count is None:
        return
    import faiss
    import torch

    torch.set_num_threads(count)
    faiss.omp_set_num_threads(count)
