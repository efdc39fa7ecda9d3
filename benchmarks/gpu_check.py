"""GPU checks, run once on a lent GPU machine: CUDA + bf16 paths of the video branch and of
training, with the figures the issues ask for (recorded in docs/benchmarks.md).

    PYTHONPATH=. python3 benchmarks/gpu_check.py OUT_DIR

Imports only model/ and indexer/ (no service settings), so it runs with torch, open_clip, av
and lemminflect alone."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

from corpus.datasets import load_generic
from corpus.prepare import split_data, vocab_from
from corpus.synth import generate_corpus
from model import HANet, create_model, get_config
from model.evaluate import evaluate
from model.train import TrainCfg, train


def _timed(fn, repeats: int = 10) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def video_branch(report: dict) -> None:
    model = create_model("ViT-B-32").cuda()
    for batch_videos in (4, 16):
        pixels = torch.randn(batch_videos, 12, 3, 224, 224, device="cuda")
        mask = torch.ones(batch_videos, 12, dtype=torch.bool, device="cuda")
        flat = pixels.flatten(0, 1)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            bare = _timed(lambda flat=flat: model.clip.encode_image(flat))
            full = _timed(lambda p=pixels, m=mask: model.encode_video(p, m))
        frames = batch_videos * 12
        report[f"vit_b32_bf16_frames_per_s_batch{frames}"] = {
            "bare_image_tower": round(frames / bare, 1),
            "hanet_video_branch": round(frames / full, 1),
        }
    with torch.inference_mode():
        text = _timed(lambda: model.encode_text(["a man is playing guitar on the stage"]), 30)
    report["vit_b32_text_branch_ms_single_query_fp32"] = round(text * 1000, 2)


SWEEP = [  # (name, TrainCfg overrides)
    ("hanet lr1e-3 all-negatives", {"lr": 1e-3, "warmup_epochs": 99}),
    ("hanet lr5e-4 all-negatives", {"lr": 5e-4, "warmup_epochs": 99}),
    ("hanet lr1e-3 warmup5 then hardest", {"lr": 1e-3, "warmup_epochs": 5}),
    ("global lr1e-3 all-negatives", {"lr": 1e-3, "warmup_epochs": 99, "objective": "global"}),
    ("hanet lr2e-3 all-negatives", {"lr": 2e-3, "warmup_epochs": 99}),
]


def training(report: dict, root: Path, out: Path) -> None:
    start = time.perf_counter()
    manifest = generate_corpus(root / "corpus", 2000, seed=0, workers=16, progress=False)
    report["synth_2000_videos_s_16_cores"] = round(time.perf_counter() - start, 1)
    dataset = load_generic(manifest)
    vocab, cfg = vocab_from(dataset, get_config("tiny"))
    train_data, _ = split_data(dataset, "train", cfg, vocab, progress=False)
    val_data, _ = split_data(dataset, "val", cfg, None, progress=False)
    test_data, _ = split_data(dataset, "test", cfg, None, progress=False)
    for name, overrides in SWEEP:
        torch.manual_seed(0)
        model = HANet(cfg, vocab).cuda()
        tcfg = TrainCfg(**{"epochs": 24, "batch_size": 64, "patience": 24, **overrides})
        start = time.perf_counter()
        work = root / name.replace(" ", "_")
        history = train(model, train_data, val_data, tcfg, work, work / "m.pt", progress=False)
        result = evaluate(model, test_data.frames, test_data.mask, test_data.captions)
        report.setdefault("sweep", {})[name] = {
            "seconds": round(time.perf_counter() - start, 1),
            "val_rsum": [h["val_rsum"] for h in history],
            "last_test_t2v": result["t2v"],
            "last_test_rsum": result["rsum"],
            "last_test_global_t2v_R@1": result["ablation"]["global"]["t2v"]["R@1"],
        }
        (out / "gpu_report.json").write_text(json.dumps(report, indent=1))
        print(name, json.dumps(report["sweep"][name]), flush=True)


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for step in (video_branch, lambda r: training(r, Path("/tmp/hanet-gpu"), out)):
        try:
            step(report)
        except Exception as exc:  # report and go on: one failed check must not hide the rest
            report.setdefault("errors", []).append(repr(exc))
        (out / "gpu_report.json").write_text(json.dumps(report, indent=1))
        print(json.dumps(report, indent=1), flush=True)


if __name__ == "__main__":
    main()
