"""The headers every response carries (service.headers), 405s that say what a path allows, and
request bodies whose types are as strict as their schema. A real app: SQLite, a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.headers import API_CSP, DOCS_CSP, MEDIA_CSP, PAGE_CSP
from service.settings import HanetSettings


@pytest.fixture(scope="module")
def app(tmp_path_factory, synth_corpus: Path, vocab_checkpoint: Path):
    settings = HanetSettings(
        data_dir=tmp_path_factory.mktemp("headers") / "data",
        checkpoint=vocab_checkpoint,
        media_root=synth_corpus,
    )
    app = create_app(settings)

    def boom() -> None:
        raise RuntimeError("an unexpected failure")

    app.add_api_route("/boom", boom)  # a route that fails: Starlette's outermost 500
    return app


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def video_id(client) -> int:
    created = client.post("/videos", json={"path": "synth000001.mp4", "title": "one"})
    assert created.status_code == 202, created.text
    return created.json()["id"]


def _assert_headers(response, csp: str) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["content-security-policy"] == csp
    assert len(response.headers.get_list("content-security-policy")) == 1


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 200),
        ("GET", "/static/app.js", 200),
        ("GET", "/static/style.css", 200),
        ("GET", "/static/missing.js", 404),
        ("POST", "/static/app.js", 405),
        ("POST", "/", 405),
    ],
)
def test_the_page_and_its_files_carry_the_page_policy(client, method, path, status) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    _assert_headers(response, PAGE_CSP)


def test_the_page_policy_allows_only_the_own_origin() -> None:
    directives = dict(d.split(" ", 1) for d in PAGE_CSP.split("; "))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "img-src", "media-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert "unsafe" not in PAGE_CSP
    for name in ("object-src", "base-uri", "frame-ancestors"):
        assert directives[name] == "'none'", name


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/health", 200),
        ("GET", "/videos", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/metrics", 200),
        ("GET", "/videos/999999", 404),
        ("GET", "/nowhere", 404),
        ("GET", "/videos/0", 422),
        ("POST", "/search", 422),
        ("GET", "/boom", 500),
    ],
)
def test_api_answers_and_errors_carry_the_api_policy(client, method, path, status) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    _assert_headers(response, API_CSP)


def test_a_search_carries_the_api_policy(client) -> None:
    response = client.post("/search", json={"query": "a red star moves left"})
    assert response.status_code == 200
    _assert_headers(response, API_CSP)


def test_media_and_their_errors_carry_the_sandbox_policy(client, video_id) -> None:
    file = client.get(f"/videos/{video_id}/file")
    assert file.status_code == 200 and file.content[4:8] == b"ftyp"  # the MP4 itself
    _assert_headers(file, MEDIA_CSP)
    part = client.get(f"/videos/{video_id}/file", headers={"Range": "bytes=0-9"})
    assert part.status_code == 206
    _assert_headers(part, MEDIA_CSP)
    thumbnail = client.get(f"/videos/{video_id}/thumbnail", params={"t": 0.5})
    assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"  # a JPEG
    _assert_headers(thumbnail, MEDIA_CSP)
    for missing in ("/videos/999999/file", "/videos/999999/thumbnail"):
        response = client.get(missing)
        assert response.status_code == 404
        _assert_headers(response, MEDIA_CSP)


def test_the_docs_pages_get_their_own_policy(client) -> None:
    for path in ("/docs", "/redoc"):
        response = client.get(path)
        assert response.status_code == 200
        _assert_headers(response, DOCS_CSP)
    assert "frame-ancestors 'none'" in DOCS_CSP and "object-src 'none'" in DOCS_CSP


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/videos", "GET, POST"),
        ("DELETE", "/videos", "GET, POST"),
        ("PUT", "/search", "POST"),
        ("GET", "/search", "POST"),
        ("PUT", "/videos/1", "DELETE, GET, PATCH"),
        ("OPTIONS", "/videos/1", "DELETE, GET, PATCH"),
        ("PUT", "/videos/1/file", "GET"),
        ("POST", "/videos/1/thumbnail", "GET"),
        ("POST", "/", "GET"),
        ("POST", "/docs", "GET, HEAD"),
        ("OPTIONS", "/static/app.js", "GET, HEAD"),
    ],
)
def test_a_405_says_every_method_the_path_takes(client, method, path, allow) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "extra",
    [
        {"min_score": False},
        {"min_score": True},
        {"min_score": "0.5"},
        {"min_score": [0.5]},
        {"top_k": True},
        {"top_k": 5.5},
        {"top_k": "5"},
        {"query": 5},
        {"topk": 5},  # a misspelt field is an error, not the default
    ],
)
def test_search_fields_take_only_their_own_type(client, extra) -> None:
    response = client.post("/search", json={"query": "a red star", **extra})
    assert response.status_code == 422, response.text
    field = next(iter(extra))
    assert response.json()["detail"][0]["loc"] == ["body", field]


def test_a_whole_float_is_an_integer_as_json_schema_says(client) -> None:
    """JSON Schema counts 2.0 as an integer (a fuzzer sends it, some clients write it)."""
    whole = client.post("/search", json={"query": "a red star", "top_k": 2.0})
    assert whole.status_code == 200, whole.text


@pytest.mark.parametrize(
    ("literal", "shown"), [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf")]
)
def test_min_score_is_a_finite_number(client, literal, shown) -> None:
    body = '{"query": "a red star", "min_score": ' + literal + "}"  # Python's JSON reads these
    response = client.post("/search", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "min_score"] and error["input"] == shown


def test_a_422_echoing_a_non_finite_number_is_still_json(client) -> None:
    """The error lists the body it refused; JSON cannot hold NaN, so the number is written as
    text rather than the answer failing with a 500."""
    body = '{"min_score": NaN, "top_k": [Infinity]}'
    response = client.post("/search", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    errors = {tuple(e["loc"]): e for e in response.json()["detail"]}
    assert errors[("body", "min_score")]["input"] == "nan"
    assert errors[("body", "top_k")]["input"] == ["inf"]


@pytest.mark.parametrize("min_score", [0, 0.5, 1, -1])
def test_min_score_takes_integers_and_floats(client, min_score) -> None:
    response = client.post("/search", json={"query": "a red star", "min_score": min_score})
    assert response.status_code == 200, response.text
    assert response.json()["hits"] == []  # nothing indexed in this app


@pytest.mark.parametrize(
    "body",
    [
        {"path": "synth000002.mp4", "title": 5},
        {"path": "synth000002.mp4", "title": False},
        {"path": "synth000002.mp4", "name": "two"},
    ],
)
def test_ingest_by_path_fields_take_only_their_own_type(client, body) -> None:
    response = client.post("/videos", json=body)
    assert response.status_code == 422, response.text
