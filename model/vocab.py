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
