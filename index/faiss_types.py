"""What a FAISS factory string makes, as the vector store needs to know it: the index at the
bottom of the wrappers, how many vectors to collect before training it, and how to train it."""

from __future__ import annotations

import faiss


def innermost(index: faiss.Index) -> faiss.Index:
    """The index at the bottom of an IDMap2 (and of any pre-transform, such as OPQ)."""
    index = faiss.downcast_index(index)
    while hasattr(index, "index"):
        index = faiss.downcast_index(index.index)
    return index


def without_polysemous_training(index: faiss.Index) -> faiss.Index:
    """``index``, with a PQ at its bottom set to train without polysemous code ordering: FAISS
    does it by default, only a search with ``polysemous_ht`` > 0 uses it (never set here), and
    it is most of a PQ index's training time, for identical hits."""
    inner = innermost(index)
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False
    return index


def train_size(index: faiss.Index) -> int:
    """Vectors to collect before training an index type (0: it needs no training): 40 points
    per centroid (FAISS's k-means warns below 39), the centroids being nlist for IVF and 256 per
    PQ sub-quantiser. Until then the level is searched exactly, which is cheap at that size."""
    if index.is_trained:
        return 0
    inner = innermost(index)
    if isinstance(inner, faiss.IndexIVF):
        centroids = inner.nlist
        if isinstance(inner, faiss.IndexIVFPQ):
            centroids = max(centroids, inner.pq.ksub)
    elif isinstance(inner, faiss.IndexPQ):
        centroids = inner.pq.ksub
    else:
        centroids = 256  # scalar quantisers and others: a reasonable sample
    return 40 * centroids
