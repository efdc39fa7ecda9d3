"""Search filters, cursor paging (search and video list), "more like this", level weights and
explanations over HTTP, on SQLite and PostgreSQL, with a real model, indexer and FAISS: six
tagged videos indexed once per database; the last test ingests more between page requests."""

from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient

import migrations
from indexer.job import IndexingCfg, run_indexing
from model.config import SCORE_NAMES
from service.app import create_app
from service.settings import HanetSettings

TAGS = [["a", "x"], ["a"], ["b", "x"], ["b"], ["a", "b"], []]  # synth000000..5
CAMS = ["one", "two", "one", "two", "one", "two"]
SENTENCE = "a red star moves left"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def client(request, tmp_path_factory, synth_corpus, vocab_checkpoint):
    url = None
    if request.param == "postgres":
        url = os.environ.get("HANET_TEST_DATABASE_URL")
        if not url:
            pytest.skip("HANET_TEST_DATABASE_URL is not set")
    settings = HanetSettings(
        data_dir=tmp_path_factory.mktemp("data"),
        database_url=url,
        checkpoint=vocab_checkpoint,
        media_root=synth_corpus,
    )
    with TestClient(create_app(settings)) as c:
        c.ids = []  # the videos' ids, synth000000..5 in order
        for i, (tags, cam) in enumerate(zip(TAGS, CAMS, strict=True)):
            body = {"path": f"synth{i:06d}.mp4", "tags": tags, "metadata": {"cam": cam}}
            c.ids.append(c.post("/videos", json=body).json()["id"])
        _index(c)
        yield c
    if url:
        migrations.downgrade(url, "base")


def _index(client: TestClient) -> None:
    state = client.app.state.hanet
    cfg = IndexingCfg(batch_size=4, decode_workers=1)
    run_indexing(state.engine, state.searcher.model, state.settings.index_dir, cfg, progress=False)
    state.searcher.index.current(wait=True)  # serve the new version now, not in the background


def _search(client: TestClient, **body) -> dict:
    response = client.post("/search", json={"query": SENTENCE, **body})
    assert response.status_code == 200, response.text
    return response.json()


def _ids(found: dict) -> list[int]:
    return [h["video_id"] for h in found["hits"]]


def _with(client, pick) -> set[int]:
    """The oracle: the videos whose tags and metadata pass ``pick``, from GET /videos."""
    items = client.get("/videos").json()["items"]
    return {v["id"] for v in items if pick(set(v["tags"]), v["metadata"])}


@pytest.mark.parametrize(
    ("filters", "pick"),
    [
        ({"tags_all": ["a", "x"]}, lambda t, m: {"a", "x"} <= t),
        ({"tags_any": ["x", "b"]}, lambda t, m: bool({"x", "b"} & t)),
        ({"metadata": {"cam": "one"}}, lambda t, m: m.get("cam") == "one"),
        (
            {"tags_any": ["a"], "metadata": {"cam": "two"}},
            lambda t, m: "a" in t and m["cam"] == "two",
        ),
        ({"duration_min_s": 1.9, "duration_max_s": 2.1}, lambda t, m: True),
        ({"duration_min_s": 3.0}, lambda t, m: False),
        ({"ingested_after": "2999-01-01T00:00:00Z"}, lambda t, m: False),
        ({"ingested_before": "2999-01-01T00:00:00"}, lambda t, m: True),
        ({"tags_all": ["no such tag"]}, lambda t, m: False),
    ],
)
def test_filters_return_every_matching_video_and_only_those(client, filters, pick) -> None:
    expected = _with(client, pick)
    found = _search(client, top_k=10, filters=filters)
    assert set(_ids(found)) == expected and len(_ids(found)) == len(expected)


def test_a_filter_gives_the_best_matching_videos_not_a_shorter_list(client) -> None:
    ranked = _ids(_search(client, top_k=10))  # all six, best first
    matching = _with(client, lambda t, m: bool({"a", "b"} & t))  # five of them
    found = _search(client, top_k=3, filters={"tags_any": ["a", "b"]})
    assert _ids(found) == [v for v in ranked if v in matching][:3]
    moments = _search(client, top_k=4, group_by="moment", filters={"tags_all": ["b"]})
    assert {h["video_id"] for h in moments["hits"]} <= _with(client, lambda t, m: "b" in t)


@pytest.mark.parametrize(
    "filters",
    [
        {"duration_min_s": 5, "duration_max_s": 1},
        {"ingested_after": "2026-02-01T00:00:00Z", "ingested_before": "2026-01-01T00:00:00Z"},
        {"ingested_after": "yesterday"},
        {"tags_all": "a"},
        {"colour": "red"},
        {"metadata": {"cam": 1}},
        {"duration_min_s": -1},
    ],
)
def test_bad_filters_are_a_422_that_says_why(client, filters) -> None:
    response = client.post("/search", json={"query": SENTENCE, "filters": filters})
    assert response.status_code == 422 and response.json()["detail"]


