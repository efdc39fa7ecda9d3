"""Contrast captions: one word swap or one order swap that makes a caption false."""

from __future__ import annotations

import random

from model.negatives import contrast_caption, contrast_edits


def test_each_opposite_gives_its_own_contrast_caption() -> None:
    assert contrast_edits("a small red star moves left, then a blue circle grows") == [
        "a small red star moves right, then a blue circle grows",
        "a small red star moves left, then a blue circle shrinks",
        "a blue circle grows, then a small red star moves left",  # the events reversed
    ]
    assert contrast_edits("a star shrinks before a circle fades in") == [
        "a star grows before a circle fades in",
        "a star shrinks after a circle fades in",
        "a star shrinks before a circle fades out",
    ]


def test_phrases_whole_words_and_case() -> None:
    assert contrast_edits("Left of the door a man opens it") == [
        "Right of the door a man opens it",
        "Left of the door a man closes it",
    ]
    # "upright" and "lefty" hold no direction; "shows up" is not "goes up"
    assert contrast_edits("an upright lefty shows up") == []
    assert contrast_edits("the box moves up") == ["the box moves down"]


def test_clauses_that_refer_back_are_not_swapped() -> None:
    # "it spins, then a star goes up" would not say the same thing reversed
    assert contrast_edits("first a big star goes up and then it spins") == [
        "first a big star goes down and then it spins"
    ]
    assert contrast_edits("first a star blinks and then a circle spins") == [
        "first a circle spins and then a star blinks"
    ]


def test_no_rule_no_contrast_and_the_pick_follows_the_rng() -> None:
    assert contrast_caption("a green circle stays still", random.Random(0)) is None
    caption = "a star moves left, then a circle grows"
    picks = {contrast_caption(caption, random.Random(seed)) for seed in range(40)}
    assert picks == set(contrast_edits(caption))  # every edit can be drawn
    assert contrast_caption(caption, random.Random(3)) == contrast_caption(
        caption, random.Random(3)
    )
