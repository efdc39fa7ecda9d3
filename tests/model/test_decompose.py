"""Sentence decomposition: verb phrases, argument phrases, roles, attachment."""

from __future__ import annotations

import pytest

from model.decompose import decompose


def _phrases(sentence: str):
    words = sentence.split()
    d = decompose(words)
    verbs = [" ".join(words[p.start : p.end]) for p in d.verbs]
    args = [(" ".join(words[p.start : p.end]), p.role, p.parent) for p in d.args]
    return verbs, args


@pytest.mark.parametrize(
    ("sentence", "verbs", "args"),
    [
        (
            "a small red star moves left , then a blue circle grows",
            ["moves left", "grows"],
            [("small red star", "ARG0", 0), ("blue circle", "ARG0", 1)],
        ),
        (
            "the big green square slides to the right",
            ["slides to the right"],
            [("big green square", "ARG0", 0)],
        ),
        (
            "a man is playing guitar on the stage",
            ["playing"],
            [("man", "ARG0", 0), ("guitar", "ARG1", 0), ("stage", "ARGM-LOC", 0)],
        ),
        ("people dancing in a club", ["dancing"], [("people", "ARG0", 0), ("club", "ARGM-LOC", 0)]),
        (
            "two people play football",
            ["play"],
            [("two people", "ARG0", 0), ("football", "ARG1", 0)],
        ),
        (
            "a woman cuts an onion with a knife and cooks it",
            ["cuts", "cooks"],
            [
                ("woman", "ARG0", 0),
                ("onion", "ARG1", 0),
                ("knife", "ARGM-COM", 0),
                ("it", "ARG1", 1),
            ],
        ),
        (
            "a purple heart bounces up and down",
            ["bounces up and down"],
            [("purple heart", "ARG0", 0)],
        ),
        ("a cat", [], [("cat", "NOUN", -1)]),
    ],
)
def test_decompositions(sentence: str, verbs: list[str], args: list[tuple]) -> None:
    assert _phrases(sentence) == (verbs, args)


def test_mirrored_actions_keep_their_direction_in_the_verb_span() -> None:
    left, _ = _phrases("a star moves left")
    right, _ = _phrases("a star moves right")
    assert left == ["moves left"] and right == ["moves right"]


def test_caps_on_phrases() -> None:
    sentence = "a dog runs , a cat jumps , a bird sings , a man walks , a fish swims"
    words = (sentence + " , a red ball , a blue box , a car").split(" ")
    d = decompose(words, max_verbs=4, max_args=6)
    assert len(d.verbs) == 4 and len(d.args) == 6
    assert all(a.parent < 4 for a in d.args)


def test_lemmas() -> None:
    d = decompose(["the", "boys", "were", "running", "and", "jumped"])
    assert [w.lemma for w in d.words if w.pos in {"VERB", "NOUN"}] == ["boy", "run", "jump"]
