"""The offline indexer: reader (PyAV decoding) -> embedder (the HANet video branch) -> writer
(the index, then the database rows), run by ``indexer.job.run_indexing``."""
