"""Captions of procedural scenes: several templates and synonyms per scene, every word's part
of speech and lemma known, and hard distractor captions (a mirrored action, events swapped)."""

from __future__ import annotations

import numpy as np

from corpus.scene import MIRRORED, Step, SynthVideo, Thing

CAPTIONS_PER_VIDEO = 6

# Each phrase: list of (word, part of speech, lemma). The generator knows every tag.
_VERB_PHRASES: dict[str, list[list[tuple[str, str, str]]]] = {
    "move_left": [
        [("moves", "VERB", "move"), ("left", "PART", "left")],
        [
            ("slides", "VERB", "slide"),
            ("to", "ADP", "to"),
            ("the", "DET", "the"),
            ("left", "NOUN", "left"),
        ],
        [("goes", "VERB", "go"), ("left", "PART", "left")],
    ],
    "move_right": [
        [("moves", "VERB", "move"), ("right", "PART", "right")],
        [
            ("slides", "VERB", "slide"),
            ("to", "ADP", "to"),
            ("the", "DET", "the"),
            ("right", "NOUN", "right"),
        ],
        [("goes", "VERB", "go"), ("right", "PART", "right")],
    ],
    "move_up": [
        [("moves", "VERB", "move"), ("up", "PART", "up")],
        [("rises", "VERB", "rise")],
        [("goes", "VERB", "go"), ("up", "PART", "up")],
    ],
    "move_down": [
        [("moves", "VERB", "move"), ("down", "PART", "down")],
        [("falls", "VERB", "fall")],
        [("goes", "VERB", "go"), ("down", "PART", "down")],
    ],
    "grow": [
        [("grows", "VERB", "grow")],
        [("expands", "VERB", "expand")],
        [("gets", "VERB", "get"), ("bigger", "ADJ", "big")],
    ],
    "shrink": [
        [("shrinks", "VERB", "shrink")],
        [("contracts", "VERB", "contract")],
        [("gets", "VERB", "get"), ("smaller", "ADJ", "small")],
    ],
    "appear": [
        [("appears", "VERB", "appear")],
        [("fades", "VERB", "fade"), ("in", "PART", "in")],
        [("shows", "VERB", "show"), ("up", "PART", "up")],
    ],
    "disappear": [
        [("disappears", "VERB", "disappear")],
        [("vanishes", "VERB", "vanish")],
        [("fades", "VERB", "fade"), ("out", "PART", "out")],
    ],
    "rotate": [
        [("rotates", "VERB", "rotate")],
        [("spins", "VERB", "spin")],
        [("turns", "VERB", "turn"), ("around", "PART", "around")],
    ],
    "bounce": [
        [("bounces", "VERB", "bounce")],
        [("hops", "VERB", "hop")],
        [("jumps", "VERB", "jump")],
    ],
    "blink": [
        [("blinks", "VERB", "blink")],
        [("flashes", "VERB", "flash")],
        [("flickers", "VERB", "flicker")],
    ],
    "still": [
        [("stays", "VERB", "stay"), ("still", "ADV", "still")],
        [("does", "AUX", "do"), ("not", "PART", "not"), ("move", "VERB", "move")],
        [("rests", "VERB", "rest")],
    ],
}
_SIZE_WORDS = {"small": ["small", "little", "tiny"], "large": ["large", "big", "huge"]}
_BACKGROUND_WORDS = {
    "black": "black",
    "gray": "gray",
    "navy": "blue",
    "brown": "brown",
    "gradient": "dark",
    "noisy": "grainy",
}


Word = tuple[str, str, str]  # text, part of speech, lemma


def _noun_phrase(thing: Thing, rng: np.random.Generator, det: str = "a") -> list[Word]:
    words: list[Word] = [(det, "DET", det)]
    if rng.random() < 0.7:
        size = str(rng.choice(_SIZE_WORDS[thing.size]))
        words.append(
            (size, "ADJ", {"little": "little", "tiny": "tiny", "huge": "huge"}.get(size, size))
        )
    words.append((thing.colour, "ADJ", thing.colour))
    words.append((thing.shape, "NOUN", thing.shape))
    if det == "a" and words[1][0][0] in "aeiou":
        words[0] = ("an", "DET", "a")
    return words


def _verb_phrase(action: str, rng: np.random.Generator, choice: int | None = None) -> list[Word]:
    options = _VERB_PHRASES[action]
    return list(options[int(rng.integers(len(options))) if choice is None else choice])


