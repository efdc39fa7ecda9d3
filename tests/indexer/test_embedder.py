"""The embedder on its own: decoded segments (index units) -> embeddings, frame times and
spans; a video's concepts over its units."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from indexer.embedder import DENSE_S, EmbeddedBatch, Embedder, Unit, motion_partners
from indexer.segments import SegmentCfg, decode_segments, plan_segments
from model import ConceptVocab, HANet, VideoEmbeddings, get_config
from model.preprocess import normalize_frames


def _units(
    model: HANet, corpus, count: int, frames: int | None = None, first_id: int = 10
) -> list[Unit]:
    """The first ``count`` corpus videos (2 s each: one segment), decoded for ``model``."""
    paths = sorted(p for p in corpus.iterdir() if p.name != "broken.mp4")[:count]
    t, size = frames or model.cfg.max_frames, model.preprocess.image_size
    units = []
    for i, path in enumerate(paths):
        (segment,) = decode_segments(path, t, size).segments
        units.append(Unit(first_id + i, 0, segment))
    return units


def _direct(model: HANet, unit: Unit, following: bool = True) -> VideoEmbeddings:
    """The model's own video branch on one unit's frames (and their motion partners), unpadded;
    without ``following``, the model's own pairing of each frame with the next sampled one."""
    frames, after = unit.decoded.frames, motion_partners(unit.decoded)
    with torch.inference_mode():
        pixels = normalize_frames(torch.from_numpy(frames), model.preprocess)[None]
        moved = normalize_frames(torch.from_numpy(after), model.preprocess)[None]
        mask = torch.ones(1, len(frames), dtype=torch.bool)
        return model.encode_video(pixels, mask, moved if following else None)


def _assert_rows_are_alone(model: HANet, out: VideoEmbeddings, units: list[Unit]) -> None:
    for i, u in enumerate(units):
        alone, n = _direct(model, u), len(u.decoded.frames)
        row = out.select(slice(i, i + 1))
        assert torch.allclose(row.global_, alone.global_, atol=1e-5)
        assert torch.allclose(row.action_segments, alone.action_segments, atol=1e-5)
        assert torch.allclose(row.entity_segments, alone.entity_segments, atol=1e-5)
        assert torch.allclose(row.entity_frames[:, :n], alone.entity_frames[:, :n], atol=1e-5)
        assert torch.allclose(row.verb_probs, alone.verb_probs, atol=1e-5)
        assert torch.equal(row.frame_mask[0, :n], torch.ones(n, dtype=torch.bool))
        assert not row.frame_mask[0, n:].any()


def test_embeddings_are_the_model_s_on_the_same_frames(corpus, model) -> None:
    """A batch of units, one shorter than T frames (padded and masked in the batch), gives
    each unit what the model's encode_video gives it alone."""
    units = _units(model, corpus, 3)
    short = _units(model, corpus, 1, frames=5)[0]
    units.append(Unit(20, 3, short.decoded))
    batch = Embedder(model)(units)
    assert isinstance(batch, EmbeddedBatch) and batch.video_ids == [10, 11, 12, 20]
    assert batch.segments == [0, 0, 0, 3] and len(batch) == 4
    out = batch.embeddings
    assert out.global_.dtype == torch.float32 and out.global_.device.type == "cpu"
    assert len(out) == 4
    _assert_rows_are_alone(model, out, units)


@pytest.fixture
def motion_model(tmp_path) -> HANet:
    """A tiny model with a motion stream (which reads each frame's successor), its temporal
    convolution random (it starts at zero, where the motion stream changes nothing)."""
    m = HANet(dataclasses.replace(get_config("tiny"), motion_stream=4)).eval()
    torch.nn.init.normal_(m.video.motion.weight, std=0.2)
    m.save(str(tmp_path / "motion.pt"))
    return m


def test_the_motion_stream_reads_successors_only_where_samples_are_sparse(
    corpus, motion_model
) -> None:
    """A clip sampled as densely as training clips pairs each frame with the next sampled one
    (what the model was trained on: the embeddings are those without successors); a sparse
    sample (3 frames over 2 s, as in a long segment) pairs each frame with its decoded
    successor, which changes the embeddings."""
    units = _units(motion_model, corpus, 2)
    sparse = _units(motion_model, corpus, 1, frames=3)[0]
    assert np.median(np.diff(sparse.decoded.timestamps_s)) > DENSE_S
    assert np.median(np.diff(units[0].decoded.timestamps_s)) <= DENSE_S
    units.append(Unit(30, 0, sparse.decoded))
    out = Embedder(motion_model)(units).embeddings
    _assert_rows_are_alone(motion_model, out, units)
    trained = _direct(motion_model, units[0], following=False)
    assert torch.allclose(out.select([0]).action_segments, trained.action_segments, atol=1e-5)
    assert np.array_equal(motion_partners(sparse.decoded), sparse.decoded.following)
    paired = _direct(motion_model, units[2], following=False)  # motion feeds the action level
    assert not torch.allclose(out.select([2]).action_segments, paired.action_segments, atol=1e-3)


