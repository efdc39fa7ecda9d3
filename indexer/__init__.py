"""The offline indexer: decode video (PyAV), run the HANet video branch, write the index and
mark the database rows."""
