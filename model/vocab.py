"""Concept vocabularies: the verbs and nouns the concept classifiers predict."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConceptVocab:
    verbs: tuple[str, ...]
    nouns: tuple[str, ...]

    def to_dict(self) -> dict[str, list[str]]:
        return {"verbs": list(self.verbs), "nouns": list(self.nouns)}

    @classmethod
    def from_dict(cls, data: dict[str, list[str]]) -> ConceptVocab:
        return cls(tuple(data["verbs"]), tuple(data["nouns"]))


# Words that name no visual concept (spec section 5 drops stopwords before counting).
VERB_STOPWORDS = frozenset("be have do see seem let make".split())
NOUN_STOPWORDS = frozenset("video clip thing something someone there it".split())


def caption_concepts(
    words: list[str], pos: list[str] | None = None, lemmas: list[str] | None = None
) -> tuple[set[str], set[str]]:
    """(verb lemmas, noun lemmas) of a caption. Tags and lemmas come from the caller when known
    (the synthetic corpus), otherwise from the offline tagger."""
    if pos is None or lemmas is None:
        from model.decompose import tag_words

        tagged = tag_words(words)
        pos, lemmas = [t.pos for t in tagged], [t.lemma for t in tagged]
    verbs = {lm for p, lm in zip(pos, lemmas, strict=True) if p == "VERB"} - VERB_STOPWORDS
    nouns = {lm for p, lm in zip(pos, lemmas, strict=True) if p == "NOUN"} - NOUN_STOPWORDS
    return verbs, nouns


def build_vocab(
    concepts: list[tuple[set[str], set[str]]], max_verbs: int, max_nouns: int
) -> ConceptVocab:
    """The most frequent verbs and nouns over the training captions' concepts (counted once per
    caption), ties broken alphabetically so the vocabulary is deterministic."""
    from collections import Counter

    verb_counts: Counter[str] = Counter()
    noun_counts: Counter[str] = Counter()
    for verbs, nouns in concepts:
        verb_counts.update(verbs)
        noun_counts.update(nouns)

    def top(counts: Counter[str], k: int) -> tuple[str, ...]:
        return tuple(w for w, _ in sorted(counts.items(), key=lambda x: (-x[1], x[0]))[:k])

    return ConceptVocab(top(verb_counts, max_verbs), top(noun_counts, max_nouns))


def concept_targets(
    vocab: ConceptVocab, caption: tuple[set[str], set[str]], video: list[tuple[set[str], set[str]]]
):
    """Multi-hot labels and masks for one caption: 1 for its own concepts; concepts that another
    caption of the same video names but this one does not are masked out (neither positive nor
    negative). Returns ((verb_labels, verb_mask), (noun_labels, noun_mask)) as float lists."""
    out = []
    for part, names in ((0, vocab.verbs), (1, vocab.nouns)):
        own = caption[part]
        others = set().union(*(c[part] for c in video)) - own
        labels = [1.0 if n in own else 0.0 for n in names]
        mask = [0.0 if n in others else 1.0 for n in names]
        out.append((labels, mask))
    return tuple(out)
