"""``hanet demo``: every real part of the product, end to end, in one process (the HTTP API is
``hanet serve``; serving the demo corpus from ``make demo`` is the deployment issue's).

It generates (or reuses) a small procedural corpus of H.264 videos, queues them in a SQLite
database, indexes them with the real indexer (PyAV decoding, the bundled demo model's video
branch, FAISS per level, the rerank store), then searches with sentences: candidates from the
three level indexes, reranked by HANet's fused score, with the moment and the concepts."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

DEMO_MODEL = Path(__file__).resolve().parents[1] / "model" / "weights" / "hanet-tiny-demo.pt"


def run_demo(data_dir: Path = Path("hanet-data") / "demo", videos: int = 120, top: int = 3) -> None:
    import migrations
    from indexer import queue
    from indexer.build import load_current
    from indexer.datasets import load_generic
    from indexer.pipeline import run_queue
    from indexer.store import make_engine
    from indexer.synth import generate_corpus
    from model import file_sha256, load_checkpoint
    from service.engine import search

    model = load_checkpoint(DEMO_MODEL)
    print(f"model: {DEMO_MODEL.name} (tiny HANet trained on the synthetic corpus, "
          f"sha256 {model.checkpoint_sha256[:12]})")  # fmt: skip
    manifest = generate_corpus(data_dir / "corpus", videos, seed=7, progress=False)
    items = list(load_generic(manifest).videos)
    url = f"sqlite:///{(data_dir / 'hanet.sqlite3').resolve()}"
    migrations.upgrade(url)
    engine = make_engine(url)
    ids = {item.id: queue.enqueue(engine, media_path=str(item.path), sha256=file_sha256(item.path),
                                  title=item.id)[0] for item in items}  # fmt: skip
    summary = run_queue(engine, model, data_dir / "index", batch_size=16, workers=2)
    print(f"indexed {summary.indexed} new videos in {summary.seconds:.1f} s "
          f"({queue.counts(engine)['indexed']} in the index)\n")  # fmt: skip
    build = load_current(data_dir / "index", expect_checkpoint=model.checkpoint_sha256)
    video_ids = list(build.rows)
    concepts = model.top_concepts(build.embeddings(video_ids), k=2)
    seen = dict(zip(video_ids, concepts, strict=True))
    by_id = {ids[item.id]: item for item in items}
    # Queries: captions written for three of the videos, in a wording not shown for them.
    for item in (items[0], items[5], items[11]):
        query = item.captions[1].text
        hits = search(model, build, query, top_k=100)
        rank = next((r for r, h in enumerate(hits, 1) if h.video_id == ids[item.id]), None)
        print(f'query: "{query}"  (written for {item.id}; it ranks {rank or "> 100"})')
        for r, hit in enumerate(hits[:top], start=1):
            levels = " ".join(f"{k}={hit.scores[k]:.2f}"
                              for k in ("global", "local_action", "individual_entity"))  # fmt: skip
            found = seen[hit.video_id]["actions"] + seen[hit.video_id]["entities"]
            print(f"  {r}. {by_id[hit.video_id].id} fused={hit.score:.3f} ({levels})")
            print(f"     its caption: {by_id[hit.video_id].captions[0].text}")
            print(f"     moment: {hit.start_s:.2f}-{hit.end_s:.2f} s; concepts: "
                  + ", ".join(f"{c.name} {c.probability:.2f}" for c in found))  # fmt: skip
        print()
    print(f"Everything above ran in this process: database {url}, index {data_dir / 'index'}.")
    print("To search over HTTP instead: .venv/bin/hanet serve (see the README's curl walkthrough).")