def test_search_pages_follow_each_other_without_gaps_or_repeats(client) -> None:
    everything = _search(client, top_k=10)
    assert everything["next_cursor"] is None
    pages, body = [], {"top_k": 2}
    while True:
        found = _search(client, **body)
        pages.append(_ids(found))
        if found["next_cursor"] is None:
            break
        body["cursor"] = found["next_cursor"]
    assert pages == [_ids(everything)[i : i + 2] for i in range(0, 6, 2)]
    # a cursor is for its own query, and only this service's cursors are read
    cursor = _search(client, top_k=2)["next_cursor"]
    other = client.post("/search", json={"query": "a blue ring", "top_k": 2, "cursor": cursor})
    assert other.status_code == 400 and "another query" in other.json()["detail"]
    for bad in ("not-a-cursor", "e30", cursor[:-4]):
        response = client.post("/search", json={"query": SENTENCE, "cursor": bad})
        assert response.status_code == 400, bad


def test_video_list_pages_by_keyset(client) -> None:
    everything = [v["id"] for v in client.get("/videos").json()["items"]]
    seen, params = [], {"limit": 4}
    while True:
        page = client.get("/videos", params=params).json()
        seen += [v["id"] for v in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == everything == sorted(everything, reverse=True)
    assert client.get("/videos", params={"cursor": "zz"}).status_code == 400
    both = client.get("/videos", params={"cursor": params["cursor"], "offset": 1})
    assert both.status_code == 400


def test_more_like_this_finds_other_videos_by_their_embeddings(client) -> None:
    source = client.ids[0]
    found = client.post("/search", json={"video_id": source, "top_k": 10}).json()
    assert sorted(_ids(found)) == sorted(set(client.ids) - {source})  # never itself
    scores = [h["score"] for h in found["hits"]]
    assert scores == sorted(scores, reverse=True)
    assert set(found["hits"][0]["scores"]) == {"event", "action", "entity", "fused"}
    # one-unit videos: the event score is the cosine of their event vectors, both ways alike
    back = client.post("/search", json={"video_id": _ids(found)[0], "top_k": 10}).json()
    mine = next(h for h in back["hits"] if h["video_id"] == source)
    assert mine["scores"]["event"] == pytest.approx(found["hits"][0]["scores"]["event"], abs=2e-3)
    stretch = {"video_id": source, "start_s": 0.0, "end_s": 1.0, "top_k": 2}
    assert len(client.post("/search", json=stretch).json()["hits"]) == 2
    filtered = {"video_id": source, "filters": {"tags_all": ["b"]}}
    only_b = client.post("/search", json=filtered).json()
    assert set(_ids(only_b)) == _with(client, lambda t, m: "b" in t)
    paged = client.post("/search", json={"video_id": source, "top_k": 3}).json()
    rest = {"video_id": source, "top_k": 3, "cursor": paged["next_cursor"]}
    assert _ids(paged) + _ids(client.post("/search", json=rest).json()) == _ids(found)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"video_id": 999_999}, 404),
        ({"video_id": 1, "start_s": 100.0}, 422),  # no segment there
        ({"video_id": 1, "start_s": 2.0, "end_s": 1.0}, 422),
        ({"query": SENTENCE, "video_id": 1}, 422),
        ({}, 422),
        ({"query": SENTENCE, "start_s": 1.0}, 422),
    ],
)
def test_bad_more_like_this_requests(client, body, status) -> None:
    if body.get("video_id") == 1:
        body = {**body, "video_id": client.ids[0]}
    response = client.post("/search", json=body)
    assert response.status_code == status and response.json()["detail"], response.text


def _png(seed: int, size=(48, 64)) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_search_by_image_and_what_is_not_an_image(client, synth_corpus) -> None:
    image = {"file": ("frame.png", _png(0), "image/png")}
    found = client.post("/search/image", files=image, data={"top_k": "4"})
    assert found.status_code == 200, found.text
    hits = found.json()["hits"]
    assert len(hits) == 4 and set(_ids(found.json())) <= set(client.ids)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    again = client.post("/search/image", files=image, data={"top_k": "4"}).json()
    assert _ids(again) == _ids(found.json())  # the same image, the same answer
    moments = client.post("/search/image", files=image, data={"group_by": "moment"})
    assert moments.status_code == 200 and moments.json()["hits"]
    with open(synth_corpus / "synth000001.mp4", "rb") as f:
        video = client.post("/search/image", files={"file": ("v.png", f, "image/png")})
    for response in (
        video,  # a video named .png
        client.post("/search/image", files={"file": ("n.png", b"not an image", "image/png")}),
        client.post("/search/image", files={"file": ("e.png", b"", "image/png")}),
        client.post("/search/image", files={"file": ("t.png", _png(1)[:60], "image/png")}),
    ):
        assert response.status_code == 415 and "image" in response.json()["detail"]
    assert client.post("/search/image", data={"top_k": "3"}).status_code == 422  # no file
    bad_k = client.post("/search/image", files=image, data={"top_k": "0"})
    assert bad_k.status_code == 422


