"""``hanet eval-moments``: moment retrieval on a long-video corpus through the served path.

The whole corpus (``hanet synth --long``) is indexed by the real indexer into a database and an
index of its own (segments as the service cuts them), and every event caption of a split is
searched over all of it
with the search engine the API serves (candidates from the level indexes, HANet's rerank,
moments refined inside segments). Nothing is scored apart from that path. Reported (metrics in
``corpus.moments``): corpus moment retrieval as in TVR (R@1/5/10 at IoU >= 0.5 and 0.7 over the
whole corpus), video retrieval (R@1/5/10 and median rank of the true video), and localisation
given the true video (mIoU and R@1 at IoU >= 0.5 / 0.7, the video's own units reranked).

Modes, for the side-by-side comparison on the same corpus:
    hanet     segments at shots (``SegmentCfg``), HANet's fused score      (what is served)
    global    the same segments, ranked by the global (event) level only
    windows   fixed windows without shot detection, HANet's fused score
    whole     each video one unit (as before segments), HANet's fused score
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from index.reader import Build, load_current
from index.writer import compact
from indexer.segments import SegmentCfg
from model import HANet
from service.search import Query, encode_queries, rerank_hits, search_many

log = logging.getLogger(__name__)

NO_CUTS = 1e9  # a detector threshold no frame difference reaches: windows only
WHOLE = 1e9  # a maximum segment length no video reaches: one unit per video
MODES = ("hanet", "global", "windows", "whole")
BATCH = 32  # captions searched together


@dataclass(frozen=True)
class Truth:
    """One query: a caption and where it happens (the manifest's video id and span)."""

    text: str
    video: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Found:
    """What the served path answered for one query, by manifest video ids."""

    moments: list[tuple[str, float, float]]  # ranked over the corpus (group_by "moment")
    videos: list[str]  # ranked videos (group_by "video")
    localised: tuple[float, float] | None  # the best moment inside the true video


def segments_for(mode: str, base: SegmentCfg) -> SegmentCfg:
    """The segmentation a mode indexes with."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if mode == "windows":
        return dataclasses.replace(base, threshold=NO_CUTS)
    if mode == "whole":
        return dataclasses.replace(base, max_s=WHOLE, window_s=WHOLE / 2)
    return base


def index_corpus(
    manifest_path: Path, model: HANet, work_dir: Path, segments: SegmentCfg
) -> tuple[Build, dict[int, str]]:
    """Index every video of the corpus into ``work_dir`` (its own SQLite database and index; a
    second run reuses them) and return the build and database id -> manifest id."""
    import migrations
    from db import queue
    from db.connect import make_engine
    from indexer.job import IndexingCfg, run_indexing
    from model import file_sha256

    manifest = json.loads(manifest_path.read_text())
    work_dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{(work_dir / 'eval.sqlite3').resolve()}"
    migrations.upgrade(url)
    engine = make_engine(url)
    try:
        ids = {}
        for video in manifest["videos"]:
            path = (manifest_path.parent / video["path"]).resolve()
            sha = file_sha256(path)
            video_id, _ = queue.enqueue(engine, media_path=str(path), sha256=sha, title=video["id"])
            ids[video_id] = video["id"]
        cfg = IndexingCfg(segments=segments)
        summary = run_indexing(engine, model, work_dir / "index", cfg)
        if summary.failed:
            log.warning("%d videos failed to index: %s", len(summary.failed), summary.failed)
    finally:
        engine.dispose()
    build = load_current(work_dir / "index", expect_checkpoint=model.checkpoint_sha256)
    if len(build.parts) > 1:  # published in many parts: searched as a compacted service is
        compact(work_dir / "index")
        build = load_current(work_dir / "index", expect_checkpoint=model.checkpoint_sha256)
    return build, ids


def truths(manifest_path: Path, split: str, per_event: int | None = None) -> list[Truth]:
    """The event captions of the split (the first ``per_event`` of each event, or all), with
    their true spans."""
    from corpus.long import iter_moments

    manifest = json.loads(manifest_path.read_text())
    taken: dict[tuple[str, float], int] = {}
    found = []
    for video, start, end, caption in iter_moments(manifest, split):
        n = taken[video, start] = taken.get((video, start), 0) + 1
        if per_event is None or n <= per_event:
            found.append(Truth(caption["text"], video, float(start), float(end)))
    return found


def search_all(
    model: HANet, build: Build, queries: list[Truth], ids: dict[int, str], rank_by: str, k: int
) -> list[Found]:
    """Each query through the served search (batches of ``BATCH``, candidates as served)."""
    from tqdm import tqdm

    units_of = {name: build.units(video_id) for video_id, name in ids.items()}
    found = []
    for at in tqdm(range(0, len(queries), BATCH), desc="search", unit="batch"):
        part = queries[at : at + BATCH]
        asked = [Query(q.text, k, "moment", 1, rank_by) for q in part]
        asked += [Query(q.text, k, "video", 1, rank_by) for q in part]
        hits = search_many(model, build, asked)
        texts = encode_queries(model, [q.text for q in part])
        for i, q in enumerate(part):
            moments = [(ids[h.video_id], h.start_s, h.end_s) for h in hits[i] if h.video_id in ids]
            videos = [ids[h.video_id] for h in hits[len(part) + i] if h.video_id in ids]
            inside = rerank_hits(
                model, build, texts[i], units_of[q.video], Query(q.text, 1, "moment", 1, rank_by)
            )
            localised = (inside[0].start_s, inside[0].end_s) if inside else None
            found.append(Found(moments, videos, localised))
    return found


def evaluate_moments(
    model: HANet,
    manifest_path: Path,
    work_dir: Path,
    *,
    split: str = "test",
    mode: str = "hanet",
    segments: SegmentCfg | None = None,
    k: int = 10,
    per_event: int | None = None,
) -> dict:
    """Index the corpus as ``mode`` says (under ``work_dir``, one folder per segmentation:
    modes that cut alike share it), search the captions of ``split``, and report."""
    from corpus.moments import moment_report, video_recall

    cfg = segments_for(mode, segments or SegmentCfg())
    start = time.monotonic()
    folder = "-".join(f"{v:g}" for v in (cfg.min_s, cfg.max_s, cfg.window_s, cfg.overlap_s))
    folder += "-nocuts" if cfg.threshold >= NO_CUTS else ""
    folder += "" if cfg.skip_nonref else "-allframes"
    folder += f"-partner{cfg.partner_s:g}" if cfg.partner_s else ""
    build, ids = index_corpus(manifest_path, model, work_dir / folder, cfg)
    indexed_s = time.monotonic() - start
    queries = truths(manifest_path, split, per_event)
    rank_by = "global" if mode == "global" else "fused"
    start = time.monotonic()
    found = search_all(model, build, queries, ids, rank_by, k)
    truth = [(q.video, q.start_s, q.end_s) for q in queries]
    report = moment_report(
        truth,
        [f.moments for f in found],
        [f.localised or (0.0, 0.0) for f in found],  # none: the video had no unit
    )
    # the video ranking from the served video search (the moment list holds few videos)
    report["video"] = video_recall(truth, [[(v, 0.0, 0.0) for v in f.videos] for f in found])
    report.update(
        mode=mode,
        split=split,
        corpus_videos=len(ids),
        units=len(build.rows),
        queries=len(queries),
        segments=dataclasses.asdict(cfg),
        checkpoint_sha256=model.checkpoint_sha256,
        index_s=round(indexed_s, 1),
        search_ms_per_query=round((time.monotonic() - start) * 1000 / max(1, len(queries)), 2),
    )
    return report
