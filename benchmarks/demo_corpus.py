"""Trained-model embeddings for the rerank benchmarks (candidate_recall.py, rerank_formats.py,
million.py): the bundled demo model over procedural corpora (`hanet synth`), encoded once and
cached; and ViT-B-32-shaped units made from them, as many as asked, for scale.

ViT-B-32 shapes from the demo model's (D 128 -> 512, T 8 -> 12 frames, 11 -> 20 entity
segments, 26 -> 512 verb and 11 -> 1024 noun concepts): every vector goes through one random
isometry Q (512 x 128, orthonormal columns), so texts' dot products with the base videos are
the model's own; frames and entity segments are repeated in order to fill the longer axes;
concept probabilities fill the first slots, zeros after (Jaccard unchanged). Unit i is base
video ``i % B`` with its own noise: each vector x -> normalise(Q x + sigma * n / sqrt(512)),
n standard normal, and each probability + 0.02 * n, clipped to [0, 1]. Texts get Q alone.
Random vectors would say nothing about recall or ranking fidelity; these keep the trained
model's geometry, and the noise keeps copies of one base video apart.

    .venv/bin/python benchmarks/demo_corpus.py CORPUS [CORPUS ...] --cache EMBEDDINGS.pt \
        [--workers 2]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import TextEmbeddings, VideoEmbeddings, create_model  # noqa: E402

DEMO = ROOT / "model" / "weights" / "hanet-tiny-demo.pt"
VECTORS = ("global_", "action_frames", "entity_frames", "action_segments", "entity_segments")


@dataclass
class DemoCorpus:
    """The demo model's embeddings of a corpus: videos (B rows, float32), one caption per
    video and its text embeddings (row i: video i's first caption)."""

    video: VideoEmbeddings
    captions: list[str]
    text: TextEmbeddings


ENCODE_CHUNK = 2000  # videos decoded and encoded at once: memory bounded whatever the corpus


def encode_corpora(corpora: list[Path], cache: Path, workers: int = 1) -> DemoCorpus:
    """The demo model over every video of these `hanet synth` folders (cached in ``cache``),
    ``ENCODE_CHUNK`` videos at a time in ``workers`` processes."""
    if cache.exists():
        saved = torch.load(cache, weights_only=False)
        return DemoCorpus(saved["video"], saved["captions"], saved["text"])
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from corpus.datasets import load_dataset
    from model import load_checkpoint
    from model.evaluate import encode_texts

    torch.set_num_threads(1)  # a shared machine: no thread pool waiting on busy cores
    items = [v for c in corpora for v in load_dataset(str(c)).videos]
    chunks = [items[i : i + ENCODE_CHUNK] for i in range(0, len(items), ENCODE_CHUNK)]
    parts = []
    spawn = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        for part in pool.map(_encode_videos, chunks):
            parts.append(part)
            print(f"encoded {sum(len(p.global_) for p in parts)} of {len(items)} videos")
    video = VideoEmbeddings.cat(parts)
    captions = [v.captions[0].text for v in items]
    text = encode_texts(load_checkpoint(DEMO).eval(), captions)
    torch.save({"video": video, "captions": captions, "text": text}, cache)
    return DemoCorpus(video, captions, text)


def _encode_videos(items: list) -> VideoEmbeddings:
    """The demo model's embeddings of these videos (every one must decode)."""
    from corpus.datasets import decode_split
    from model import load_checkpoint
    from model.evaluate import encode_videos

    torch.set_num_threads(1)
    model = load_checkpoint(DEMO).eval()
    size = model.cfg.preprocess.image_size
    frames = decode_split(items, model.cfg.max_frames, size, progress=False)
    if frames.failed:
        raise SystemExit(f"videos failed to decode: {list(frames.failed.items())[:3]}")
    return encode_videos(model, torch.from_numpy(frames.frames), torch.from_numpy(frames.mask))


class Lift:
    """ViT-B-32-shaped units and texts from a demo corpus (see the module docstring)."""

    def __init__(self, corpus: DemoCorpus, sigma: float = 0.5, seed: int = 0) -> None:
        self.corpus, self.sigma = corpus, sigma
        self.cfg = create_model("ViT-B-32").cfg
        d_in, d = corpus.video.global_.shape[1], self.cfg.embed_dim
        g = np.random.default_rng(seed)
        self.q = np.linalg.qr(g.standard_normal((d, d_in)))[0].astype(np.float32)  # (512, 128)
        t_in, t = corpus.video.action_frames.shape[1], self.cfg.max_frames
        e_in, e = corpus.video.entity_segments.shape[1], self.cfg.num_entity_segments
        self.frame_of = np.arange(t) * t_in // t  # (12,) which demo frame fills each frame
        self.entity_of = np.arange(e) * e_in // e
        self.base = {k: getattr(corpus.video, k).float().numpy() for k in VIDEO_KEYS}
        # Q x of every base vector, once (units repeat the base videos, frames and segments:
        # lifting each unit's copies again was most of the time a unit took to make)
        self.lifted = {k: self.base[k] @ self.q.T for k in VECTORS}

    def units(self, start: int, count: int, seed: int = 1) -> dict[str, np.ndarray]:
        """Units ``start .. start + count`` (the same ones whatever the chunking: each unit's
        noise comes from its own seeded stream), as float32 arrays by VideoEmbeddings field."""
        base = np.arange(start, start + count) % len(self.corpus.captions)
        b = {k: v[base] for k, v in self.base.items()}
        lifted = {k: self.lifted[k][base] for k in VECTORS}
        for k in ("action_frames", "entity_frames"):
            lifted[k] = lifted[k][:, self.frame_of]
        b["frame_mask"] = b["frame_mask"][:, self.frame_of]
        lifted["entity_segments"] = lifted["entity_segments"][:, self.entity_of]
        # a demo frame index -> the first of the frames it fills (inclusive ends: the last)
        first = np.searchsorted(self.frame_of, b["action_spans"][..., 0])
        last = np.searchsorted(self.frame_of, b["action_spans"][..., 1], side="right") - 1
        b["action_spans"] = np.stack([first, last], -1).astype(np.int64)
        noise = np.random.default_rng([seed, start, count])
        out = {}
        for k in VECTORS:
            x = lifted[k]  # Q b, a fresh array (gathered)
            spread = np.float32(self.sigma / np.sqrt(x.shape[-1]))  # float32 (not float64) noise
            x += spread * noise.standard_normal(x.shape, np.float32)
            x /= np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-8)
            if k in ("action_frames", "entity_frames"):
                x *= b["frame_mask"][..., None]
            out[k] = x.astype(np.float32, copy=False)
        for k, n in (("verb_probs", self.cfg.num_verbs), ("noun_probs", self.cfg.num_nouns)):
            p = np.zeros((count, n), np.float32)
            small = b[k] + 0.02 * noise.standard_normal(b[k].shape, np.float32)
            p[:, : b[k].shape[1]] = small.clip(0, 1)
            out[k] = p
        out["frame_mask"] = b["frame_mask"].astype(bool)
        out["action_spans"] = b["action_spans"]
        return out

    def texts(self, rows: list[int]) -> TextEmbeddings:
        """The captions' text embeddings, ViT-B-32-shaped (Q alone: no noise)."""
        t = self.corpus.text.select(rows)
        lifted = {}
        for name in ("global_", "verb_phrases", "arg_phrases", "verb_nodes", "arg_nodes"):
            lifted[name] = torch.from_numpy(getattr(t, name).float().numpy() @ self.q.T)
        for name, n in (("verb_probs", self.cfg.num_verbs), ("noun_probs", self.cfg.num_nouns)):
            p = getattr(t, name).float()
            lifted[name] = torch.cat([p, torch.zeros(len(rows), n - p.shape[1])], 1)
        return TextEmbeddings(**lifted, verb_mask=t.verb_mask, arg_mask=t.arg_mask)


VIDEO_KEYS = (*VECTORS, "frame_mask", "action_spans", "verb_probs", "noun_probs")


def as_video(units: dict[str, np.ndarray]) -> VideoEmbeddings:
    return VideoEmbeddings(**{k: torch.from_numpy(units[k]) for k in VIDEO_KEYS})


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", type=Path, nargs="+", help="`hanet synth` folders")
    parser.add_argument("--cache", type=Path, required=True, help="where the embeddings go")
    parser.add_argument("--workers", type=int, default=1, help="encoding processes")
    args = parser.parse_args()
    corpus = encode_corpora(args.corpora, args.cache, args.workers)
    print(f"{len(corpus.captions)} videos, D {corpus.video.global_.shape[1]}")


if __name__ == "__main__":
    main()
