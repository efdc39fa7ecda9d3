"""Nothing that is not a video is stored or served as one: a file is probed at ingest (415
otherwise) and served only with the media type its probe found (stored cross-site scripting:
an upload named x.html holding a script once came back as text/html from the page's origin)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, text, update
from sqlalchemy.orm import Session

import migrations
from db import queue
from db.connect import make_engine
from db.schema import Video
from service.app import create_app
from service.settings import HanetSettings

HTML = b"<!doctype html><html><body><script>fetch('/x?k='+sessionStorage.key)</script></body>\n"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>\n'


@pytest.fixture
def media_root(tmp_path, synth_corpus) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    shutil.copy(synth_corpus / "synth000000.mp4", root / "video.mp4")
    (root / "page.html").write_bytes(HTML)
    (root / "page.mp4").write_bytes(HTML)
    return root


@pytest.fixture
def client(tmp_path, media_root, vocab_checkpoint):
    settings = HanetSettings(
        data_dir=tmp_path / "data", checkpoint=vocab_checkpoint, media_root=media_root
    )
    with TestClient(create_app(settings)) as c:
        yield c


def _rows(client: TestClient) -> list[Video]:
    with Session(client.app.state.hanet.engine) as session:
        return list(session.scalars(select(Video)))


def _set_row(client: TestClient, video_id: int, **values) -> None:
    with client.app.state.hanet.engine.begin() as conn:
        conn.execute(update(Video).where(Video.id == video_id).values(**values))


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [("x.html", HTML, "not a readable media file"), ("x.svg", SVG, "still image")],
)
def test_an_upload_that_is_not_a_video_is_refused_and_not_kept(
    client, name: str, content: bytes, reason: str
) -> None:
    r = client.post("/videos", files={"file": (name, content, "video/mp4")})
    assert r.status_code == 415
    assert r.json()["detail"].startswith("not a video:") and reason in r.json()["detail"]
    uploads = client.app.state.hanet.settings.upload_dir
    assert list(uploads.iterdir()) == []  # neither the stored copy nor the temporary file
    assert _rows(client) == [] and client.get("/videos").json()["total"] == 0


@pytest.mark.parametrize("name", ["page.html", "page.mp4"])
def test_an_ingest_by_path_of_html_is_refused(client, media_root, name: str) -> None:
    r = client.post("/videos", json={"path": name})
    assert r.status_code == 415 and "not a video" in r.json()["detail"]
    assert _rows(client) == []
    assert (media_root / name).read_bytes() == HTML  # not ours to delete


def test_a_video_named_html_is_served_as_a_video(client, media_root) -> None:
    data = (media_root / "video.mp4").read_bytes()
    r = client.post("/videos", files={"file": ("x.html", data, "text/html")})
    assert r.status_code == 202 and r.json()["title"] == "x.html"
    video_id = r.json()["id"]
    assert [row.media_type for row in _rows(client)] == ["video/mp4"]
    served = client.get(f"/videos/{video_id}/file")
    assert served.status_code == 200 and served.content == data
    assert served.headers["content-type"] == "video/mp4"
    assert served.headers["content-disposition"] == "inline"
    by_path = client.post("/videos", json={"path": "video.mp4"})  # same content: same row
    assert by_path.json()["id"] == video_id


def test_a_failed_video_is_not_served(client) -> None:
    video_id = client.post("/videos", json={"path": "video.mp4"}).json()["id"]
    assert client.get(f"/videos/{video_id}/file").status_code == 200
    _set_row(client, video_id, status="failed", failure_reason="corrupt video data (boom)")
    for what in ("file", "thumbnail"):
        r = client.get(f"/videos/{video_id}/{what}")
        assert r.status_code == 404
        assert r.json()["detail"] == (
            f"the file of video {video_id} is not served: indexing failed: "
            "corrupt video data (boom)"
        )


def test_a_row_from_before_the_probe_is_probed_once_when_served(client, media_root) -> None:
    engine = client.app.state.hanet.engine
    video, _ = queue.enqueue(engine, media_path=str(media_root / "video.mp4"), sha256="a" * 64)
    html, _ = queue.enqueue(engine, media_path=str(media_root / "page.mp4"), sha256="b" * 64)
    served = client.get(f"/videos/{video}/file")
    assert served.status_code == 200 and served.headers["content-type"] == "video/mp4"
    refused = client.get(f"/videos/{html}/file")
    assert refused.status_code == 404 and "not a video" in refused.json()["detail"]
    assert {row.id: row.media_type for row in _rows(client)} == {video: "video/mp4", html: None}


def test_the_openapi_document_says_what_is_refused(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    ingest = paths["/videos"]["post"]["responses"]
    assert "not a video" in ingest["415"]["description"]
    served = paths["/videos/{video_id}/file"]["get"]["responses"]
    assert "indexing failed" in served["404"]["description"]
    assert "text/html" not in served["200"]["content"]


def test_the_migration_adds_and_drops_the_media_type(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'hanet.sqlite3'}"
    engine = make_engine(url)

    def columns() -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns("videos")}

    def table_sql() -> str:
        with engine.connect() as conn:
            query = "SELECT sql FROM sqlite_master WHERE name = 'videos'"
            return conn.execute(text(query)).scalar_one()

    try:
        migrations.upgrade(url, "0004")
        assert "media_type" not in columns()
        migrations.upgrade(url, "0005")
        assert "media_type" in columns() and migrations.current_revision(engine) == "0005"
        migrations.downgrade(url, "0004")
        assert "media_type" not in columns()
        assert "AUTOINCREMENT" in table_sql()  # 0004's ids-never-reused survives the rebuild
    finally:
        engine.dispose()
