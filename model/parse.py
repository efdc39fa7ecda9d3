"""Sentences -> CLIP token ids plus the sentence graph, as padded tensors for the text branch."""

from __future__ import annotations

from dataclasses import dataclass

import regex
import torch
from open_clip.tokenizer import SimpleTokenizer
from torch import Tensor

from model.config import ROLES, TEXT_GRAPHS
from model.decompose import Decomposition, Phrase, decompose

ROLE_IDS = {role: i for i, role in enumerate(ROLES)}
WORD_CACHE_SIZE = 1 << 16  # distinct words whose tokens a parser remembers


@dataclass
class ParsedBatch:
    """N sentences, L tokens (SOT + words + EOT, zero-padded), Pv verb and Pa argument slots.

    token_ids (N, L) long; word_mask (N, L) bool: word tokens (not SOT/EOT/padding);
    eot_index (N,) long; verb_spans (N, Pv, L) / arg_spans (N, Pa, L) bool token membership;
    verb_mask (N, Pv) / arg_mask (N, Pa) bool; arg_roles (N, Pa) long;
    adjacency (N, 1 + Pv + Pa, 1 + Pv + Pa) bool, node 0 the root, then the verb slots, then
    the argument slots; adjacency[n, i, j] says node i receives a message from node j (the
    parser's ``graph`` says which edges there are)."""

    token_ids: Tensor
    word_mask: Tensor
    eot_index: Tensor
    verb_spans: Tensor
    arg_spans: Tensor
    verb_mask: Tensor
    arg_mask: Tensor
    arg_roles: Tensor
    adjacency: Tensor
    decompositions: list[Decomposition]

    def to(self, device: torch.device | str) -> ParsedBatch:
        moved = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, Tensor)}
        return ParsedBatch(**moved, decompositions=self.decompositions)


class SentenceParser:
    """Splits text the way CLIP's BPE tokenizer does, so each word's tokens are known, and
    decomposes the words into verb and argument phrases joined by ``graph``'s edges
    (``HANetCfg.text_graph``: "reference" or "extended")."""

    def __init__(self, max_tokens: int, max_verbs: int, max_args: int, graph: str) -> None:
        if graph not in TEXT_GRAPHS:
            raise ValueError(f"graph must be one of {TEXT_GRAPHS}, not {graph!r}")
        self.tokenizer = SimpleTokenizer(context_length=max_tokens)
        self.max_tokens, self.max_verbs, self.max_args = max_tokens, max_verbs, max_args
        self.graph = graph
        # Each word's BPE pieces, remembered: words repeat across queries and captions, and
        # the tokenizer cleans every word again (ftfy) before encoding it.
        self._known: dict[str, tuple[int, ...]] = {}

    def _pieces(self, word: str) -> tuple[int, ...]:
        pieces = self._known.get(word)
        if pieces is None:
            pieces = tuple(self.tokenizer.encode(word))
            if len(self._known) < WORD_CACHE_SIZE:
                self._known[word] = pieces
        return pieces

    def words(self, sentence: str) -> list[str]:
        return regex.findall(self.tokenizer.pat, self.tokenizer.clean_fn(sentence))

    def __call__(self, sentences: list[str]) -> ParsedBatch:
        rows = [self._parse_one(s) for s in sentences]
        n, length = len(rows), max(len(r[0]) for r in rows)
        pv, pa = self.max_verbs, self.max_args
        batch = ParsedBatch(
            token_ids=torch.zeros(n, length, dtype=torch.long),
            word_mask=torch.zeros(n, length, dtype=torch.bool),
            eot_index=torch.zeros(n, dtype=torch.long),
            verb_spans=torch.zeros(n, pv, length, dtype=torch.bool),
            arg_spans=torch.zeros(n, pa, length, dtype=torch.bool),
            verb_mask=torch.zeros(n, pv, dtype=torch.bool),
            arg_mask=torch.zeros(n, pa, dtype=torch.bool),
            arg_roles=torch.zeros(n, pa, dtype=torch.long),
            adjacency=_empty_graph(n, 1 + pv + pa, self_loops=self.graph == "extended"),
            decompositions=[r[2] for r in rows],
        )
        for i, (ids, word_tokens, dec) in enumerate(rows):
            batch.token_ids[i, : len(ids)] = torch.tensor(ids)
            batch.word_mask[i, 1 : len(ids) - 1] = True
            batch.eot_index[i] = len(ids) - 1
            self._fill_graph(batch, i, word_tokens, dec)
        return batch

    def _parse_one(self, sentence: str) -> tuple[list[int], list[tuple[int, int]], Decomposition]:
        """Token ids with SOT/EOT, each word's token range, and the decomposition."""
        words = self.words(sentence)
        ids, spans = [self.tokenizer.sot_token_id], []
        budget = self.max_tokens - 1  # room for EOT
        for word in words:
            pieces = self._pieces(word)
            if len(ids) + len(pieces) > budget:
                break
            spans.append((len(ids), len(ids) + len(pieces)))
            ids.extend(pieces)
        ids.append(self.tokenizer.eot_token_id)
        return ids, spans, decompose(words[: len(spans)], self.max_verbs, self.max_args)

    def _fill_graph(
        self, batch: ParsedBatch, i: int, word_tokens: list[tuple[int, int]], dec: Decomposition
    ) -> None:
        def tokens(phrase: Phrase) -> slice:
            return slice(word_tokens[phrase.start][0], word_tokens[phrase.end - 1][1])

        pv, adjacency = self.max_verbs, batch.adjacency[i]
        extended = self.graph == "extended"
        for v, verb in enumerate(dec.verbs):
            batch.verb_spans[i, v, tokens(verb)] = True
            batch.verb_mask[i, v] = True
            adjacency[1 + v, 0] = True  # the verb hears the root (rolegraphs.py: root -> verb)
            adjacency[0, 1 + v] = extended  # the root hears its verbs: extended graph only
        for a, arg in enumerate(dec.args):
            batch.arg_spans[i, a, tokens(arg)] = True
            batch.arg_mask[i, a] = True
            batch.arg_roles[i, a] = ROLE_IDS[arg.role]
            if arg.parent >= 0 or extended:  # reference: an argument without a verb is isolated
                head = 0 if arg.parent < 0 else 1 + arg.parent
                adjacency[head, 1 + pv + a] = adjacency[1 + pv + a, head] = True


def _empty_graph(n: int, nodes: int, self_loops: bool) -> Tensor:
    """(n, nodes, nodes) bool adjacency with no edges, or only self-loops."""
    if self_loops:
        return torch.eye(nodes, dtype=torch.bool).repeat(n, 1, 1)
    return torch.zeros(n, nodes, nodes, dtype=torch.bool)
