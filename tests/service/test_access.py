"""Who may read and change what: the key for changes, for reads too in a private library (the
page's media through a cookie that never holds the key), the probes always open, CORS closed
unless configured."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from indexer.job import IndexingCfg, run_indexing
from service.app import create_app
from service.deps import MEDIA_COOKIE
from service.settings import HanetSettings

KEY = "private-library-key-0123"


@pytest.fixture
def private(tmp_path, synth_corpus, vocab_checkpoint) -> HanetSettings:
    return HanetSettings(
        data_dir=tmp_path / "data",
        checkpoint=vocab_checkpoint,
        media_root=synth_corpus,
        api_key=KEY,
        protect_reads=True,
    )


def _ingest_and_index(c: TestClient) -> int:
    created = c.post("/videos", json={"path": "synth000001.mp4"}, headers={"X-API-Key": KEY})
    assert created.status_code == 202, created.text
    state = c.app.state.hanet
    cfg = IndexingCfg(batch_size=4, decode_workers=1)
    run_indexing(state.engine, state.searcher.model, state.settings.index_dir, cfg, progress=False)
    return created.json()["id"]


def _reads(vid: int) -> list[tuple[str, str, dict | None]]:
    return [
        ("POST", "/search", {"query": "a red circle"}),
        ("GET", "/videos", None),
        ("GET", f"/videos/{vid}", None),
        ("GET", f"/videos/{vid}/file", None),
        ("GET", f"/videos/{vid}/thumbnail", None),
        ("GET", "/metrics", None),
    ]


def test_a_private_library_reads_only_with_the_key(private, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(private)) as c:
        vid = _ingest_and_index(c)
        for method, path, body in _reads(vid):
            refused = c.request(method, path, json=body)
            assert refused.status_code == 401, (path, refused.text)
            assert "private" in refused.json()["detail"]
            wrong = c.request(method, path, json=body, headers={"X-API-Key": KEY[:-1] + "X"})
            assert wrong.status_code == 401, path
            allowed = c.request(method, path, json=body, headers={"X-API-Key": KEY})
            assert allowed.status_code == 200, (path, allowed.text)
        hits = c.post("/search", json={"query": "a red circle"}, headers={"X-API-Key": KEY})
        assert [h["video_id"] for h in hits.json()["hits"]] == [vid]
        for probe in ("/health", "/ready", "/", "/static/app.js", "/openapi.json"):
            assert c.get(probe).status_code == 200, probe
    assert KEY not in caplog.text  # never logged


def test_the_media_cookie_reads_files_not_the_api(private) -> None:
    with TestClient(create_app(private)) as c:
        vid = _ingest_and_index(c)
        assert c.post("/session").status_code == 401
        assert MEDIA_COOKIE not in c.cookies
        opened = c.post("/session", headers={"X-API-Key": KEY})
        assert opened.status_code == 204
        cookie = opened.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/videos" in cookie
        assert KEY not in cookie
        # the browser's <video> and <img>: GETs with the cookie only
        assert c.get(f"/videos/{vid}/file").status_code == 200
        assert c.get(f"/videos/{vid}/thumbnail").status_code == 200
        # a POST is not let through by the cookie (a cross-site form must not search)
        assert c.post("/search", json={"query": "a red circle"}).status_code == 401
        # a forged or tampered cookie is refused
        expires, _, mac = c.cookies[MEDIA_COOKIE].partition(".")
        c.cookies.clear()
        c.cookies.set(MEDIA_COOKIE, f"{int(expires) + 3600}.{mac}", path="/videos")
        assert c.get(f"/videos/{vid}/file").status_code == 401
        c.cookies.set(MEDIA_COOKIE, f"{int(expires)}.{'0' * len(mac)}", path="/videos")
        assert c.get(f"/videos/{vid}/file").status_code == 401
        c.cookies.set(MEDIA_COOKIE, f"{expires}.{mac}", path="/videos")  # the real one again
        assert c.get(f"/videos/{vid}/file").status_code == 200
        closed = c.delete("/session")
        assert closed.status_code == 204
        assert f"{MEDIA_COOKIE}=" in closed.headers["set-cookie"]
        assert "Max-Age=0" in closed.headers["set-cookie"]


def test_an_expired_cookie_or_another_key_reads_nothing(private, tmp_path) -> None:
    from service.deps import media_token

    with TestClient(create_app(private)) as c:
        vid = _ingest_and_index(c)
        state = c.app.state.hanet
        c.cookies.set(MEDIA_COOKIE, media_token(state, 1), path="/videos")  # long expired
        assert c.get(f"/videos/{vid}/file").status_code == 401
        fresh = media_token(state, 2**40)
    rotated = private.model_copy(
        update={"api_key": private.api_key.__class__("another-key-456789")}
    )
    with TestClient(create_app(rotated)) as c:
        c.cookies.set(MEDIA_COOKIE, fresh, path="/videos")  # made under the old key
        assert c.get(f"/videos/{vid}/file").status_code == 401
        c.cookies.set(MEDIA_COOKIE, media_token(c.app.state.hanet, 2**40), path="/videos")
        assert c.get(f"/videos/{vid}/file").status_code == 200


def test_reads_need_a_key_to_ask_for(tmp_path) -> None:
    with pytest.raises(ValueError, match="protect_reads needs api_key"):
        HanetSettings(data_dir=tmp_path, protect_reads=True)


def test_without_protect_reads_reading_stays_open(private) -> None:
    public = private.model_copy(update={"protect_reads": False})
    with TestClient(create_app(public)) as c:
        vid = _ingest_and_index(c)
        for method, path, body in _reads(vid):
            assert c.request(method, path, json=body).status_code == 200, path
        assert c.post("/videos", json={"path": "synth000002.mp4"}).status_code == 401


def _preflight(c: TestClient, origin: str):
    return c.options(
        "/search",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
    )


def test_cors_is_closed_by_default_and_opens_per_origin(tmp_path, vocab_checkpoint) -> None:
    base = HanetSettings(data_dir=tmp_path / "data", checkpoint=vocab_checkpoint)
    with TestClient(create_app(base)) as c:
        response = c.post("/search", json={"query": "a cat"}, headers={"Origin": "https://x.io"})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-origin" not in _preflight(c, "https://x.io").headers
    opened = base.model_copy(update={"cors_origins": ["https://app.example.com"]})
    with TestClient(create_app(opened)) as c:
        allowed = _preflight(c, "https://app.example.com")
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in allowed.headers  # no cookies cross-site
        other = _preflight(c, "https://evil.example.net")
        assert "access-control-allow-origin" not in other.headers
        response = c.post(
            "/search", json={"query": "a cat"}, headers={"Origin": "https://app.example.com"}
        )
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"


def test_openapi_declares_the_key_and_the_401s(private) -> None:
    with TestClient(create_app(private)) as c:
        doc = c.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["APIKeyHeader"]["description"],
    }
    for path, method in [
        ("/search", "post"),
        ("/videos", "get"),
        ("/videos/{video_id}/file", "get"),
    ]:
        assert "401" in doc["paths"][path][method]["responses"], path
    assert "401" not in doc["paths"]["/health"]["get"]["responses"]
    assert doc["paths"]["/search"]["post"]["security"] == [{"APIKeyHeader": []}]


def test_the_document_names_the_key_only_where_this_deployment_needs_it(private) -> None:
    """A fuzzer (and a client generator) trusts the document: a route it says needs the key
    must refuse without one, and a route that is open must not claim otherwise."""
    writes_only = private.model_copy(update={"protect_reads": False})
    open_all = writes_only.model_copy(update={"api_key": None})
    for settings, read_guarded, write_guarded in [
        (private, True, True),
        (writes_only, False, True),
        (open_all, False, False),
    ]:
        with TestClient(create_app(settings)) as c:
            doc = c.get("/openapi.json").json()
        paths = doc["paths"]
        assert ("security" in paths["/search"]["post"]) == read_guarded
        assert ("401" in paths["/videos/{video_id}/file"]["get"]["responses"]) == read_guarded
        assert ("security" in paths["/videos"]["post"]) == write_guarded
        assert ("security" in paths["/videos/{video_id}"]["delete"]) == write_guarded
        assert ("/session" in paths) == write_guarded


def test_the_env_reads_the_access_settings(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HANET_API_KEY", KEY)
    monkeypatch.setenv("HANET_PROTECT_READS", "true")
    monkeypatch.setenv("HANET_CORS_ORIGINS", '["https://a.example"]')
    s = HanetSettings(data_dir=tmp_path)
    assert s.protect_reads and s.cors_origins == ["https://a.example"]