def test_openapi_documents_the_new_fields(client) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("SearchFilters", "SearchRequest", "SearchResponse", "VideoList"):
        assert schemas[name].get("examples"), name
        for field, prop in schemas[name]["properties"].items():
            assert prop.get("description"), (name, field)
    assert {"400", "404", "409", "422", "503"} <= set(spec["paths"]["/search"]["post"]["responses"])
    assert "400" in spec["paths"]["/videos"]["get"]["responses"]
    assert {"413", "415", "422"} <= set(spec["paths"]["/search/image"]["post"]["responses"])


def test_pages_stay_stable_while_videos_are_ingested(client, synth_corpus) -> None:
    """Last: it adds videos. A chain of cursors never repeats a hit, its scores never rise, the
    videos there before all show once, and a new one shows only below the cursor it met."""
    before = {h["video_id"]: h["score"] for h in _search(client, top_k=10)["hits"]}
    first = _search(client, top_k=2)
    shown = _ids(first)
    for name in ("synth000006.mp4", "synth000007.mp4", "synth000008.mp4"):
        assert client.post("/videos", json={"path": name}).status_code == 202
    _index(client)
    after = {h["video_id"]: h["score"] for h in _search(client, top_k=20)["hits"]}
    assert len(after) == 9 and all(after[v] == before[v] for v in before)  # scores stay
    cursor_score = first["hits"][-1]["score"]
    scores = [h["score"] for h in first["hits"]]
    cursor = first["next_cursor"]
    while cursor:
        page = _search(client, top_k=2, cursor=cursor)
        shown += _ids(page)
        scores += [h["score"] for h in page["hits"]]
        cursor = page["next_cursor"]
    assert len(shown) == len(set(shown)) and scores == sorted(scores, reverse=True)
    new = set(after) - set(before)
    assert any(after[v] > cursor_score for v in new)  # above the cursor: never shown
    assert set(before) <= set(shown)
    assert set(shown) - set(before) == {v for v in new if after[v] < cursor_score}


def test_explain_gives_each_phrase_the_frames_it_attended_to(client) -> None:
    plain = _search(client, top_k=3)
    assert all(h["explain"] is None for h in plain["hits"])  # only when asked
    found = _search(client, top_k=3, explain=True)
    assert _ids(found) == _ids(plain)  # explaining changes no ranking
    for hit in found["hits"]:
        reasons = hit["explain"]
        phrases = [r["phrase"] for r in reasons]
        assert any("moves" in p for p in phrases) and any("star" in p for p in phrases)
        best = hit["moments"][0]["segment"]
        for r in reasons:
            times = [f["t_s"] for f in r["frames"]]
            assert 1 <= len(times) <= 3 and all(
                best["start_s"] <= t <= best["end_s"] for t in times
            )
            weights = [f["weight"] for f in r["frames"]]
            assert weights == sorted(weights, reverse=True) and 0 < sum(weights) <= 1.001
            assert (r["segment"] is not None) == (r["kind"] == "action")
        # the phrases' cosines average to the level scores the hit was ranked by
        for kind in ("action", "entity"):
            own = [r["score"] for r in reasons if r["kind"] == kind]
            assert sum(own) / len(own) == pytest.approx(
                hit["scores"][f"individual_{kind}"], abs=2e-3
            )


def test_level_weights_rerank_by_the_levels_asked_for(client) -> None:
    fusion = client.app.state.hanet.searcher.model.cfg.fusion
    asked = {"event": 0.5, "action": 2.0, "concept": 0.0}
    level = {"global": "event", "local_action": "action", "individual_action": "action",
             "local_entity": "entity", "individual_entity": "entity",
             "concept_verb": "concept", "concept_noun": "concept"}  # fmt: skip
    found = _search(client, top_k=6, weights=asked)
    for hit in found["hits"]:  # the score is the fusion with the levels' weights multiplied
        expected = sum(
            w * asked.get(level[name], 1.0) * hit["scores"][name]
            for name, w in zip(SCORE_NAMES, fusion, strict=True)
        )
        assert hit["score"] == pytest.approx(expected, abs=2e-3)
    assert [h["score"] for h in found["hits"]] == sorted(
        (h["score"] for h in found["hits"]), reverse=True
    )
    default = _search(client, top_k=6)
    same = _search(client, top_k=6, weights={})  # every level at 1: as trained
    assert [h["score"] for h in same["hits"]] == [h["score"] for h in default["hits"]]
    assert [h["score"] for h in found["hits"]] != [h["score"] for h in default["hits"]]
    next_page = _search(client, top_k=2)["next_cursor"]
    body = {"query": SENTENCE, "top_k": 2, "cursor": next_page, "weights": {"action": 2}}
    assert client.post("/search", json=body).status_code == 400  # another ranking's cursor


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"weights": dict.fromkeys(("event", "action", "entity", "concept"), 0)}, "weight 0"),
        ({"weights": {"motion": 1}}, "motion"),
        ({"weights": {"event": -1}}, "greater than or equal"),
        ({"explain": "yes"}, "explain"),
    ],
)
def test_bad_weights_and_explain_are_refused(client, body, says) -> None:
    response = client.post("/search", json={"query": SENTENCE, **body})
    assert response.status_code == 422 and says in response.text, response.text
    response = client.post("/search", json={"video_id": client.ids[0], "explain": True})
    assert response.status_code == 422 and "go with a sentence" in response.text
