"""The embedder on its own: decoded videos -> embeddings, frame times and concepts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from indexer.decode import decode_video
from indexer.embedder import EmbeddedBatch, Embedder
from indexer.reader import Decoded
from model import HANet, VideoEmbeddings
from model.preprocess import normalize_frames


def _decoded(model: HANet, corpus, count: int, frames: int | None = None) -> list[Decoded]:
    paths = sorted(p for p in corpus.iterdir() if p.name != "broken.mp4")[:count]
    t, size = frames or model.cfg.max_frames, model.preprocess.image_size
    return [Decoded(10 + i, decode_video(p, t, size)) for i, p in enumerate(paths)]


def _direct(model: HANet, decoded: Decoded) -> VideoEmbeddings:
    """The model's own video branch on one video's frames, unpadded."""
    frames = decoded.video.frames
    with torch.inference_mode():
        pixels = normalize_frames(torch.from_numpy(frames), model.preprocess)[None]
        return model.encode_video(pixels, torch.ones(1, len(frames), dtype=torch.bool))


def test_embeddings_are_the_model_s_on_the_same_frames(corpus, model) -> None:
    """A batch of videos, one shorter than T frames (padded and masked in the batch), gives
    each video what the model's encode_video gives it alone."""
    decoded = _decoded(model, corpus, 3)
    short = _decoded(model, corpus, 1, frames=5)[0]
    decoded.append(Decoded(20, short.video))
    batch = Embedder(model)(decoded)
    assert isinstance(batch, EmbeddedBatch) and batch.video_ids == [10, 11, 12, 20]
    out = batch.embeddings
    assert out.global_.dtype == torch.float32 and out.global_.device.type == "cpu"
    assert len(out) == 4
    for i, d in enumerate(decoded):
        alone, n = _direct(model, d), len(d.video.frames)
        row = out.select(slice(i, i + 1))
        assert torch.allclose(row.global_, alone.global_, atol=1e-5)
        assert torch.allclose(row.action_segments, alone.action_segments, atol=1e-5)
        assert torch.allclose(row.entity_segments, alone.entity_segments, atol=1e-5)
        assert torch.allclose(row.entity_frames[:, :n], alone.entity_frames[:, :n], atol=1e-5)
        assert torch.allclose(row.verb_probs, alone.verb_probs, atol=1e-5)
        assert torch.equal(row.frame_mask[0, :n], torch.ones(n, dtype=torch.bool))
        assert not row.frame_mask[0, n:].any()


def test_frame_times_and_durations_come_from_the_decoded_videos(corpus, model) -> None:
    decoded = _decoded(model, corpus, 2)
    decoded.append(Decoded(30, _decoded(model, corpus, 1, frames=3)[0].video))
    batch = Embedder(model)(decoded)
    t = model.cfg.max_frames
    assert batch.frame_times.shape == (3, t) and batch.frame_times.dtype == np.float32
    for row, d in zip(batch.frame_times, decoded, strict=True):
        n = len(d.video.timestamps_s)
        assert np.allclose(row[:n], d.video.timestamps_s) and not row[n:].any()
    assert batch.durations_s == [d.video.duration_s for d in decoded]


def test_concepts_are_the_model_s_top_three_or_none_without_a_vocabulary(
    corpus, model, vocab_model
) -> None:
    assert Embedder(model)(_decoded(model, corpus, 2)).concepts == [None, None]
    batch = Embedder(vocab_model)(_decoded(vocab_model, corpus, 2))
    top = vocab_model.top_concepts(batch.embeddings, k=3)
    assert len(batch.concepts) == 2
    rows = zip(batch.concepts, top, batch.embeddings.verb_probs, strict=True)
    for stored, expected, probs in rows:
        assert stored is not None and set(stored) == {"actions", "entities"}
        assert stored["actions"] == [
            {"name": c.name, "probability": c.probability} for c in expected["actions"]
        ]
        assert stored["entities"] == [
            {"name": c.name, "probability": c.probability} for c in expected["entities"]
        ]
        assert stored["actions"][0]["name"] == f"verb{int(probs.argmax())}"
        ranked = [c["probability"] for c in stored["actions"]]
        assert len(ranked) == 3 and ranked == sorted(ranked, reverse=True)


def test_out_of_memory_halves_the_batch_and_keeps_every_video(corpus, model, caplog) -> None:
    """The GPU path's retry, on the CPU: a batch larger than 2 videos raises CUDA's
    out-of-memory error; the embedder splits it until it fits, in order, losing nothing."""
    decoded = _decoded(model, corpus, 5)
    embed = Embedder(model)
    real, sizes = embed.encode, []

    def tight(videos):
        sizes.append(len(videos))
        if len(videos) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(videos)

    embed.encode = tight
    with caplog.at_level("WARNING"):
        out = embed(decoded).embeddings
    assert sizes == [5, 2, 3, 1, 2]  # 5 -> 2 + 3 -> 2 + (1 + 2)
    assert "out of GPU memory at batch 5" in caplog.text
    whole = real([d.video for d in decoded])
    assert torch.allclose(out.global_, whole.global_, atol=1e-5)
    assert torch.equal(out.action_spans, whole.action_spans)


def test_one_video_that_does_not_fit_is_an_error(corpus, model) -> None:
    embed = Embedder(model)

    def never(videos):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    embed.encode = never
    with pytest.raises(torch.OutOfMemoryError):
        embed(_decoded(model, corpus, 3))
