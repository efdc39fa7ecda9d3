"""Ingest -> index -> search -> delete through the API with the index in Milvus Lite (a local
file, in-process): the same hits as the FAISS store on the same videos, deletes gone at once,
and nothing written to the index folder."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from indexer.job import IndexingCfg, run_indexing
from service.app import create_app
from service.settings import HanetSettings

pytest.importorskip("pymilvus")

CFG = IndexingCfg(batch_size=4, decode_workers=1)
NAMES = ("synth000001.mp4", "synth000002.mp4", "synth000003.mp4", "synth000005.mp4")
QUERY = {"query": "a red star moves left", "top_k": 4}


def _ingest_and_search(settings: HanetSettings) -> tuple[TestClient, dict, dict]:
    client = TestClient(create_app(settings))
    client.__enter__()
    ids = {}
    for name in NAMES:
        response = client.post("/videos", json={"path": name})
        assert response.status_code == 202
        ids[response.json()["id"]] = name
    state = client.app.state.hanet
    run_indexing(state.engine, state.searcher.model, settings.index_dir, CFG, progress=False)
    assert {v["status"] for v in client.get("/videos").json()["items"]} == {"indexed"}
    return client, ids, client.post("/search", json=QUERY).json()


@pytest.mark.slow
def test_ingest_search_delete_on_milvus_lite_matches_faiss(
    tmp_path, synth_corpus, vocab_checkpoint
) -> None:
    common = {"checkpoint": vocab_checkpoint, "media_root": synth_corpus}
    faiss_settings = HanetSettings(data_dir=tmp_path / "faiss", **common)
    milvus_settings = HanetSettings(
        data_dir=tmp_path / "milvus", vector_store="milvus", milvus_collection="e2e", **common
    )
    faiss_client, faiss_ids, expected = _ingest_and_search(faiss_settings)
    faiss_client.__exit__(None, None, None)
    client, ids, found = _ingest_and_search(milvus_settings)
    try:
        assert (milvus_settings.data_dir / "milvus.db").exists()
        assert not (milvus_settings.index_dir / "CURRENT").exists()  # no FAISS build at all
        assert client.get("/ready").json()["checks"]["index"].endswith("/milvus")
        # the same ranking of the same files, with the same scores and moments
        names = [ids[h["video_id"]] for h in found["hits"]]
        assert len(names) == 4
        assert names == [faiss_ids[h["video_id"]] for h in expected["hits"]]
        for got, want in zip(found["hits"], expected["hits"], strict=True):
            assert got["score"] == pytest.approx(want["score"], abs=1e-4)
            assert got["moment"] == pytest.approx(want["moment"], abs=1e-3)

        gone = found["hits"][0]["video_id"]
        assert client.delete(f"/videos/{gone}").status_code == 204
        after = client.post("/search", json=QUERY).json()["hits"]
        assert [h["video_id"] for h in after] == [h["video_id"] for h in found["hits"][1:]]
        # tombstoned in Milvus: a worker that still held the video could not bring it back
        from index.milvus import Meta

        target = client.app.state.hanet.searcher.index.target
        assert Meta(target).tombstoned([gone]) == {gone}
    finally:
        client.__exit__(None, None, None)
