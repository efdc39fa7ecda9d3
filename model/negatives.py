"""Hard negative captions for training (NegCLIP-style word swaps, Yuksekgonul et al. 2023).

A contrast caption differs from a true caption by one edit that makes it false for the video:
a direction or change of state turned into its opposite ("moves left" -> "moves right", "grows"
-> "shrinks", "appears" -> "disappears") or two events told in the other order ("A, then B"
-> "B, then A"; "before" <-> "after"). Ranked against its video's true caption, it teaches
what in-batch negatives almost never do: a bag of frames or words cannot tell the two apart.
The rules are plain English, so they apply to any caption dataset; a caption no rule fits has
no contrast caption.
"""

from __future__ import annotations

import random
import re

# Opposite pairs, each word or phrase matched whole and case-insensitively; both directions.
OPPOSITES: tuple[tuple[str, str], ...] = (
    ("left", "right"),
    ("moves up", "moves down"),
    ("goes up", "goes down"),
    ("rises", "falls"),
    ("grows", "shrinks"),
    ("expands", "contracts"),
    ("gets bigger", "gets smaller"),
    ("appears", "disappears"),
    ("fades in", "fades out"),
    ("opens", "closes"),
    ("enters", "leaves"),
    ("pushes", "pulls"),
    ("forward", "backward"),
    ("clockwise", "counterclockwise"),
    ("before", "after"),
)
_SWAP = {a: b for a, b in OPPOSITES} | {b: a for a, b in OPPOSITES}
_ALTERNATIVES = "|".join(sorted(map(re.escape, _SWAP), key=len, reverse=True))  # longest first
_WORDS = re.compile(rf"\b({_ALTERNATIVES})\b", re.IGNORECASE)
# "A, then B" / "first A and then B": clauses to swap (not when B refers back to A: "it", ...)
_THEN = re.compile(r"^(first )?(.+?)(, then | and then )(.+)$", re.IGNORECASE)
_PRONOUN = re.compile(r"^(it|he|she|they|this|that|then)\b", re.IGNORECASE)


def contrast_edits(caption: str) -> list[str]:
    """Every contrast caption of ``caption`` that one edit makes, in a fixed order."""
    out = []
    for match in _WORDS.finditer(caption):
        word = match.group(0)
        swap = _SWAP[word.lower()]
        swap = swap[:1].upper() + swap[1:] if word[:1].isupper() else swap
        out.append(caption[: match.start()] + swap + caption[match.end() :])
    then = _THEN.match(caption.strip())
    if then and not _PRONOUN.match(then.group(4)):
        first, a, sep, b = then.groups()
        out.append(f"{first or ''}{b.rstrip('.')}{sep}{a}")
    return [c for c in dict.fromkeys(out) if c.lower() != caption.lower()]


def contrast_caption(caption: str, rng: random.Random) -> str | None:
    """One contrast caption of ``caption`` picked with ``rng``, or None when no rule fits."""
    edits = contrast_edits(caption)
    return rng.choice(edits) if edits else None