def _caption_one(video: SynthVideo, rng: np.random.Generator, template: int) -> list[Word]:
    main = video.steps[0]
    a = _noun_phrase(video.things[main.thing], rng)
    vp = _verb_phrase(main.action, rng)
    others = [s for s in video.steps[1:] if s.action == "still"]
    bg = _BACKGROUND_WORDS[video.background]
    templates = [
        lambda: a + vp,
        lambda: (
            [("there", "PRON", "there"), ("is", "AUX", "be")] + a + [("that", "PRON", "that")] + vp
        ),
        lambda: (
            a
            + vp
            + [
                ("on", "ADP", "on"),
                ("a", "DET", "a"),
                (bg, "ADJ", bg),
                ("background", "NOUN", "background"),
            ]
        ),
        lambda: [("in", "ADP", "in"), ("this", "DET", "this"), ("video", "NOUN", "video")] + a + vp,
        lambda: (
            [("we", "PRON", "we"), ("see", "VERB", "see")] + a + [("that", "PRON", "that")] + vp
        ),
    ]
    if others:
        d = _noun_phrase(video.things[others[0].thing], rng)
        templates.append(
            lambda: a + vp + [("while", "CONJ", "while")] + d + _verb_phrase("still", rng)
        )
        templates.append(lambda: a + vp + [("next", "ADV", "next"), ("to", "ADP", "to")] + d)
    return templates[template % len(templates)]()


def _caption_two(
    video: SynthVideo,
    rng: np.random.Generator,
    template: int,
    choices: tuple[int | None, int | None] = (None, None),
) -> list[Word]:
    first, second = video.steps[0], video.steps[1]
    a = _noun_phrase(video.things[first.thing], rng)
    same = first.thing == second.thing
    b = [("it", "PRON", "it")] if same else _noun_phrase(video.things[second.thing], rng)
    v1 = _verb_phrase(first.action, rng, choices[0])
    v2 = _verb_phrase(second.action, rng, choices[1])
    comma, then = (",", "PUNCT", ","), ("then", "CONJ", "then")
    templates = [
        lambda: a + v1 + [comma, then] + b + v2,
        lambda: [("first", "ADV", "first")] + a + v1 + [("and", "CONJ", "and"), then] + b + v2,
        lambda: a + v1 + [("before", "CONJ", "before")] + b + v2,
        lambda: [("after", "CONJ", "after")] + a + v1 + [comma] + b + v2,
        lambda: (
            [("in", "ADP", "in"), ("this", "DET", "this"), ("video", "NOUN", "video")]
            + a
            + v1
            + [comma, then]
            + b
            + v2
        ),
    ]
    if not same:
        templates.append(lambda: b + v2 + [("after", "CONJ", "after")] + a + v1)
    return templates[template % len(templates)]()


def _text(words: list[Word]) -> str:
    return " ".join(w for w, _, _ in words).replace(" ,", ",")


def _as_caption(words: list[Word]) -> dict:
    return {
        "text": _text(words),
        "words": [w for w, _, _ in words],
        "pos": [p for _, p, _ in words],
        "lemmas": [lm for _, _, lm in words],
    }


def captions_for(video: SynthVideo) -> dict:
    """The video's captions (distinct, several templates) and, where there is one, a hard
    distractor caption differing only by a mirrored action or by the order of events."""
    rng = np.random.default_rng([video.seed, int(video.id[5:]), 1])
    acting = [s for s in video.steps if s.action != "still" or s.thing == 0]
    two = len(acting) >= 2 and acting[1].start > acting[0].start
    make = _caption_two if two else _caption_one
    captions, seen = [], set()
    for attempt in range(60):
        words = make(video, rng, attempt)
        if _text(words) not in seen:
            seen.add(_text(words))
            captions.append(_as_caption(words))
        if len(captions) == CAPTIONS_PER_VIDEO:
            break
    out = {"captions": captions}
    mirrored = next((s for s in video.steps if s.action in MIRRORED), None)
    if mirrored is not None:
        steps = [
            Step(s.thing, MIRRORED[s.action], s.start, s.end) if s is mirrored else s
            for s in video.steps
        ]
        out["mirrored"] = [_canonical(video, two), _canonical(_with_steps(video, steps), two)]
    if two and acting[0].thing != acting[1].thing:
        first, second = acting[0], acting[1]
        steps = [
            Step(second.thing, second.action, first.start, first.end),
            Step(first.thing, first.action, second.start, second.end),
        ]
        out["swapped"] = [_canonical(video, two), _canonical(_with_steps(video, steps), two)]
    return out


def _with_steps(video: SynthVideo, steps: list[Step]) -> SynthVideo:
    return SynthVideo(video.id, video.things, steps, video.background, video.split, video.seed)


def _canonical(video: SynthVideo, two: bool) -> dict:
    """A fixed-wording caption (first template, first synonyms, size always said), so that two
    canonical captions differ only where their scenes differ."""
    rng = _AlwaysSize()
    if two:
        return _as_caption(_caption_two(video, rng, 0, (0, 0)))
    main = video.steps[0]
    return _as_caption(
        _noun_phrase(video.things[main.thing], rng) + _verb_phrase(main.action, rng, 0)
    )


class _AlwaysSize:
    """A stand-in random source for canonical captions: always says the size, first synonym."""

    def random(self) -> float:
        return 0.0

    def choice(self, options):
        return options[0]

    def integers(self, n: int) -> int:
        return 0
