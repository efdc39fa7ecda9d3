"""The sentence decomposer on natural, non-template English captions (MSR-VTT-like, written for
this test): the expected verbs (lemmas, in order) and arguments (head lemma, and the lemma of
the verb each belongs to, or null without one).

``natural_captions.json`` was used to find and fix the decomposer's plain errors (gerund noun
modifiers, "to" + verb, "down the highway", question words): every caption must decompose as
expected (27 / 32 agreed before the fixes). ``natural_captions_heldout.json`` was written before
those fixes and measured after them (13 / 16); one lexicon gap it showed ("during" was not a
preposition) was then filled, so it is no longer quite blind: 14 / 16, the floor held here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.decompose import decompose

HERE = Path(__file__).parent
DEVELOPMENT = json.loads((HERE / "natural_captions.json").read_text())
HELD_OUT = json.loads((HERE / "natural_captions_heldout.json").read_text())
HELD_OUT_AGREEMENT = 14 / 16


def _parse(caption: str) -> dict:
    d = decompose(caption.split(), max_verbs=4, max_args=6)
    return {
        "verbs": [v.head for v in d.verbs],
        "args": [[a.head, d.verbs[a.parent].head if a.parent >= 0 else None] for a in d.args],
    }


@pytest.mark.parametrize("item", DEVELOPMENT, ids=[i["caption"] for i in DEVELOPMENT])
def test_natural_caption_decomposes_as_expected(item: dict) -> None:
    assert _parse(item["caption"]) == {"verbs": item["verbs"], "args": item["args"]}


def test_held_out_agreement_holds() -> None:
    agree = [_parse(i["caption"]) == {"verbs": i["verbs"], "args": i["args"]} for i in HELD_OUT]
    assert sum(agree) / len(agree) >= HELD_OUT_AGREEMENT, [
        i["caption"] for i, ok in zip(HELD_OUT, agree, strict=True) if not ok
    ]


def test_the_sets_are_natural_and_sized_as_documented() -> None:
    assert len(DEVELOPMENT) == 32 and len(HELD_OUT) == 16
    captions = [i["caption"] for i in DEVELOPMENT + HELD_OUT]
    assert len(set(captions)) == len(captions)
    # every expected argument's verb is one of the caption's verbs
    for item in DEVELOPMENT + HELD_OUT:
        assert all(v is None or v in item["verbs"] for _, v in item["args"]), item["caption"]
