"""Rerank row formats compared: ranking fidelity against float32 scoring of the same units,
and bytes per unit (the rerank's time per format: search_latency.py's stage times, "gather"
and "score", on a built index).

Units: ViT-B-32-shaped, made from the demo model's embeddings of a procedural corpus
(demo_corpus.py). Per caption, its 200 best units by the exhaustive float32 fused score are
the candidates (what a perfect candidate stage would hand the rerank); each format stores
them, and the rerank's top 10 from the stored rows is compared with the float32 top 10.

    float16        the format before (index.rows)
    int8           int8 codes, one float32 scale per vector; probabilities uint8 (index.rows)
    int4           4-bit codes, one scale per vector (simulated here, not a stored format)
    int8, 6 frames int8, with each pair of frames averaged (fewer stored vectors per unit)

    .venv/bin/python benchmarks/rerank_formats.py --corpora C [C ...] --cache EMB.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from candidate_recall import exhaustive_top  # noqa: E402
from demo_corpus import DEMO, VIDEO_KEYS, Lift, as_video, encode_corpora  # noqa: E402

from index import rows as formats  # noqa: E402
from model import VideoEmbeddings  # noqa: E402
from model import scores as scoring  # noqa: E402


def _int4(name: str, x: np.ndarray) -> np.ndarray:
    if name not in formats.VECTOR_FIELDS:
        return formats.decode(name, formats.encode(name, x, "int8")[name], None).numpy()
    scale = np.abs(x).max(-1, keepdims=True) / 7
    return (np.clip(np.rint(x / np.where(scale > 0, scale, 1)), -7, 7) * scale).astype(np.float16)


def _pooled(made: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(made)
    for f in ("action_frames", "entity_frames"):
        x = made[f].reshape(len(made[f]), -1, 2, made[f].shape[-1]).mean(2)
        out[f] = x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-8)
    out["frame_mask"] = made["frame_mask"].reshape(len(made["frame_mask"]), -1, 2).any(-1)
    out["action_spans"] = made["action_spans"] // 2
    return out


def stored(fmt: str, made: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows as a rerank would get them from format ``fmt`` (float16 vectors)."""
    if fmt == "int4":
        return {k: _int4(k, v) for k, v in made.items()}
    if fmt == "int8, 6 frames":
        return stored("int8", _pooled(made))
    out = {}
    for k, v in made.items():
        coded = formats.encode(k, v, fmt)
        out[k] = formats.decode(k, coded[k], coded.get(k + formats.SCALE)).numpy()
    return out


def unit_bytes(fmt: str, made: dict[str, np.ndarray]) -> int:
    """Bytes per unit: rows, Gram matrices (float32), frame times, spans, unit id."""
    one = _pooled(made) if fmt == "int8, 6 frames" else made
    dims = {k: v.shape[1:] for k, v in one.items()}
    rows = formats.bytes_per_unit("int8" if fmt == "int8, 6 frames" else fmt, dims)
    if fmt == "int4":
        rows = formats.bytes_per_unit("int8", dims) - sum(
            int(np.prod(dims[k])) // 2 for k in formats.VECTOR_FIELDS
        )
    grams = sum(
        dims[k][0] ** 2 * 4
        for k in ("action_frames", "entity_frames", "action_segments", "entity_segments")
    )
    t = dims["frame_mask"][0]
    return rows + grams + t + t * 4 + int(np.prod(dims["action_spans"])) * 8 + 8 + 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, nargs="+", required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--units", type=int, default=7200)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)  # no timings here; a shared machine: no waiting thread pool
    from model import load_checkpoint

    cfg = load_checkpoint(DEMO).cfg
    fusion, scale = cfg.fusion, cfg.attention_scale
    lift = Lift(encode_corpora(args.corpora, args.cache))
    made = lift.units(0, args.units)
    units = np.arange(args.units)
    picked = np.random.default_rng(0).choice(len(lift.corpus.captions), args.queries, False)
    text = lift.texts(sorted(picked.tolist()))
    top = exhaustive_top(
        lambda: iter([(units, as_video(made))]), text, fusion, scale, args.candidates
    )
    print(
        f"{args.units} ViT-B-32-shaped units (demo model, lifted), {len(text)} captions, "
        f"each reranking its {args.candidates} best units; against float32:"
    )
    print(
        f"  {'format':15s} {'top-10 overlap':>14s} {'top-1 same':>10s} {'max |d fused|':>13s}"
        f" {'bytes/unit':>10s}"
    )
    for fmt in ("float32", "float16", "int8", "int4", "int8, 6 frames"):
        overlap, same, delta = [], [], []
        for i in range(len(text)):
            cand = {k: v[top[i]] for k, v in made.items()}
            t = text.select([i])
            exact = scoring.similarity(t, as_video(cand), fusion, scale)["fused"][0]
            rows = cand if fmt == "float32" else stored(fmt, cand)
            video = VideoEmbeddings(**{k: torch.from_numpy(rows[k]) for k in VIDEO_KEYS})
            grams = scoring.unit_grams(video)
            got = scoring.similarity(t, video, fusion, scale, grams=grams)["fused"][0]
            a, b = set(exact.argsort(descending=True)[:10].tolist()), got.argsort(descending=True)
            overlap.append(len(a & set(b[:10].tolist())) / 10)
            same.append(int(exact.argmax()) == int(b[0]))
            delta.append(float((exact - got).abs().max()))
        size = unit_bytes(fmt if fmt != "float32" else "float16", made)
        if fmt == "float32":
            size += sum(int(np.prod(made[k].shape[1:])) * 2 for k in formats.VECTOR_FIELDS)
        print(
            f"  {fmt:15s} {np.mean(overlap):14.4f} {np.mean(same):10.3f} {max(delta):13.5f}"
            f" {size:10d}"
        )


if __name__ == "__main__":
    main()
