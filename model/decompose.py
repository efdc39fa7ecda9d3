"""Offline decomposition of a sentence into verb spans and argument (noun-phrase) spans.

The reference HANet code builds its sentence graph with a semantic-role-labelling model; no such
model can be downloaded at run time here. We tag words with ``lemminflect``'s lexicon, which ships
inside its wheel (about 10 MB, no network, no model files to fetch) and gives every reading of a
word (``moves``: NOUN or VERB), then choose among the readings with a few English word-order rules
and a closed-class word list. spaCy's small English pipeline was measured here and mis-tags template
captions ("a small red star moves left": "moves" as a noun) while costing 2.9 s to load, so the
lexicon approach is both faster and better on the captions this service sees.

The output is a small graph in the spec's terms (section 3.2): verb nodes, argument nodes with a
role, and for every argument the verb it belongs to (or the root).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from lemminflect import getAllLemmas

DET = frozenset(
    "a all an another any both each every her his its my no our some that the their these this "
    "those your".split()
)
NUM = frozenset("eight few five four many nine one seven several six ten three two".split())
PRON = frozenset(
    "anyone everybody everyone he him i it nobody she somebody someone something them there they "
    "us we who which you".split()
)
AUX = frozenset(
    "am are be been being can could did do does had has have is may might must shall should was "
    "were will would".split()
)
CONJ = frozenset("after and as before but or so then until when while".split())
# Question words ("shows how to serve it"): neither an entity nor a verb.
WH = frozenset("how what where whether why".split())
ADP = frozenset(
    "about above across against along among at behind below beside between by during for from "
    "in inside into near of on onto outside over past through to toward towards under upon "
    "with within without".split()
)
# Words that, right after a verb, say where it goes: they belong to the verb span, since they
# tell mirrored actions apart ("moves left" / "moves right").
DIRECTIONS = frozenset(
    "anticlockwise around away back backward backwards clockwise counterclockwise down downward "
    "downwards forward forwards left off out right sideways up upward upwards".split()
)
# Directions that, before a determiner and not after a verb, are prepositions: "drives a car
# down the highway" (a verb's "moves down" stays a particle).
PREPOSITIONAL_DIRECTIONS = frozenset("around down off out up".split())
# A direction said as a noun ("to the left") joins the verb span too.
DIRECTION_NOUNS = frozenset("bottom center centre left middle right side top".split())

_LOCATIVE = frozenset(
    "above against at behind below beside in inside near on outside over under upon within".split()
)
_DIRECTIONAL = frozenset(
    "across along around down from into off onto out past through to toward towards up".split()
)
_ADP_ROLE = {"with": "ARGM-COM", "for": "ARGM-PRP", "by": "ARG0", "about": "ARG1", "of": "ARG1"}
_VERB_ENDINGS = ("s", "ed", "ing")
_NEGATIONS = frozenset({"not", "never", "n't"})
_IRREGULAR_PLURALS = frozenset("children feet geese men mice people teeth women".split())


@dataclass(frozen=True)
class TaggedWord:
    text: str
    pos: str  # DET NUM PRON AUX CONJ ADP WH PUNCT NOUN ADJ VERB ADV PART
    lemma: str


@dataclass(frozen=True)
class Phrase:
    """Words ``start`` (inclusive) to ``end`` (exclusive) of the sentence."""

    start: int
    end: int
    role: str
    head: str  # lemma of the head word (verb, or the noun that ends the phrase)
    parent: int = -1  # for arguments: index of the verb phrase they belong to; -1 = root


@dataclass(frozen=True)
class Decomposition:
    words: tuple[TaggedWord, ...]
    verbs: tuple[Phrase, ...]
    args: tuple[Phrase, ...]


def _closed_class(word: str, prev: str | None = None) -> str | None:
    if word == "that" and prev in {"NOUN", "PRON"}:
        return "PRON"  # relative pronoun: "a star that moves"
    if word in _NEGATIONS:
        return "ADV"
    for tag, lexicon in (
        ("DET", DET),
        ("NUM", NUM),
        ("PRON", PRON),
        ("AUX", AUX),
        ("CONJ", CONJ),
        ("ADP", ADP),
        ("WH", WH),
    ):
        if word in lexicon:
            return tag
    if word.isdigit():
        return "NUM"
    if not any(ch.isalnum() for ch in word):
        return "PUNCT"
    return None


@lru_cache(maxsize=65536)
def _readings(word: str) -> dict[str, str]:
    """Open-class readings of ``word``: {POS: lemma}. Unknown words: -ing/-ed read as verbs,
    anything else as a noun (names, rare objects)."""
    lemmas = getAllLemmas(word)
    readings = {
        pos: forms[0] for pos, forms in lemmas.items() if pos in {"NOUN", "VERB", "ADJ", "ADV"}
    }
    if readings:
        return readings
    if word.endswith(("ing", "ed")) and len(word) > 4:
        return {"VERB": word}
    return {"NOUN": word}


def _is_preposition(words: list[str], i: int) -> bool:
    """A direction word used as a preposition: a determiner follows ("down the highway")."""
    return words[i] in PREPOSITIONAL_DIRECTIONS and i + 1 < len(words) and words[i + 1] in DET


def _is_infinitive(words: list[str], i: int) -> bool:
    """A bare verb after "to" with its object next: "to catch a ball", "how to serve it"
    ("goes to school" keeps its noun: no object follows)."""
    readings = _readings(words[i])
    return (
        i > 0
        and words[i - 1] == "to"
        and readings.get("VERB") == words[i]
        and i + 1 < len(words)
        and _closed_class(words[i + 1]) in {"DET", "PRON", "NUM"}
    )


def _is_gerund_modifier(words: list[str], i: int, prev: str) -> bool:
    """An -ing word between a determiner or adjective and a noun modifies the noun: "a boxing
    ring", "the swimming pool"."""
    return (
        prev in {"DET", "ADJ", "NUM"}
        and words[i].endswith("ing")
        and i + 1 < len(words)
        and _closed_class(words[i + 1]) is None
        and "NOUN" in _readings(words[i + 1])
    )