def test_frame_times_and_spans_come_from_the_decoded_segments(corpus, model) -> None:
    units = _units(model, corpus, 2)
    units.append(Unit(30, 0, _units(model, corpus, 1, frames=3)[0].decoded))
    path = sorted(corpus.iterdir())[3]  # a 2 s video cut into windows: three units
    cfg = SegmentCfg(min_s=0.5, max_s=1.0, window_s=0.5, overlap_s=0.0)
    windows = decode_segments(path, model.cfg.max_frames, model.preprocess.image_size, cfg)
    assert [(s.start_s, s.end_s) for s in windows.segments] == plan_segments([], 2.0, cfg)
    units += [Unit(40, i, s) for i, s in enumerate(windows.segments)]
    batch = Embedder(model)(units)
    t = model.cfg.max_frames
    assert batch.frame_times.shape == (6, t) and batch.frame_times.dtype == np.float32
    for row, u in zip(batch.frame_times, units, strict=True):
        n = len(u.decoded.timestamps_s)
        assert np.allclose(row[:n], u.decoded.timestamps_s) and not row[n:].any()
    assert batch.spans.shape == (6, 2) and batch.spans.dtype == np.float32
    expected = [[u.decoded.start_s, u.decoded.end_s] for u in units]
    assert np.allclose(batch.spans, expected)
    assert np.allclose(batch.spans[3:], [[0, 0.5], [0.5, 1], [1, 2]])
    assert batch.video_ids == [10, 11, 30, 40, 40, 40]
    assert batch.segments == [0, 0, 0, 0, 1, 2]
    picked = batch.select([4, 1])  # rows of a batch, kept together
    assert picked.video_ids == [40, 11] and picked.segments == [1, 0]
    assert np.array_equal(picked.spans, batch.spans[[4, 1]])
    assert np.array_equal(picked.frame_times, batch.frame_times[[4, 1]])
    assert torch.equal(picked.embeddings.global_, batch.embeddings.global_[[4, 1]])
    both = EmbeddedBatch.cat([picked, batch.select([0])])
    assert both.video_ids == [40, 11, 10] and both.segments == [1, 0, 0]
    assert np.array_equal(both.spans, batch.spans[[4, 1, 0]])


def _as_json(found) -> list[dict]:
    return [{"name": c.name, "probability": c.probability} for c in found]


def test_concepts_are_the_model_s_top_three_or_none_without_a_vocabulary(
    corpus, model, vocab_model
) -> None:
    embed = Embedder(model)
    assert embed.concepts(embed(_units(model, corpus, 2)).embeddings) is None
    batch = Embedder(vocab_model)(_units(vocab_model, corpus, 2))
    top = vocab_model.top_concepts(batch.embeddings, k=3)
    for i, expected in enumerate(top):  # a video of one unit: that unit's top concepts
        stored = Embedder(vocab_model).concepts(batch.embeddings.select([i]))
        assert stored is not None and set(stored) == {"actions", "entities"}
        assert stored["actions"] == _as_json(expected["actions"])
        assert stored["entities"] == _as_json(expected["entities"])
        probs = batch.embeddings.verb_probs[i]
        assert stored["actions"][0]["name"] == f"verb{int(probs.argmax())}"
        ranked = [c["probability"] for c in stored["actions"]]
        assert len(ranked) == 3 and ranked == sorted(ranked, reverse=True)


def test_a_video_s_concepts_are_each_at_its_most_probable_unit(corpus, tmp_path) -> None:
    """Several units: a concept's probability is its highest over the units, so a concept
    that one unit is sure of ranks first even when the others are not."""
    cfg = get_config("tiny")
    vocab = ConceptVocab(
        tuple(f"verb{i}" for i in range(cfg.num_verbs)),
        tuple(f"noun{i}" for i in range(cfg.num_nouns)),
    )
    model = HANet(cfg, vocab).eval()
    embed = Embedder(model)
    units = embed(_units(model, corpus, 4)).embeddings
    verbs = torch.full_like(units.verb_probs, 0.01)
    verbs[0, 5], verbs[2, 7], verbs[3, 9], verbs[1, 5] = 0.4, 0.9, 0.6, 0.2
    nouns = torch.full_like(units.noun_probs, 0.01)
    nouns[1, 3], nouns[3, 4], nouns[0, 11] = 0.8, 0.7, 0.3
    units = dataclasses.replace(units, verb_probs=verbs, noun_probs=nouns)
    concepts = embed.concepts(units)
    assert [c["name"] for c in concepts["actions"]] == ["verb7", "verb9", "verb5"]
    assert [c["probability"] for c in concepts["actions"]] == pytest.approx([0.9, 0.6, 0.4])
    assert [c["name"] for c in concepts["entities"]] == ["noun3", "noun4", "noun11"]
    assert [c["probability"] for c in concepts["entities"]] == pytest.approx([0.8, 0.7, 0.3])


def test_out_of_memory_halves_the_batch_and_keeps_every_unit(corpus, model, caplog) -> None:
    """The GPU path's retry, on the CPU: a batch larger than 2 units raises CUDA's
    out-of-memory error; the embedder splits it until it fits, in order, losing nothing."""
    units = _units(model, corpus, 5)
    embed = Embedder(model)
    real, sizes = embed.encode, []

    def tight(segments):
        sizes.append(len(segments))
        if len(segments) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(segments)

    embed.encode = tight
    with caplog.at_level("WARNING"):
        out = embed(units).embeddings
    assert sizes == [5, 2, 3, 1, 2]  # 5 -> 2 + 3 -> 2 + (1 + 2)
    assert "out of GPU memory at batch 5" in caplog.text
    whole = real([u.decoded for u in units])
    assert torch.allclose(out.global_, whole.global_, atol=1e-5)
    assert torch.equal(out.action_spans, whole.action_spans)


def test_one_unit_that_does_not_fit_is_an_error(corpus, model) -> None:
    embed = Embedder(model)

    def never(segments):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    embed.encode = never
    with pytest.raises(torch.OutOfMemoryError):
        embed(_units(model, corpus, 3))
