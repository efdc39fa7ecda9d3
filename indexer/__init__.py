"""The offline indexer: decode video, run the HANet video branch, store embeddings."""
