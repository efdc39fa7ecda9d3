"""Ingest by URL over HTTP on SQLite and PostgreSQL, with real HTTP servers on loopback: SSRF
attempts refused (loopback, link-local, private, multicast, a name that resolves to loopback, a
redirect to loopback, a DNS answer that changes after the check), a real video downloaded,
indexed and found, and downloads that fail with their reasons (too large, not a video, HTTP
errors, the same content twice)."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from indexer.fetch_url import AddressPolicy, FetchCfg, FetchError, download
from indexer.job import run_indexing
from service.app import create_app
from service.settings import HanetSettings
from tests.service.receiver import Receiver


@pytest.fixture
def make_client(database, tmp_path, vocab_checkpoint):
    """A client for settings given as keywords (a small upload limit unless told)."""
    clients = []

    def make(**kwargs) -> TestClient:
        kwargs.setdefault("max_upload_bytes", 200_000)
        settings = HanetSettings(
            data_dir=tmp_path / "data", database_url=database, checkpoint=vocab_checkpoint, **kwargs
        )
        client = TestClient(create_app(settings))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _index(client: TestClient) -> None:
    state = client.app.state.hanet
    cfg = dataclasses.replace(state.settings.indexing, batch_size=4, decode_workers=1)
    run_indexing(state.engine, state.searcher.model, state.settings.index_dir, cfg, progress=False)


def test_ssrf_attempts_are_refused_with_the_reason(make_client) -> None:
    client = make_client()  # the defaults: public addresses only
    with Receiver() as receiver:
        port = receiver.server.server_address[1]
        cases = {
            f"http://127.0.0.1:{port}/v.mp4": "loopback",
            f"http://localhost:{port}/v.mp4": "loopback",  # a name resolving to loopback
            "http://169.254.169.254/latest/meta-data/": "link-local",  # cloud metadata
            "http://10.0.0.7/v.mp4": "private",
            "http://[::1]/v.mp4": "loopback",
            "http://[::ffff:127.0.0.1]/v.mp4": "loopback",  # IPv4 inside IPv6
            "http://224.0.0.1/v.mp4": "multicast",
            "http://0.0.0.0/v.mp4": "unspecified",
            "https://100.64.0.1/v.mp4": "non-public",  # shared address space
        }
        for url, kind in cases.items():
            response = client.post("/videos", json={"url": url})
            assert response.status_code == 400, (url, response.text)
            detail = response.json()["detail"]
            assert detail.startswith("refused:") and f"a {kind} address" in detail, (url, detail)
            assert "HANET_URL_ALLOW_PRIVATE" in detail
        assert receiver.got == []  # nothing was ever fetched
    bad = {
        "ftp://example.com/v.mp4": 422,
        "file:///etc/passwd": 422,
        "http://user:pw@example.com/v.mp4": 400,
        "http://no-such-host.invalid/v.mp4": 400,
    }
    for url, status in bad.items():
        assert client.post("/videos", json={"url": url}).status_code == status, url
    assert client.post("/videos", json={"url": "http://x.example/", "size": 1}).status_code == 422
    assert client.get("/videos").json()["total"] == 0  # no row for any of them


def test_url_ingest_can_be_turned_off(make_client) -> None:
    client = make_client(url_ingest=False)
    response = client.post("/videos", json={"url": "https://media.example.com/v.mp4"})
    assert response.status_code == 400 and "HANET_URL_INGEST" in response.json()["detail"]


def test_a_video_served_over_http_is_downloaded_indexed_and_found(
    make_client, synth_corpus
) -> None:
    client = make_client(url_allow_private=True)
    video = (synth_corpus / "synth000003.mp4").read_bytes()
    with Receiver(files={"/clips/three.mp4": video, "/copy.mp4": video}) as server:
        url = f"{server.base}/clips/three.mp4"
        body = {"url": url, "title": "three", "tags": ["demo"], "metadata": {"src": "test"}}
        created = client.post("/videos", json=body)
        assert created.status_code == 202, created.text
        first = created.json()
        assert (first["status"], first["source_url"], first["title"]) == ("pending", url, "three")
        assert (first["tags"], first["metadata"]) == (["demo"], {"src": "test"})
        assert client.post("/videos", json={"url": url}).json()["id"] == first["id"]  # known
        copy = client.post("/videos", json={"url": f"{server.base}/copy.mp4"}).json()
        _index(client)
        assert server.got[0].headers["User-Agent"].startswith("hanet-fetch")
    one = client.get(f"/videos/{first['id']}").json()
    assert (one["status"], one["duration_s"], one["segments"]) == ("indexed", 2.0, 1)
    upload_dir = client.app.state.hanet.settings.upload_dir
    kept = list(upload_dir.iterdir())
    assert [p.suffix for p in kept] == [".mp4"] and kept[0].read_bytes() == video
    again = client.get(f"/videos/{copy['id']}").json()
    assert again["status"] == "failed"
    assert again["failure_reason"] == f"the same video is already ingested, as video {first['id']}"
    [hit] = client.post("/search", json={"query": "a red circle"}).json()["hits"]
    assert hit["video_id"] == first["id"] and hit["title"] == "three"
    assert (hit["tags"], hit["metadata"]) == (["demo"], {"src": "test"})
    patched = client.patch(f"/videos/{first['id']}", json={"tags": ["kept", "new"]})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["title"], patched.json()["tags"]) == ("three", ["kept", "new"])
    assert patched.json()["metadata"] == {"src": "test"}  # fields not sent stay
    assert client.patch(f"/videos/{first['id']}", json={"tags": "one"}).status_code == 422
    assert client.patch("/videos/999999", json={"title": "x"}).status_code == 404
    [hit] = client.post("/search", json={"query": "a red circle"}).json()["hits"]
    assert hit["tags"] == ["kept", "new"]
    served = client.get(f"/videos/{first['id']}/file")
    assert served.status_code == 200 and served.content == video


def test_failed_downloads_say_why(make_client) -> None:
    client = make_client(url_allow_private=True)
    with Receiver() as server:
        server.files["/big.mp4"] = b"\0" * 300_000  # over the 200,000-byte limit
        server.files["/notes.mp4"] = b"not a video\n" * 100
        server.endless.add("/stream.mp4")  # no length given: cut off at the limit
        expected = {
            "/big.mp4": "the download is larger than the upload limit (200000 bytes)",
            "/stream.mp4": "the download is larger than the upload limit (200000 bytes)",
            "/notes.mp4": "not a video",
            "/missing.mp4": "HTTP 404",
        }
        ids = {
            path: client.post("/videos", json={"url": server.base + path}).json()["id"]
            for path in expected
        }
        _index(client)
    for path, reason in expected.items():
        video = client.get(f"/videos/{ids[path]}").json()
        assert video["status"] == "failed" and video["failure_reason"].startswith(reason), video
    upload_dir = client.app.state.hanet.settings.upload_dir
    assert not upload_dir.exists() or list(upload_dir.iterdir()) == []  # nothing kept


def test_a_redirect_to_a_refused_address_fails_the_video(make_client, synth_corpus) -> None:
    """127.0.0.1 is allowed here (an internal media server), 127.0.0.2 is not: a redirect
    there is refused before any connection; so is one to the metadata service."""
    client = make_client(url_allow_networks=["127.0.0.1/32"])
    video = (synth_corpus / "synth000002.mp4").read_bytes()
    with Receiver(host="127.0.0.2", files={"/v.mp4": video}) as inside, Receiver() as server:
        server.redirects["/r"] = f"{inside.base}/v.mp4"
        server.redirects["/meta"] = "http://169.254.169.254/latest/meta-data/"
        server.redirects["/ok"] = "/v.mp4"
        server.files["/v.mp4"] = video
        ids = [client.post("/videos", json={"url": f"{server.base}{p}"}) for p in ("/r", "/meta")]
        assert [r.status_code for r in ids] == [202, 202]
        good = client.post("/videos", json={"url": f"{server.base}/ok"}).json()["id"]
        direct = client.post("/videos", json={"url": f"{inside.base}/v.mp4"})
        assert direct.status_code == 400 and "127.0.0.2 is 127.0.0.2, a loopback" in direct.text
        _index(client)
        assert inside.got == []  # never reached
    for response, kind in zip(ids, ("loopback", "link-local"), strict=True):
        video_row = client.get(f"/videos/{response.json()['id']}").json()
        assert video_row["status"] == "failed"
        assert f"a {kind} address" in video_row["failure_reason"]
    assert client.get(f"/videos/{good}").json()["status"] == "indexed"  # a redirect it may follow


def test_the_download_connects_to_the_address_it_checked(tmp_path, monkeypatch) -> None:
    """DNS rebinding: a name whose answer changes between a check and a connection. A name
    server under an attacker's control is played by a resolver that answers an allowed address
    first and a refused one after; the download resolves once per request and connects to the
    address it checked."""
    answers = ["127.0.0.1", "127.0.0.2", "127.0.0.2"]
    asked = []
    real = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        if host != "media.test":
            return real(host, port, *args, **kwargs)
        asked.append(host)
        return real(answers[len(asked) - 1], port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    cfg = FetchCfg(
        download_dir=tmp_path,
        max_bytes=10_000,
        policy=AddressPolicy.of(False, ["127.0.0.1/32"]),
    )
    with Receiver(files={"/v.mp4": b"video bytes"}) as server:
        port = server.server.server_address[1]
        path = download(f"http://media.test:{port}/v.mp4", cfg)
        assert path.read_bytes() == b"video bytes" and len(asked) == 1
        assert server.got[0].headers["Host"] == f"media.test:{port}"  # the name, not the address
        with pytest.raises(FetchError, match="127.0.0.2, a loopback address"):
            download(f"http://media.test:{port}/v.mp4", cfg)  # the answer changed: refused
    assert [p.name for p in Path(tmp_path).iterdir()] == [path.name]
