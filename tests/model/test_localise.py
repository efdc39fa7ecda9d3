"""Moments inside a unit (model.localise): frame relevance and the run around its peak."""

import numpy as np
import pytest
import torch

from model.embeddings import TextEmbeddings, VideoEmbeddings
from model.localise import frame_relevance, moment_frames, peak_run

D = 6


def _axis(i: int) -> torch.Tensor:
    return torch.eye(D)[i]


def _video(frames: list[torch.Tensor], pad: int = 0) -> VideoEmbeddings:
    """One unit whose action and entity frames are ``frames`` (then ``pad`` padded slots)."""
    x = torch.stack(frames + [torch.zeros(D)] * pad)[None]  # (1, T, D)
    mask = torch.tensor([[True] * len(frames) + [False] * pad])
    one = torch.zeros(1, 1, D)
    return VideoEmbeddings(
        global_=x.mean(1),
        action_frames=x.clone(),
        entity_frames=x.clone(),
        frame_mask=mask,
        action_segments=one,
        action_spans=torch.zeros(1, 1, 2, dtype=torch.long),
        entity_segments=one,
        verb_probs=torch.zeros(1, 3),
        noun_probs=torch.zeros(1, 3),
    )


def _text(sentence: torch.Tensor, verbs: list[torch.Tensor], args: list[torch.Tensor]):
    def nodes(items):
        slots = max(1, len(items))
        x = torch.zeros(1, slots, D)
        mask = torch.zeros(1, slots, dtype=torch.bool)
        for i, v in enumerate(items):
            x[0, i], mask[0, i] = v, True
        return x, mask

    (vn, vm), (an, am) = nodes(verbs), nodes(args)
    return TextEmbeddings(
        global_=sentence[None],
        verb_phrases=vn,
        arg_phrases=an,
        verb_nodes=vn,
        arg_nodes=an,
        verb_mask=vm,
        arg_mask=am,
        verb_probs=torch.zeros(1, 3),
        noun_probs=torch.zeros(1, 3),
    )


def test_peak_run_keeps_the_frames_near_the_peak_around_it():
    r = np.array([0.0, 0.9, 0.2, 0.6, 1.0, 0.8, 0.1])
    assert peak_run(r) == (3, 5)  # floor 0.5: 0.9 at frame 1 is cut off by 0.2 at frame 2
    assert peak_run(r, share=0.0) == (4, 4)
    assert peak_run(r, share=1.0) == (0, 6)
    assert peak_run(np.array([0.3])) == (0, 0)
    assert peak_run(np.array([0.5, 0.5])) == (0, 1)  # flat: the whole unit


def test_peak_run_refuses_what_has_no_moment():
    with pytest.raises(ValueError, match="without frames"):
        peak_run(np.array([]))
    with pytest.raises(ValueError, match="share"):
        peak_run(np.array([1.0, 2.0]), share=1.5)


def test_the_moment_is_where_the_sentence_and_its_phrases_match():
    # frames 2-4 show what the sentence says (axis 0); the others show something else (axis 1)
    frames = [_axis(1), _axis(1), _axis(0), _axis(0), _axis(0) + 0.2 * _axis(1), _axis(1)]
    text = _text(_axis(0), verbs=[_axis(0)], args=[_axis(0)])
    assert moment_frames(text, _video(frames)) == [[(2, 4)]]
    # a phrase that matches elsewhere pulls relevance there: the verb node points at axis 1
    pulled = _text(_axis(0), verbs=[_axis(1)], args=[_axis(1)])
    relevance = frame_relevance(pulled, _video(frames))[0, 0]
    assert torch.allclose(relevance[0], relevance[2])  # half the cosines for each side


def test_a_text_without_phrases_falls_back_to_its_sentence_vector():
    frames = [_axis(1), _axis(0), _axis(1)]
    bare = frame_relevance(_text(_axis(0), [], []), _video(frames))
    full = frame_relevance(_text(_axis(0), [_axis(0)], [_axis(0)]), _video(frames))
    assert torch.allclose(bare, full)
    assert bare[0, 0].tolist() == [0.0, 1.0, 0.0]


def test_padded_frames_never_belong_to_a_moment():
    frames = [_axis(1), _axis(0), _axis(0)]
    video = _video(frames, pad=3)
    relevance = frame_relevance(_text(_axis(0), [], []), video)[0, 0]
    assert torch.isinf(relevance[3:]).all() and (relevance[3:] < 0).all()
    assert moment_frames(_text(_axis(0), [], []), video) == [[(1, 2)]]
