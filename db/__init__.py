"""The database both sides share: the schema (``db.schema``, changed only by ``migrations/``),
connections (``db.connect``) and the indexing job queue (``db.queue``)."""
