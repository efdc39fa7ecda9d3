"""HANet behaviour: padding, batching, round trips, gradients, public API shapes."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from model import SCORE_NAMES, HANet, ModelError, get_config, load_checkpoint
from model.losses import hanet_loss
from tests.model.conftest import CAPTIONS, random_pixels


def _encode(model: HANet, pixels: torch.Tensor, mask: torch.Tensor, texts: list[str]):
    with torch.no_grad():
        return model.encode_text(texts), model.encode_video(pixels, mask)


def test_similarity_has_every_level_with_texts_by_videos_shape(tiny: HANet) -> None:
    pixels = random_pixels(tiny, 3, tiny.cfg.max_frames)
    text, video = _encode(
        tiny, pixels, torch.ones(3, tiny.cfg.max_frames, dtype=torch.bool), CAPTIONS
    )
    scores = tiny.similarity(text, video)
    assert set(SCORE_NAMES) | {"fused", "embedding", "concept"} == set(scores)
    for name, value in scores.items():
        assert value.shape == (len(CAPTIONS), 3), name
        assert torch.isfinite(value).all(), name
    # sentences without verbs score 0 at both verb levels; others do not
    assert scores["local_action"][3].abs().max() == 0
    assert scores["local_action"][0].abs().min() > 0
    weights = dict(zip(SCORE_NAMES, tiny.cfg.fusion, strict=True))
    fused = sum(w * scores[n] for n, w in weights.items())
    assert torch.allclose(scores["fused"], fused)


def test_padding_frames_changes_no_score(tiny: HANet) -> None:
    t = tiny.cfg.max_frames
    pixels = random_pixels(tiny, 2, t)
    short = torch.ones(2, 5, dtype=torch.bool)
    padded_mask = torch.zeros(2, t, dtype=torch.bool)
    padded_mask[:, :5] = True
    padded = pixels.clone()
    padded[:, 5:] = 100.0  # garbage in padded frames
    text, video_short = _encode(tiny, pixels[:, :5], short, CAPTIONS)
    _, video_padded = _encode(tiny, padded, padded_mask, CAPTIONS)
    a, b = tiny.similarity(text, video_short), tiny.similarity(text, video_padded)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    assert torch.equal(video_short.action_spans, video_padded.action_spans)


def test_batch_scores_equal_one_by_one(tiny: HANet) -> None:
    t = tiny.cfg.max_frames
    pixels = random_pixels(tiny, 3, t)
    mask = torch.ones(3, t, dtype=torch.bool)
    mask[1, 3:] = False
    mask[2, 6:] = False
    text, video = _encode(tiny, pixels, mask, CAPTIONS)
    batch = tiny.similarity(text, video)
    for i, caption in enumerate(CAPTIONS):
        for j in range(3):
            one_text, one_video = _encode(tiny, pixels[j : j + 1], mask[j : j + 1], [caption])
            single = tiny.similarity(one_text, one_video)
            for name in batch:
                assert single[name][0, 0].item() == pytest.approx(
                    batch[name][i, j].item(), abs=1e-5
                ), (name, i, j)


def test_save_load_round_trip_gives_identical_outputs(tiny: HANet, tmp_path) -> None:
    path = tmp_path / "m.pt"
    digest = tiny.save(str(path))
    loaded = load_checkpoint(path)
    assert loaded.checkpoint_sha256 == digest and len(digest) == 64
    assert loaded.cfg == tiny.cfg
    pixels = random_pixels(tiny, 2, tiny.cfg.max_frames)
    mask = torch.ones(2, tiny.cfg.max_frames, dtype=torch.bool)
    a = tiny.similarity(*_encode(tiny, pixels, mask, CAPTIONS))
    b = loaded.similarity(*_encode(loaded, pixels, mask, CAPTIONS))
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_gradients_reach_every_trained_parameter(tiny: HANet) -> None:
    model = HANet(tiny.cfg).train()
    # logit_scale belongs to CLIP's contrastive head, which HANet does not use. The bias of the
    # global pooling's frame score (the spec's Linear(D -> 1)) adds the same number to every
    # frame's score before a softmax, which cancels it: its true gradient is exactly zero.
    unused = {"clip.logit_scale", "video.pool.bias"}
    trained = {n: p for n, p in model.named_parameters() if n not in unused}
    optimizer = torch.optim.SGD(trained.values(), lr=0.5)
    t = model.cfg.max_frames
    pixels = random_pixels(model, 4, t)
    mask = torch.ones(4, t, dtype=torch.bool)
    mask[2, 5:] = False
    captions = CAPTIONS[:3] + ["a dog jumps over a fence"]
    for _step in range(2):  # after one step the zero-initialised GCN output is live
        optimizer.zero_grad()
        text = model.encode_text(captions)
        video = model.encode_video(pixels, mask)
        scores = model.similarity(text, video)
        labels = {
            "verb": (
                torch.rand(4, model.cfg.num_verbs).round(),
                torch.ones(4, model.cfg.num_verbs),
            ),
            "noun": (
                torch.rand(4, model.cfg.num_nouns).round(),
                torch.ones(4, model.cfg.num_nouns),
            ),
        }
        probs = {
            "video_verb": video.verb_probs,
            "video_noun": video.noun_probs,
            "text_verb": text.verb_probs,
            "text_noun": text.noun_probs,
        }
        loss = hanet_loss(scores, torch.eye(4, dtype=torch.bool), probs, labels)["total"]
        assert loss.item() > 0
        loss.backward()
        optimizer.step()
    missing = [n for n, p in trained.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient reached: {missing}"


def test_encode_video_rejects_bad_input(tiny: HANet) -> None:
    pixels = random_pixels(tiny, 1, 4)
    with pytest.raises(ValueError, match="at least one real frame"):
        tiny.encode_video(pixels, torch.zeros(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected|B, T"):
        tiny.encode_video(pixels[0], torch.ones(4, dtype=torch.bool))


def test_action_spans_lie_inside_valid_frames(tiny: HANet) -> None:
    t = tiny.cfg.max_frames
    mask = torch.zeros(2, t, dtype=torch.bool)
    mask[0, :t] = True
    mask[1, :2] = True  # shorter than the 5-frame window: single-frame segments
    _, video = _encode(tiny, random_pixels(tiny, 2, t), mask, ["x"])
    spans = video.action_spans
    assert spans.shape == (2, tiny.cfg.num_action_segments, 2)
    assert (spans[..., 0] <= spans[..., 1]).all()
    assert spans[0].max() < t and spans[1].max() < 2
    assert (spans[1, :, 0] == spans[1, :, 1]).all()
    width = spans[0, :, 1] - spans[0, :, 0]
    assert set(width.tolist()) <= {0, tiny.cfg.action_window - 1}


def test_top_concepts_need_a_vocabulary(tiny: HANet) -> None:
    _, video = _encode(tiny, random_pixels(tiny, 1, 3), torch.ones(1, 3, dtype=torch.bool), ["x"])
    with pytest.raises(ModelError, match="vocabulary"):
        tiny.top_concepts(video)


def test_top_concepts_names_and_orders_by_probability(tiny: HANet) -> None:
    from model import ConceptVocab

    vocab = ConceptVocab(
        tuple(f"verb{i}" for i in range(tiny.cfg.num_verbs)),
        tuple(f"noun{i}" for i in range(tiny.cfg.num_nouns)),
    )
    model = HANet(tiny.cfg, vocab).eval()
    model.load_state_dict(tiny.state_dict())
    _, video = _encode(model, random_pixels(model, 1, 4), torch.ones(1, 4, dtype=torch.bool), ["x"])
    top = model.top_concepts(video, k=3)[0]
    probs = [c.probability for c in top["actions"]]
    assert probs == sorted(probs, reverse=True) and len(probs) == 3
    best = int(video.verb_probs[0].argmax())
    assert top["actions"][0].name == f"verb{best}"


@pytest.mark.parametrize("levels", ["all", "action"])
def test_motion_reaches_the_event_level_only_when_shared(levels: str) -> None:
    """Attention pooling is blind to frame order; only the shared temporal convolution lets
    the global (event) vector tell a video from its reverse ("moves left" from "moves right")."""
    torch.manual_seed(0)
    model = HANet(replace(get_config("tiny"), motion_levels=levels)).eval()
    torch.nn.init.normal_(model.video.motion.weight, std=0.05)
    pixels = random_pixels(model, 1, model.cfg.max_frames)
    mask = torch.ones(1, model.cfg.max_frames, dtype=torch.bool)
    with torch.no_grad():
        forward = model.encode_video(pixels, mask)
        backward = model.encode_video(pixels.flip(1), mask)
    event_differs = not torch.allclose(forward.global_, backward.global_, atol=1e-5)
    assert event_differs == (levels == "all")
    # the action level sees motion either way: reversed frames are not its output reversed
    assert not torch.allclose(forward.action_frames.flip(1), backward.action_frames, atol=1e-5)


def test_empty_phrase_slots_are_dropped_without_changing_a_score(tiny: HANet) -> None:
    from model.scores import _similarity_chunk

    pixels = random_pixels(tiny, 2, tiny.cfg.max_frames)
    text, video = _encode(
        tiny, pixels, torch.ones(2, tiny.cfg.max_frames, dtype=torch.bool), CAPTIONS[:2]
    )
    trimmed = text.without_empty_phrase_slots()
    assert trimmed.verb_nodes.shape[1] == int(text.verb_mask.sum(1).max()) < tiny.cfg.max_verbs
    assert trimmed.arg_mask.all(0).any() and trimmed.arg_mask.any(0).all()
    full, short = _similarity_chunk(text, video, 4.0), _similarity_chunk(trimmed, video, 4.0)
    for name in full:
        assert torch.allclose(full[name], short[name], atol=1e-6), name


def test_motion_stream_starts_as_a_no_op_and_reads_each_frame_with_the_next() -> None:
    """The motion stream's features follow the frame features and reach the temporal
    convolution only; zero-initialised, it leaves every embedding as without it. Each frame's
    features come from it and its difference to the next real frame (none after the last)."""
    torch.manual_seed(0)
    base = replace(get_config("tiny"), motion_levels="all")
    with_stream = HANet(replace(base, motion_stream=8)).eval()
    without = HANet(base).eval()
    state = {k: v for k, v in with_stream.state_dict().items() if not k.startswith("motion_stream")}
    state["video.motion.weight"] = state["video.motion.weight"][:, : base.clip_embed_dim]
    without.load_state_dict(state)
    t = base.max_frames
    pixels, mask = random_pixels(with_stream, 2, t), torch.ones(2, t, dtype=torch.bool)
    mask[1, 5:] = False
    still = pixels[:1, :1].expand(1, t, -1, -1, -1)
    with torch.no_grad():
        frames = with_stream.encode_frames(pixels, mask)
        a, b = with_stream.encode_video(pixels, mask), without.encode_video(pixels, mask)
        stream = with_stream.motion_stream
        alone = stream(pixels[1:, :5], torch.ones(1, 5, dtype=torch.bool))
        padded = stream(pixels[1:], mask[1:])
        resting = stream(still, torch.ones(1, t, dtype=torch.bool))
        moving = stream(pixels[:1], mask[:1])
    assert frames.shape == (2, t, base.clip_embed_dim + 8)
    assert frames[1, 5:].abs().sum() == 0
    for field in ("global_", "action_frames", "entity_frames", "action_segments"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert torch.allclose(alone, padded, atol=1e-6)  # padding is not a next frame
    assert torch.allclose(resting, resting[:1].expand(t, -1), atol=1e-6)  # nothing changes
    assert not torch.allclose(moving[:-1], moving[-1:].expand(t - 1, -1), atol=1e-3)
    # trained, the stream moves the convolution's output and gets gradients
    with_stream.train()
    torch.nn.init.normal_(with_stream.video.motion.weight, std=0.05)
    with_stream.encode_video(pixels, mask).action_frames.sum().backward()
    assert all(p.grad.abs().sum() > 0 for p in stream.parameters())


def test_motion_stream_reads_given_successors_instead_of_the_next_sampled_frame() -> None:
    """With ``following`` (each frame's own successor, as the indexer decodes for a long
    segment), the difference is taken to it, not to the next sampled frame: a successor equal
    to its frame reads as a frame alone, and the next sampled frame as successor gives what the
    implicit pairing gives."""
    torch.manual_seed(0)
    model = HANet(replace(get_config("tiny"), motion_levels="all", motion_stream=8)).eval()
    t = model.cfg.max_frames
    pixels, mask = random_pixels(model, 1, t), torch.ones(1, t, dtype=torch.bool)
    stream = model.motion_stream
    one = torch.ones(1, 1, dtype=torch.bool)
    with torch.no_grad():
        resting = stream(pixels, mask, following=pixels.clone())
        alone = torch.cat([stream(pixels[:, i : i + 1], one) for i in range(t)])
        implicit = stream(pixels, mask)
        explicit = stream(pixels, mask, torch.cat([pixels[:, 1:], pixels[:, -1:]], dim=1))
    assert torch.allclose(resting, alone, atol=1e-5)
    assert torch.allclose(implicit, explicit, atol=1e-5)
    assert not torch.allclose(resting[:-1], implicit[:-1], atol=1e-3)
    with pytest.raises(ValueError, match="following"):
        model.encode_video(pixels, mask, following=pixels[:, :2])


@pytest.mark.parametrize("levels", ["all", "action"])
def test_keypoints_start_as_a_no_op_then_train(levels: str) -> None:
    """The keypoints' positions follow the frame features and reach the temporal convolution
    only; zero-initialised, it leaves every embedding as without them."""
    torch.manual_seed(0)
    base = replace(get_config("tiny"), motion_levels=levels)
    with_points = HANet(replace(base, keypoints=3)).eval()
    without = HANet(base).eval()
    state = {k: v for k, v in with_points.state_dict().items() if not k.startswith("keypoints")}
    state["video.motion.weight"] = state["video.motion.weight"][:, : base.clip_embed_dim]
    without.load_state_dict(state)
    t = base.max_frames
    pixels, mask = random_pixels(with_points, 2, t), torch.ones(2, t, dtype=torch.bool)
    mask[1, 5:] = False
    with torch.no_grad():
        frames = with_points.encode_frames(pixels, mask)
        a, b = with_points.encode_video(pixels, mask), without.encode_video(pixels, mask)
    assert frames.shape == (2, t, base.clip_embed_dim + 6)
    assert frames[..., -6:].abs().max() <= 1 and frames[1, 5:].abs().sum() == 0
    for field in ("global_", "action_frames", "entity_frames", "action_segments"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    # trained, the positions move the convolution's output and the maps get gradients
    with_points.train()
    torch.nn.init.normal_(with_points.video.motion.weight, std=0.05)
    with_points.encode_video(pixels, mask).action_frames.sum().backward()
    assert with_points.keypoints.maps.weight.grad.abs().sum() > 0
