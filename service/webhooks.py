"""Webhook delivery: the outbox's events (db.outbox) POSTed to the configured URL, signed,
retried with exponential back-off.

Each POST carries a JSON body and these headers::

    X-Hanet-Event: video.indexed            (or video.failed)
    X-Hanet-Delivery: 42                    (the delivery id: drop repeats by it)
    X-Hanet-Signature: t=1764547200,v1=<hex HMAC-SHA256 of "<t>.<body>" under the secret>

The receiver recomputes the HMAC over the timestamp, a dot and the raw body, compares it in
constant time, and refuses a timestamp more than five minutes from its clock (a captured
request cannot be replayed later). Any 2xx answer is a delivery; anything else (another
status, a refused connection, a timeout) is retried after ``retry_s``, doubled each time up
to an hour, until ``max_attempts``. Delivery is at least once: a deliverer killed after the POST
and before it records the outcome leaves the event to be sent again."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from sqlalchemy import Engine

from db import outbox, queue
from service.settings import HanetSettings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hanet-Signature"
TOLERANCE_S = 300  # how far a signature's timestamp may be from the receiver's clock
MAX_RETRY_S = 3600.0


@dataclass(frozen=True)
class WebhookCfg:
    url: str
    secret: bytes
    timeout_s: float = 10.0
    max_attempts: int = 10
    retry_s: float = 10.0
    lease_s: float = 60.0  # a claimed delivery's lease: longer than one POST can take
    poll_s: float = 1.0  # how often the loop looks for due deliveries

    @classmethod
    def of(cls, settings: HanetSettings) -> WebhookCfg | None:
        """The settings' webhook, None without a URL."""
        if settings.webhook_url is None or settings.webhook_secret is None:
            return None
        return cls(
            url=settings.webhook_url,
            secret=settings.webhook_secret.get_secret_value().encode(),
            timeout_s=settings.webhook_timeout_s,
            max_attempts=settings.webhook_max_attempts,
            retry_s=settings.webhook_retry_s,
            lease_s=max(60.0, 3 * settings.webhook_timeout_s),
        )


def signature(secret: bytes, body: bytes, timestamp: int) -> str:
    """The X-Hanet-Signature value of ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: bytes, header: str, body: bytes, now: float, tolerance_s: int = TOLERANCE_S
) -> bool:
    """A receiver's check of an X-Hanet-Signature value: the HMAC matches and the timestamp
    is within ``tolerance_s`` of ``now``."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    stamp = fields.get("t", "")
    if not stamp.isdigit() or abs(now - int(stamp)) > tolerance_s:
        return False
    expected = signature(secret, body, int(stamp)).partition(",v1=")[2]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def retry_delay(cfg: WebhookCfg, attempts: int) -> float:
    """The wait after the ``attempts``-th failed attempt: retry_s, doubled each time, capped."""
    return min(MAX_RETRY_S, cfg.retry_s * 2 ** (attempts - 1))


def post(cfg: WebhookCfg, delivery: outbox.Due) -> tuple[int | None, str | None]:
    """One POST of a delivery: (the response status or None, the error or None if 2xx).
    No redirect is followed (a 3xx is a failure: the configured URL should be the final one)."""
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "hanet-webhook/0.1",
        "X-Hanet-Event": delivery.event,
        "X-Hanet-Delivery": str(delivery.id),
        SIGNATURE_HEADER: signature(cfg.secret, body, int(time.time())),
    }
    parts = urlsplit(cfg.url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=cfg.timeout_s)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        response.read(64 * 1024)
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    if 200 <= response.status < 300:
        return response.status, None
    return response.status, f"HTTP {response.status} {response.reason}"


def deliver_due(
    engine: Engine, cfg: WebhookCfg, *, worker: str, now: datetime | None = None
) -> int:
    """Claim the deliveries due at ``now`` (default: the present) and attempt each once,
    recording the outcome; returns how many were delivered."""
    now = now or datetime.now(timezone.utc)
    delivered = 0
    for due in outbox.claim_due(engine, worker=worker, lease_s=cfg.lease_s, now=now):
        status, error = post(cfg, due)
        attempts = due.attempts + 1
        retry_at = None
        if error is not None and attempts < cfg.max_attempts:
            retry_at = now + timedelta(seconds=retry_delay(cfg, attempts))
        if error is not None:
            log.warning("webhook delivery %d (attempt %d) failed: %s", due.id, attempts, error)
        outbox.record_attempt(
            engine,
            due.id,
            worker=worker,
            delivered=error is None,
            response_status=status,
            error=error,
            retry_at=retry_at,
        )
        delivered += error is None
    return delivered


def start_delivery(engine: Engine, cfg: WebhookCfg, stop: threading.Event) -> threading.Thread:
    """The delivery loop in a thread, until ``stop``: due deliveries every ``cfg.poll_s``."""
    worker = queue.worker_name()

    def loop() -> None:
        while not stop.is_set():
            try:
                deliver_due(engine, cfg, worker=worker)
            except Exception:  # the database away for a moment: try again next round
                log.exception("webhook delivery round failed")
            stop.wait(cfg.poll_s)

    thread = threading.Thread(target=loop, name="hanet-webhooks", daemon=True)
    thread.start()
    return thread