def _is_inflected_verb(word: str, readings: dict[str, str]) -> bool:
    return "VERB" in readings and (
        "NOUN" not in readings or (word.endswith(_VERB_ENDINGS) and readings["VERB"] != word)
    )


def _is_plural_noun(word: str) -> bool:
    noun = _readings(word).get("NOUN")
    return word in _IRREGULAR_PLURALS or (noun is not None and noun != word)


def _nominal(readings: dict[str, str]) -> bool:
    return "NOUN" in readings or "ADJ" in readings


def _tag_run(words: list[str], start: int, tags: list[str]) -> int:
    """Tag a run of adjective/noun-capable words from ``start``; a verb-inflected word after
    the first one ends the run as its verb ("a big green square slides"). Returns the next index."""
    end = start
    while (
        end < len(words)
        and _closed_class(words[end]) is None
        and not _is_preposition(words, end)
        and _nominal(_readings(words[end]))
    ):
        end += 1
    verb_at = next(
        (k for k in range(start + 1, end) if _is_inflected_verb(words[k], _readings(words[k]))),
        None,
    )
    if verb_at is None:  # a plural subject takes the base form: "two people play football"
        verb_at = next(
            (
                k
                for k in range(start + 1, end - 1)
                if "VERB" in _readings(words[k]) and _is_plural_noun(words[k - 1])
            ),
            None,
        )
    stop = verb_at if verb_at is not None else end
    for k in range(start, stop):
        readings = _readings(words[k])
        is_head = k == stop - 1
        if is_head:
            tags.append("NOUN" if "NOUN" in readings else "ADJ")
        else:
            tags.append("ADJ" if "ADJ" in readings else "NOUN")
    if verb_at is not None:
        tags.append("VERB")
        return verb_at + 1
    return end


def tag_words(words: list[str]) -> list[TaggedWord]:
    """Part-of-speech tags and lemmas for lower-cased words, chosen by context."""
    tags: list[str] = []
    i = 0
    while i < len(words):
        tag = _tag_in_context(words, i, tags)
        if tag is None:  # adjectives and nouns, perhaps ending in a verb: tagged as a run
            i = _tag_run(words, i, tags)
            continue
        tags.append(tag)
        i += 1
    return [TaggedWord(w, t, _lemma(w, t)) for w, t in zip(words, tags, strict=True)]


def _tag_in_context(words: list[str], i: int, tags: list[str]) -> str | None:
    """The tag of word ``i`` after ``tags`` (the words before it), or None when it starts a
    run of adjective/noun-capable words (``_tag_run`` tags those)."""
    word = words[i]
    prev = tags[-1] if tags else "START"
    closed = _closed_class(word, prev)
    last_content = next((t for t in reversed(tags) if t not in {"CONJ", "PUNCT"}), "START")
    if closed is not None:
        return closed
    if word in DIRECTIONS and (
        prev in {"VERB", "PART"} or (prev == "CONJ" and last_content == "PART")
    ):
        return "PART"
    if _is_preposition(words, i):
        return "ADP"
    readings = _readings(word)
    if "VERB" in readings and (
        prev in {"AUX", "NOUN", "PRON"}
        or (i > 0 and words[i - 1] in _NEGATIONS)
        or (prev == "CONJ" and _coordinated_verb(words, i, last_content))
        or _is_infinitive(words, i)
    ):
        return "VERB"
    if set(readings) == {"ADV"} or (
        prev in {"VERB", "PART"} and "ADV" in readings and not _nominal(readings)
    ):
        return "ADV"
    if _is_gerund_modifier(words, i, prev):
        return "ADJ"
    if _nominal(readings):
        return None
    return "VERB" if "VERB" in readings else next(iter(readings))


