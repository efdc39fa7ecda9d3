"""Webhooks against a real HTTP server on loopback: the signature a receiver checks, a failed
attempt retried after its back-off, giving up, and the whole path over HTTP on SQLite and
PostgreSQL (ingest, index, the app's delivery loop POSTs, GET /webhooks/deliveries shows it)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from db import outbox, queue
from db.connect import make_engine
from indexer.job import run_indexing
from service.app import create_app
from service.settings import HanetSettings
from service.webhooks import WebhookCfg, deliver_due, retry_delay, signature, verify
from tests.service.receiver import Receiver

SECRET = "s3cret-s3cret-s3cret"


def _receiver_check(header: str, body: bytes, secret: str = SECRET) -> bool:
    """What the README tells a receiver to do, written out independently of service.webhooks."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    mac = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256)
    fresh = abs(time.time() - int(fields["t"])) <= 300
    return fresh and hmac.compare_digest(mac.hexdigest(), fields["v1"])


def test_signatures_verify_and_refuse_what_they_must() -> None:
    body, now = b'{"event":"video.indexed"}', 1_764_547_200
    header = signature(SECRET.encode(), body, now)
    stamp, mac = header.split(",")
    assert stamp == f"t={now}" and len(mac.removeprefix("v1=")) == 64
    assert verify(SECRET.encode(), header, body, now=now + 10)
    assert not verify(SECRET.encode(), header, body + b" ", now=now)  # body changed
    assert not verify(b"another-secret-entirely", header, body, now=now)
    assert not verify(SECRET.encode(), header, body, now=now + 301)  # a replay, later
    assert not verify(SECRET.encode(), "v1=" + mac, body, now=now)  # no timestamp
    assert not verify(SECRET.encode(), f"t={now + 1},{mac}", body, now=now)  # stamp changed


def test_settings_need_a_strong_secret_with_a_url() -> None:
    with pytest.raises(ValueError, match="webhook_secret"):
        HanetSettings(webhook_url="http://hooks.example.com/h")
    with pytest.raises(ValueError, match="16 characters"):
        HanetSettings(webhook_url="http://hooks.example.com/h", webhook_secret="short")
    with pytest.raises(ValueError):
        HanetSettings(webhook_url="ftp://hooks.example.com/h", webhook_secret=SECRET)
    cfg = WebhookCfg.of(HanetSettings(webhook_url="http://h.example/x", webhook_secret=SECRET))
    assert cfg is not None and cfg.secret == SECRET.encode()
    assert WebhookCfg.of(HanetSettings()) is None
    assert [retry_delay(cfg, n) for n in (1, 2, 3)] == [10.0, 20.0, 40.0]
    assert retry_delay(cfg, 30) == 3600.0


def _event(engine) -> int:
    video_id, _ = queue.enqueue(engine, media_path="a.mp4", sha256="a" * 64, title="a")
    queue.claim(engine, worker="w", limit=1)
    assert queue.complete(
        outbox.notifying(engine),
        video_id,
        worker="w",
        duration_s=2.0,
        checkpoint_sha256="c" * 64,
        concepts=None,
    )
    return video_id


def test_a_failed_post_is_retried_after_its_back_off(db_url) -> None:
    engine = make_engine(db_url)
    video_id = _event(engine)
    now = datetime.now(timezone.utc)
    with Receiver(statuses=[503]) as receiver:
        cfg = WebhookCfg(url=f"{receiver.base}/hook?x=1", secret=SECRET.encode(), retry_s=30)
        assert deliver_due(engine, cfg, worker="d", now=now) == 0
        [first] = receiver.got
        assert first.path == "/hook?x=1" and first.headers["X-Hanet-Event"] == "video.indexed"
        assert _receiver_check(first.headers["X-Hanet-Signature"], first.body)
        assert not _receiver_check(first.headers["X-Hanet-Signature"], first.body, "x" * 20)
        payload = json.loads(first.body)
        assert payload["video"]["id"] == video_id and payload["event"] == "video.indexed"
        [row], _ = outbox.deliveries(engine)
        assert (row.status, row.attempts, row.response_status) == ("pending", 1, 503)
        assert row.last_error == "HTTP 503 Service Unavailable"
        assert deliver_due(engine, cfg, worker="d", now=now + timedelta(seconds=29)) == 0
        assert len(receiver.got) == 1  # not due yet
        assert deliver_due(engine, cfg, worker="d", now=now + timedelta(seconds=30)) == 1
        second = receiver.got[1]
    assert second.body == first.body  # the same event, the same delivery id
    assert second.headers["X-Hanet-Delivery"] == first.headers["X-Hanet-Delivery"] == str(row.id)
    assert _receiver_check(second.headers["X-Hanet-Signature"], second.body)
    [row], _ = outbox.deliveries(engine)
    assert (row.status, row.attempts, row.response_status) == ("delivered", 2, 200)
    engine.dispose()


