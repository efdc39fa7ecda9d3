"""Hosts that share only the database and Milvus (``HANET_MEDIA_STORE=database``,
``HANET_VECTOR_STORE=milvus``), each with a data folder of its own, on SQLite and PostgreSQL:
an upload received by one API replica and a video ingested by URL are indexed by a worker on
another host and served, file and thumbnail, by a third; deleting the video removes the stored
file. No host reads another's folder: the receiving replica's copy is deleted before the
worker runs."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.connect import make_engine
from db.schema import MediaBlob, MediaChunk
from indexer.job import run_indexing
from service import runtime
from service.app import create_app
from service.settings import HanetSettings
from tests.service.receiver import Receiver

pytest.importorskip("pymilvus")


def _host(tmp_path, name: str, database: str, checkpoint) -> HanetSettings:
    return HanetSettings(
        data_dir=tmp_path / name,
        database_url=database,
        checkpoint=checkpoint,
        media_store="database",
        vector_store="milvus",
        milvus_uri=str(tmp_path / "milvus.db"),
        milvus_collection="hosts",
        url_allow_private=True,
    )


def _work(settings: HanetSettings) -> None:
    """An indexer worker on its own host: the queue until it is empty."""
    runtime.index_target(settings)
    engine, model = make_engine(settings.resolved_database_url), runtime.load_model(settings)
    cfg = dataclasses.replace(settings.indexing, batch_size=4, decode_workers=1)
    try:
        run_indexing(engine, model, settings.index_dir, cfg, progress=False)
    finally:
        engine.dispose()


def _stored(engine) -> tuple[int, int]:
    with Session(engine) as session:
        blobs = session.scalar(select(func.count()).select_from(MediaBlob))
        return blobs, session.scalar(select(func.count()).select_from(MediaChunk))


@pytest.mark.slow
def test_an_upload_is_indexed_and_served_by_other_hosts(
    database, tmp_path, synth_corpus, vocab_checkpoint
) -> None:
    database = database or f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    receiving, worker, serving = (
        _host(tmp_path, name, database, vocab_checkpoint) for name in ("a", "b", "c")
    )
    upload = (synth_corpus / "synth000003.mp4").read_bytes()
    by_url = (synth_corpus / "synth000005.mp4").read_bytes()
    with TestClient(create_app(receiving)) as api_a, Receiver(files={"/v.mp4": by_url}) as web:
        sent = api_a.post(
            "/videos", files={"file": ("three.mp4", upload, "video/mp4")}, data={"title": "three"}
        )
        assert sent.status_code == 202, sent.text
        fetched = api_a.post("/videos", json={"url": f"{web.base}/v.mp4"}).json()
        engine = api_a.app.state.hanet.engine
        assert _stored(engine) == (1, 1)  # the upload, in the database; the URL: not yet
        assert not any(receiving.upload_dir.glob("*.mp4"))  # only a copy, in its cache
        shutil.rmtree(receiving.data_dir / "media-cache")  # no other host could read it
        _work(worker)  # downloads the URL video, copies the upload from the database
        assert _stored(engine) == (2, 2)
        assert not (worker.data_dir / "media").exists()  # stored, not in its media folder
    with TestClient(create_app(serving)) as api_c:
        videos = {v["id"]: v for v in api_c.get("/videos").json()["items"]}
        assert {v["status"] for v in videos.values()} == {"indexed"}, videos
        uploaded = sent.json()["id"]
        for video_id, data in ((uploaded, upload), (fetched["id"], by_url)):
            served = api_c.get(f"/videos/{video_id}/file")
            assert served.status_code == 200 and served.content == data
            assert api_c.get(f"/videos/{video_id}/thumbnail?t=1").status_code == 200
        hits = api_c.post("/search", json={"query": "a red circle", "top_k": 5}).json()["hits"]
        assert {h["video_id"] for h in hits} == {uploaded, fetched["id"]}

        copy = serving.data_dir / "media-cache" / f"{hashlib.sha256(upload).hexdigest()}.mp4"
        assert copy.read_bytes() == upload  # this host's copy, made to serve it
        assert api_c.delete(f"/videos/{uploaded}").status_code == 204
        assert _stored(api_c.app.state.hanet.engine) == (1, 1)  # the URL video's file stays
        assert not copy.exists()
        assert api_c.get(f"/videos/{fetched['id']}/file").content == by_url


def test_switching_to_the_database_store_keeps_earlier_files(
    database, tmp_path, synth_corpus, vocab_checkpoint
) -> None:
    """A library of files switched to the database store: its files stay where they are and
    serve; the same content uploaded again is the existing video, and nothing is left stored
    for it; new content goes into the database."""
    database = database or f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    common = {"data_dir": tmp_path / "a", "database_url": database, "checkpoint": vocab_checkpoint}
    data = (synth_corpus / "synth000003.mp4").read_bytes()
    other = (synth_corpus / "synth000004.mp4").read_bytes()
    with TestClient(create_app(HanetSettings(**common))) as files_api:
        first = files_api.post("/videos", files={"file": ("a.mp4", data, "video/mp4")}).json()
    with TestClient(create_app(HanetSettings(media_store="database", **common))) as api:
        again = api.post("/videos", files={"file": ("b.mp4", data, "video/mp4")})
        assert again.status_code == 202 and again.json()["id"] == first["id"]
        engine = api.app.state.hanet.engine
        assert _stored(engine) == (0, 0)
        assert api.get(f"/videos/{first['id']}/file").content == data  # still its file
        new = api.post("/videos", files={"file": ("c.mp4", other, "video/mp4")}).json()
        assert new["id"] != first["id"] and _stored(engine) == (1, 1)
        assert api.get(f"/videos/{new['id']}/file").content == other
