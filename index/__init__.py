"""The on-disk index: FAISS vectors per HANet level and the rerank rows, in immutable published
versions. The indexer writes it; the service reads it."""