def test_an_unreachable_receiver_is_given_up_after_the_last_attempt(db_url) -> None:
    engine = make_engine(db_url)
    _event(engine)
    with Receiver() as gone:
        url = gone.base  # a port nobody listens on once the server is closed
    cfg = WebhookCfg(url=url, secret=SECRET.encode(), retry_s=1, max_attempts=2, timeout_s=5)
    now = datetime.now(timezone.utc)
    assert deliver_due(engine, cfg, worker="d", now=now) == 0
    assert deliver_due(engine, cfg, worker="d", now=now + timedelta(seconds=1)) == 0
    [row], _ = outbox.deliveries(engine)
    assert (row.status, row.attempts, row.response_status) == ("failed", 2, None)
    assert "ConnectionRefusedError" in row.last_error
    assert deliver_due(engine, cfg, worker="d", now=now + timedelta(days=1)) == 0
    engine.dispose()


def test_indexed_and_failed_videos_are_posted_over_http(
    database, tmp_path, synth_corpus, vocab_checkpoint
) -> None:
    key = "k" * 24
    with Receiver() as receiver:
        settings = HanetSettings(
            data_dir=tmp_path / "data",
            database_url=database,
            checkpoint=vocab_checkpoint,
            media_root=synth_corpus,
            api_key=key,
            webhook_url=f"{receiver.base}/hooks",
            webhook_secret=SECRET,
            url_allow_private=True,
        )
        receiver.files["/junk.mp4"] = b"not a video at all\n" * 50
        with TestClient(create_app(settings)) as client:
            keyed = {"X-API-Key": key}
            body = {"path": "synth000001.mp4", "title": "one"}
            video_id = client.post("/videos", json=body, headers=keyed).json()["id"]
            junk = client.post("/videos", json={"url": f"{receiver.base}/junk.mp4"}, headers=keyed)
            assert junk.status_code == 202
            state = client.app.state.hanet
            cfg = dataclasses.replace(settings.indexing, batch_size=4, decode_workers=1)
            run_indexing(
                state.engine, state.searcher.model, settings.index_dir, cfg, progress=False
            )
            _wait(lambda: _delivered(client, keyed) == 2)
            posts = {json.loads(r.body)["event"]: r for r in receiver.got if r.path == "/hooks"}
            got, failed = posts["video.indexed"], posts["video.failed"]
            for post in (got, failed):
                assert _receiver_check(post.headers["X-Hanet-Signature"], post.body)
            video = json.loads(got.body)["video"]
            assert (video["id"], video["status"], video["title"]) == (video_id, "indexed", "one")
            video = json.loads(failed.body)["video"]
            assert video["id"] == junk.json()["id"] and video["status"] == "failed"
            assert video["failure_reason"].startswith("not a video")
            assert client.get("/webhooks/deliveries").status_code == 401  # behind the key
            listing = client.get(f"/webhooks/deliveries?video_id={video_id}", headers=keyed)
            [item] = listing.json()["items"]
            assert (item["event"], item["video_id"], item["attempts"]) == (
                "video.indexed",
                video_id,
                1,
            )
            assert item["response_status"] == 200 and item["delivered_at"] is not None
            assert item["payload"]["video"]["id"] == video_id
            other = client.get(f"/webhooks/deliveries?video_id={video_id + 7}", headers=keyed)
            assert other.json()["total"] == 0
            bad = client.get("/webhooks/deliveries?status=lost", headers=keyed)
            assert bad.status_code == 422


def _delivered(client, headers) -> int:
    query = "/webhooks/deliveries?status=delivered"
    return client.get(query, headers=headers).json()["total"]


def _wait(condition, deadline_s: float = 60.0) -> None:
    """Poll ``condition`` until it holds (the app's delivery loop runs on its own thread)."""
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, "the condition never held"
        time.sleep(0.1)


def test_a_watching_worker_delivers_without_an_api(tmp_path, synth_corpus, vocab_checkpoint):
    """`hanet index run --watch` alone (no API process) posts the events it writes."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    with Receiver() as receiver:
        env = {
            **os.environ,
            "HANET_DATA_DIR": str(tmp_path / "data"),
            "HANET_CHECKPOINT": str(vocab_checkpoint),
            "HANET_WEBHOOK_URL": f"{receiver.base}/hooks",
            "HANET_WEBHOOK_SECRET": SECRET,
            "HANET_DECODE_WORKERS": "1",
        }
        env.pop("HANET_DATABASE_URL", None)
        hanet = [str(Path(sys.executable).with_name("hanet"))]
        video = str(synth_corpus / "synth000002.mp4")
        subprocess.run([*hanet, "index", "add", video], env=env, check=True, capture_output=True)
        worker = subprocess.Popen([*hanet, "index", "run", "--watch"], env=env)
        try:
            _wait(lambda: len(receiver.got) >= 1, deadline_s=120)
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0
    [posted] = receiver.got
    event = json.loads(posted.body)
    assert event["event"] == "video.indexed" and event["video"]["status"] == "indexed"
    assert _receiver_check(posted.headers["X-Hanet-Signature"], posted.body)
