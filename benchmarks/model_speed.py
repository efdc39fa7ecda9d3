"""Model speed on this machine: video branch frames/s and text branch ms per query, against the
bare open_clip towers, for each architecture; and whether int8 text keeps rankings.

    .venv/bin/python benchmarks/model_speed.py [--arch tiny ViT-B-32] [--threads 2]

Prints medians. Random weights: speed does not depend on their values."""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import open_clip
import torch

from model import create_model
from model.speed import quantize_text_tower, trace_text_tower

QUERIES = [
    "a man is playing guitar on the stage",
    "a small red star moves left, then a blue circle grows",
    "two people play football in a park",
    "a woman cuts an onion with a knife and cooks it",
    "a dog runs across the beach",
    "the big green square slides to the right",
    "a child rides a bicycle down the street",
    "someone is typing on a laptop keyboard",
    "a car drives through the city at night",
    "a chef prepares a salad in a kitchen",
    "people dancing in a club",
    "a cat jumps onto the table",
    "a girl sings into a microphone",
    "waves crash on the rocks",
    "a man explains how to fix a bike",
    "a large yellow triangle rotates clockwise",
    "a band plays music at a concert",
    "a plane takes off from the runway",
    "two men box in a ring",
    "a baby laughs at a puppy",
]


def _median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_video(arch: str, repeats: int) -> None:
    model = create_model(arch)
    size, frames = model.preprocess.image_size, 8
    pixels = torch.randn(32 // frames, frames, 3, size, size)
    mask = torch.ones(32 // frames, frames, dtype=torch.bool)
    flat = pixels.flatten(0, 1)
    with torch.inference_mode():  # alternate the two, so drifts of the machine hit both alike
        pairs = [
            (
                _median_ms(lambda: model.clip.encode_image(flat), 1, warmup=1),
                _median_ms(lambda: model.encode_video(pixels, mask), 1, warmup=1),
            )
            for _ in range(repeats)
        ]
    bare = statistics.median(p[0] for p in pairs)
    full = statistics.median(p[1] for p in pairs)
    print(f"[{arch}] video, 32 frames per batch ({32 // frames} videos x {frames} frames)")
    print(f"  bare image tower : {32000 / bare:8.1f} frames/s  ({bare:.1f} ms/batch)")
    print(
        f"  HANet video branch: {32000 / full:8.1f} frames/s  ({full:.1f} ms/batch), "
        f"{100 * (full / bare - 1):+.1f}% time vs bare"
    )


def _per_query_ms(fn, repeats: int) -> float:
    return statistics.median(_median_ms(lambda q=q: fn(q), repeats, warmup=2) for q in QUERIES)


def bench_text(arch: str, repeats: int) -> None:
    model = create_model(arch)
    context = model.cfg.clip["text_cfg"]["context_length"]
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context)
    quantized = quantize_text_tower(copy.deepcopy(model))
    with torch.inference_mode():
        padded = _per_query_ms(lambda q: model.clip.encode_text(tokenizer([q])), repeats)
        parse = _per_query_ms(lambda q: model.parse([q]), repeats)
        full = _per_query_ms(lambda q: model.encode_text([q]), repeats)
        fast = _per_query_ms(lambda q: quantized.encode_text([q]), repeats)
        overlap = ranking_overlap(model, quantized)
    traced = trace_text_tower(copy.deepcopy(model))
    traced_int8 = trace_text_tower(copy.deepcopy(quantized))  # what the service runs
    with torch.inference_mode():
        full_traced = _per_query_ms(lambda q: traced.encode_text([q]), repeats)
        fast_traced = _per_query_ms(lambda q: traced_int8.encode_text([q]), repeats)
    print(f"[{arch}] text, one query at a time (median over {len(QUERIES)} queries)")
    print(f"  bare text tower, padded to {context}: {padded:6.1f} ms")
    print(f"  decomposition + tokenisation  : {parse:6.2f} ms")
    print(f"  HANet text branch, float32    : {full:6.1f} ms (trimmed to the query's tokens)")
    print(f"  HANet text branch, int8 text  : {fast:6.1f} ms")
    print(
        f"  the same, tower traced        : {full_traced:6.1f} ms float32, "
        f"{fast_traced:6.1f} ms int8"
    )
    print(f"  int8 vs float32 top-10 overlap: {overlap:.3f} (fused score, {len(QUERIES)} queries)")


def ranking_overlap(reference, candidate, gallery_size: int = 2000, k: int = 10) -> float:
    """Mean top-k overlap of the fused-score ranking over a gallery of synthetic videos whose
    embeddings come from the reference model's own heads on random frame features."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(gallery_size, 8, reference.cfg.clip_embed_dim, generator=g)
    features = torch.nn.functional.normalize(features, dim=-1)
    mask = torch.ones(gallery_size, 8, dtype=torch.bool)
    video = reference.encode_video_features(features, mask)
    ref = reference.similarity(reference.encode_text(QUERIES), video)["fused"]
    got = candidate.similarity(candidate.encode_text(QUERIES), video)["fused"]
    a, b = ref.topk(k, dim=1).indices, got.topk(k, dim=1).indices
    return sum(len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(a, b, strict=True)) / len(
        QUERIES
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", nargs="+", default=["tiny", "ViT-B-32"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"{platform.processor() or platform.machine()}, {args.threads} threads, "
        f"torch {torch.__version__}"
    )
    for arch in args.arch:
        bench_video(arch, args.repeats)
        bench_text(arch, args.repeats)


if __name__ == "__main__":
    main()
