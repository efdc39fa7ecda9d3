"""The text side of a search: sentences encoded by the text branch, batched where that gives
each sentence what it gets alone, and the most recent ones remembered."""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from model import HANet, TextEmbeddings


class QueryCache:
    """The text branch's output for the ``size`` most recent queries: a repeated query (the
    page searching again, a popular sentence) skips the text tower. ``size`` 0 keeps none."""

    def __init__(self, model: HANet, size: int = 1024) -> None:
        self.model, self.size = model, size
        self._items: OrderedDict[str, TextEmbeddings] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def encode(self, query: str) -> TextEmbeddings:
        return self.encode_many([query])[0]

    def encode_many(self, queries: list[str]) -> list[TextEmbeddings]:
        """Each query's text embeddings (one row each), the ones not remembered encoded in one
        batch (a query repeated within ``queries`` once)."""
        found: dict[str, TextEmbeddings | None] = {}
        with self._lock:
            for query in queries:
                if query in found:
                    self.hits += 1
                elif query in self._items:
                    self._items.move_to_end(query)
                    self.hits += 1
                    found[query] = self._items[query]
                else:
                    self.misses += 1
                    found[query] = None
        missing = [q for q, text in found.items() if text is None]
        if missing:
            found.update(zip(missing, encode_queries(self.model, missing), strict=True))
            if self.size:
                with self._lock:
                    for query in missing:
                        self._items[query] = found[query]
                    while len(self._items) > self.size:
                        self._items.popitem(last=False)
        return [found[q] for q in queries]


def encode_queries(model: HANet, queries: list[str]) -> list[TextEmbeddings]:
    """Each sentence's text embeddings (one row each, on the CPU): from one text-branch batch,
    or one sentence at a time where the batch would change them (``batch_invariant``). Rows are
    copied out of the batch: a remembered query keeps its own row, not the whole batch."""
    if len(queries) == 1:
        return [model.encode_text(queries).to("cpu")]
    if not batch_invariant(model):
        return [model.encode_text([q]).to("cpu") for q in queries]
    text = model.encode_text(queries).to("cpu")
    return [text.select([i]) for i in range(len(queries))]


def batch_invariant(model: HANet) -> bool:
    """Whether the text branch encodes a sentence the same in any batch (to float rounding):
    not with the int8 text tower (``model.speed.quantize_text_tower``), whose dynamic
    quantisation scales each layer's input by the whole batch's range, so a sentence's
    embedding would move with the sentences it happens to be batched with."""
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    return not any(isinstance(m, dynamic) for m in model.text.modules())
