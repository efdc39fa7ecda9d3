"""Helpers of filtered FAISS searches (``index.vectors.FaissStore``): the stored ids inside id
ranges (a video's vectors are one range), selectors combined, searches made deeper."""

from __future__ import annotations

import faiss
import numpy as np


def sorted_ids(index: faiss.Index, cache: dict, key: object) -> np.ndarray:
    """An IDMap index's ids, sorted: kept in ``cache[key]`` until the index changes size."""
    cached = cache.get(key)
    if cached is not None and cached[0] is index and cached[1] == index.ntotal:
        return cached[2]
    ids = np.sort(faiss.vector_to_array(faiss.downcast_index(index).id_map))
    cache[key] = (index, index.ntotal, ids)
    return ids


def ids_in_ranges(stored: np.ndarray, first: np.ndarray, width: int) -> np.ndarray:
    """The ids of ``stored`` (sorted ascending) in any range [f, f + width) for f in
    ``first``: two binary searches per range, then one pass."""
    starts = np.searchsorted(stored, first)
    ends = np.searchsorted(stored, first + width)
    inside = np.zeros(len(stored) + 1, np.int32)  # +1 at each range's start, -1 past its end
    np.add.at(inside, starts, 1)
    np.add.at(inside, ends, -1)
    return np.ascontiguousarray(stored[np.cumsum(inside[:-1]) > 0])


def deeper(depth: int, share: float) -> int:
    """A search depth (nprobe, efSearch) for a filter keeping ``share`` of the vectors: as many
    allowed vectors met as the unfiltered depth meets vectors."""
    return int(np.ceil(depth / max(share, 1e-9)))


def both(a: faiss.IDSelector, b: faiss.IDSelector, refs: tuple) -> tuple[faiss.IDSelector, tuple]:
    """A selector of the ids both select, with every object it points to (``refs``: those of
    ``a`` and ``b``), which must outlive the search."""
    sel = faiss.IDSelectorAnd(a, b)
    return sel, (*refs, sel)
