"""``hanet demo`` for now: the indexer and the HTTP service are later issues, so this runs the
real parts that exist end to end, in one process, and says so.

It generates (or reuses) a small procedural corpus of H.264 videos, decodes them with the
indexer's PyAV decoder, encodes them with the bundled demo model's video branch, then answers a
few sentence queries with the model's multi-level scores: the best videos, every level's score,
the matched moment in seconds and the concepts the model sees."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DEMO_MODEL = Path(__file__).resolve().parents[1] / "model" / "weights" / "hanet-tiny-demo.pt"
QUERIES = [
    "a red circle moves left",
    "a big blue star grows, then a green square spins",
    "a yellow heart blinks",
]


def run_demo(data_dir: Path = Path("hanet-data"), videos: int = 120, top: int = 3) -> None:
    from indexer.datasets import decode_split, load_generic
    from indexer.synth import generate_corpus
    from model import create_model, load_checkpoint
    from model.evaluate import encode_texts, encode_videos

    if DEMO_MODEL.exists():
        model = load_checkpoint(DEMO_MODEL)
        print(f"model: {DEMO_MODEL.name} (sha256 {model.checkpoint_sha256[:12]})")
    else:
        model = create_model("tiny")
        print("model: tiny architecture with RANDOM weights (no demo model bundled): the "
              "rankings below mean nothing")  # fmt: skip
    corpus = data_dir / f"demo-corpus-{videos}"
    manifest = generate_corpus(corpus, videos, seed=7, progress=False)
    items = list(load_generic(manifest).videos)
    decoded = decode_split(items, model.cfg.max_frames, model.preprocess.image_size,
                           progress=False)  # fmt: skip
    print(f"corpus: {len(decoded.ids)} H.264 videos in {corpus} (decoded with PyAV)\n")
    frames, mask = torch.from_numpy(decoded.frames), torch.from_numpy(decoded.mask)
    with torch.inference_mode():
        video = encode_videos(model, frames, mask)
        text = encode_texts(model, QUERIES)
        scores = model.similarity(text, video)
        moments = model.best_action_segment(text, video)
    concepts = model.top_concepts(video, k=2) if model.vocab is not None else None
    by_id = {v.id: v for v in items}
    for q, query in enumerate(QUERIES):
        print(f'query: "{query}"')
        for rank, v in enumerate(scores["fused"][q].topk(top).indices.tolist(), start=1):
            item = by_id[decoded.ids[v]]
            start, end = video.action_spans[v, int(moments[q, v])].tolist()
            start_s, end_s = decoded.times[v, start], decoded.times[v, end]
            levels = " ".join(f"{k}={float(scores[k][q, v]):.2f}"
                              for k in ("global", "local_action", "individual_entity"))  # fmt: skip
            print(f"  {rank}. {item.id} fused={float(scores['fused'][q, v]):.3f} ({levels})")
            print(f"     caption: {item.captions[0].text}")
            print(f"     moment: {start_s:.2f}-{end_s:.2f} s (sampled frames {start}-{end})")
            if concepts is not None:
                found = concepts[v]["actions"] + concepts[v]["entities"]
                seen = ", ".join(f"{c.name} {c.probability:.2f}" for c in found)
                print(f"     concepts: {seen}")
        print()
    print("This is in-process search with the model; the indexer (FAISS) and the HTTP service "
          "(POST /videos, POST /search) are still to come.")  # fmt: skip
