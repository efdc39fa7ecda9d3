"""GET /videos/{id}/thumbnail and GET /videos/{id}/file: what the web page's player needs."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from db import queue
from indexer.job import IndexingCfg, run_indexing
from service.app import create_app
from service.settings import HanetSettings


@pytest.fixture(scope="module")
def client(tmp_path_factory, synth_corpus, vocab_checkpoint):
    root = tmp_path_factory.mktemp("media")
    settings = HanetSettings(
        data_dir=root / "data", checkpoint=vocab_checkpoint, media_root=synth_corpus
    )
    with TestClient(create_app(settings)) as c:
        state = c.app.state.hanet
        ids = {"synth000000.mp4": c.post("/videos", json={"path": "synth000000.mp4"}).json()["id"]}
        # files that are not videos are refused at ingest (415); these rows stand for ones queued
        # before that check: notes.mp4 fails indexing, broken.mp4 stays pending
        for name in ("notes.mp4", "broken.mp4"):
            path = synth_corpus / name
            ids[name], _ = queue.enqueue(state.engine, media_path=str(path), sha256=name * 8)
            if name == "notes.mp4":
                cfg = IndexingCfg(batch_size=4, decode_workers=1)
                run_indexing(
                    state.engine, state.searcher.model, settings.index_dir, cfg, progress=False
                )
        c.ids = ids
        c.video_path = synth_corpus / "synth000000.mp4"
        yield c


def test_thumbnail_is_a_cached_jpeg_of_the_frame(client) -> None:
    vid = client.ids["synth000000.mp4"]
    first = client.get(f"/videos/{vid}/thumbnail", params={"t": 1.0})
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.content[:3] == b"\xff\xd8\xff"
    cached = list((client.app.state.hanet.settings.data_dir / "thumbnails").glob("*-10.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == first.content
    assert client.get(f"/videos/{vid}/thumbnail", params={"t": 1.0}).content == first.content
    other = client.get(f"/videos/{vid}/thumbnail", params={"t": 0.1}).content
    assert other != first.content  # the procedural scene moves: another time, another frame
    # past the end: the last frame, cached once under the video's duration
    late = client.get(f"/videos/{vid}/thumbnail", params={"t": 99})
    assert late.status_code == 200 and late.content[:3] == b"\xff\xd8\xff"
    assert client.get(f"/videos/{vid}/thumbnail", params={"t": 500}).content == late.content
    assert late.content not in (first.content, other)
    assert len(list(client.app.state.hanet.settings.data_dir.glob("thumbnails/*-20.jpg"))) == 1


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"t": -1}, 422, "greater than or equal"),
        ({"t": "soon"}, 422, "valid number"),
        ({"t": "nan"}, 422, ""),
    ],
)
def test_bad_thumbnail_times_get_4xx(client, params, status, says) -> None:
    r = client.get(f"/videos/{client.ids['synth000000.mp4']}/thumbnail", params=params)
    assert r.status_code == status and says in r.text


def test_thumbnail_of_unknown_failed_or_undecodable_videos(client) -> None:
    assert client.get("/videos/999/thumbnail").status_code == 404
    failed = client.get(f"/videos/{client.ids['notes.mp4']}/thumbnail")
    assert failed.status_code == 404 and "indexing failed" in failed.json()["detail"]
    broken = client.get(f"/videos/{client.ids['broken.mp4']}/thumbnail")  # pending
    assert broken.status_code == 422 and "not a readable media file" in broken.json()["detail"]


def test_files_of_failed_videos_or_of_non_videos_are_not_served(client) -> None:
    failed = client.get(f"/videos/{client.ids['notes.mp4']}/file")
    detail = failed.json()["detail"]
    assert failed.status_code == 404
    assert f"video {client.ids['notes.mp4']} is not served: indexing failed:" in detail
    assert "not a readable media file" in detail  # the row's own failure reason
    broken = client.get(f"/videos/{client.ids['broken.mp4']}/file")  # pending, never probed
    assert broken.status_code == 404 and "not a video" in broken.json()["detail"]


def test_file_whole_and_by_range(client) -> None:
    vid = client.ids["synth000000.mp4"]
    data = client.video_path.read_bytes()
    whole = client.get(f"/videos/{vid}/file")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["content-disposition"] == "inline"
    assert whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/videos/{vid}/file", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(f"/videos/{vid}/file", headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]


def test_bad_ranges_and_unknown_ids(client) -> None:
    vid = client.ids["synth000000.mp4"]
    size = client.video_path.stat().st_size
    beyond = client.get(f"/videos/{vid}/file", headers={"Range": f"bytes={size + 10}-"})
    assert beyond.status_code == 416
    assert client.get(f"/videos/{vid}/file", headers={"Range": "bytes=abc"}).status_code == 400
    assert client.get("/videos/999/file").status_code == 404