def _coordinated_verb(words: list[str], i: int, last_content: str) -> bool:
    """After "and"/"then": a verb if the clause before ended in a verb ("sings and dances"),
    or if it is inflected and an object or the sentence's end follows ("and cooks it")."""
    if last_content in {"VERB", "PART", "ADV"}:
        return True
    following = _closed_class(words[i + 1]) if i + 1 < len(words) else "END"
    return _is_inflected_verb(words[i], _readings(words[i])) and following in {
        "DET",
        "PRON",
        "ADP",
        "PUNCT",
        "NUM",
        "WH",
        "END",
    }


def _lemma(word: str, pos: str) -> str:
    if pos in {"NOUN", "VERB", "ADJ", "ADV"}:
        return _readings(word).get(pos, word)
    return word


def _verb_span_end(tagged: list[TaggedWord], start: int) -> int:
    """End of a verb phrase: the verb(s), then particles and directions ("to the left")."""
    end = start + 1
    while end < len(tagged):
        word = tagged[end]
        if word.pos in {"VERB", "PART"} or (word.pos == "ADV" and word.text not in CONJ):
            end += 1
            continue
        if word.text in {"and", "or"} and end + 1 < len(tagged) and tagged[end + 1].pos == "PART":
            end += 2  # "bounces up and down"
            continue
        # "to the left", "towards the top": a direction said as a prepositional phrase.
        k = end
        if word.pos == "ADP":
            k += 1
            if k < len(tagged) and tagged[k].pos == "DET":
                k += 1
            if (
                k < len(tagged)
                and tagged[k].text in DIRECTION_NOUNS
                and (k + 1 == len(tagged) or tagged[k + 1].pos not in {"NOUN", "ADJ"})
            ):
                end = k + 1
                continue
        break
    return end


def _arg_role(prep: str | None, seen_verb: bool) -> str:
    if prep is None:
        return "ARG1" if seen_verb else "ARG0"
    if prep in _LOCATIVE:
        return "ARGM-LOC"
    if prep in _DIRECTIONAL:
        return "ARGM-DIR"
    return _ADP_ROLE.get(prep, "ARG2")


def decompose(words: list[str], max_verbs: int = 4, max_args: int = 6) -> Decomposition:
    """Verb phrases and argument phrases of a sentence given as lower-cased words."""
    tagged = tag_words(words)
    verbs: list[Phrase] = []
    args: list[tuple[int, int, str, str, int]] = []  # start, end, role, head, clause
    clause, i, prep = 0, 0, None
    clause_verbs: dict[int, list[int]] = {}
    while i < len(tagged):
        word = tagged[i]
        if word.pos in {"CONJ", "PUNCT"}:
            clause, prep = clause + (1 if word.pos == "CONJ" or word.text in ",;." else 0), None
            i += 1
        elif word.pos == "VERB":
            end = _verb_span_end(tagged, i)
            clause_verbs.setdefault(clause, []).append(len(verbs))
            verbs.append(Phrase(i, end, "V", word.lemma))
            i, prep = end, None
        elif word.pos in {"NOUN", "ADJ", "NUM", "PRON"}:
            end = i + 1
            while end < len(tagged) and tagged[end].pos in {"NOUN", "ADJ", "NUM"}:
                end += 1
            heads = [w for w in tagged[i:end] if w.pos in {"NOUN", "PRON"}]
            if heads:  # a bare adjective ("is red") is not an entity
                role = _arg_role(prep, bool(clause_verbs.get(clause)))
                args.append((i, end, role, heads[-1].lemma, clause))
            i, prep = end, None
        else:
            prep = word.text if word.pos == "ADP" else prep
            i += 1
    verbs = verbs[:max_verbs]
    phrases = []
    for start, end, role, head, arg_clause in args[:max_args]:
        in_clause = [v for v in clause_verbs.get(arg_clause, []) if v < len(verbs)]
        before = [v for v in in_clause if verbs[v].start < start]
        after = [v for v in in_clause if verbs[v].start > start]
        parent = (
            after[0]
            if role == "ARG0" and after
            else before[-1]
            if before
            else after[0]
            if after
            else -1
        )
        if not verbs:
            role = "NOUN"  # spec 3.2: with no verbs, noun chunks become NOUN nodes
        phrases.append(Phrase(start, end, role, head, parent))
    return Decomposition(tuple(tagged), tuple(verbs), tuple(phrases))
