"""The load drivers of ``search_latency.py``'s load mode: closed-loop clients (``drive``),
open-loop arrivals (``arrive``), and their summary. Plain http.client on keep-alive
connections, one per thread: its own overhead is small next to the server's."""

from __future__ import annotations

import itertools
import re
import threading
import time
from pathlib import Path

import numpy as np


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def load_runs(
    client, port: int, loads: list[tuple[str, float]], duration: float, warmup: int, queries
) -> list[dict]:
    """After ``warmup`` searches one at a time on ``client`` (httpx), one run per load:
    ("clients", N) for ``drive``, ("rate", R) for ``arrive``, ``duration`` seconds each, with
    the batches the server formed meanwhile (from its /metrics; None where it has none)."""
    sentences_left = itertools.cycle(queries)
    for _ in range(warmup):
        client.post("/search", json={"query": next(sentences_left), "top_k": 10})
    runs = []
    for kind, level in loads:
        before = batch_counts(client.get("/metrics").text)
        if kind == "clients":
            run = drive(port, int(level), duration, sentences_left)
        else:
            run = arrive(port, level, duration, sentences_left)
        after = batch_counts(client.get("/metrics").text)
        run["batches"] = {k: after[k] - before[k] for k in after} if after else None
        runs.append(run)
    return runs


def _post_search(conn, query: str) -> int:
    """One POST /search on ``conn`` (http.client): its status (0: no answer). A kept-alive
    connection the server has closed meanwhile (idle too long) is opened again once, as
    browsers do."""
    import http.client
    import json

    body = json.dumps({"query": query, "top_k": 10})
    for attempt in (1, 2):
        try:
            conn.request("POST", "/search", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException) as exc:
            conn.close()  # http.client reconnects on the next request
            stale = isinstance(exc, ConnectionResetError | BrokenPipeError)
            if not stale or attempt == 2:
                return 0
    return 0


def arrive(port: int, rate: float, duration: float, sentences_left, senders: int = 256) -> dict:
    """Searches arriving at random at ``rate`` per second for ``duration`` seconds (Poisson
    arrivals, seeded), each sent by the next free one of ``senders`` threads with keep-alive
    connections: each answer's latency from its arrival (a search that waited for a free sender
    counts that wait too)."""
    import http.client
    import queue

    rng = np.random.default_rng(3)
    gaps = rng.exponential(1 / rate, size=int(rate * duration * 2) + 10)
    arrivals = np.cumsum(gaps)
    arrivals = arrivals[arrivals < duration]
    todo: queue.Queue = queue.Queue()
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def sender() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while (job := todo.get()) is not None:
            due, query = job
            status = _post_search(conn, query)
            with lock:
                results.append((status, (time.perf_counter() - due) * 1000))
        conn.close()

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    for at in arrivals:
        time.sleep(max(0.0, began + at - time.perf_counter()))
        todo.put((began + at, next(sentences_left)))
    for _ in threads:
        todo.put(None)
    for t in threads:
        t.join()
    run = _summary(results, time.perf_counter() - began)
    return {**run, "clients": f"rate {rate:g}/s"}


def _summary(results: list[tuple[int, float]], elapsed: float) -> dict:
    ok = [ms for status, ms in results if status == 200]
    return {
        "seconds": elapsed,
        "ok": len(ok),
        "per_s": len(ok) / elapsed,
        "p50": pct(ok, 50) if ok else float("nan"),
        "p99": pct(ok, 99) if ok else float("nan"),
        "refused": sum(status == 503 for status, _ in results),
        "errors": sum(status not in (200, 503) for status, _ in results),
    }


def drive(port: int, clients: int, duration: float, sentences_left) -> dict:
    """``clients`` threads, each on its own keep-alive connection, POSTing /search back to
    back until ``duration`` seconds have passed: each answer's latency by status."""
    import http.client

    lock = threading.Lock()
    results: list[tuple[int, float]] = []  # (status, ms); status 0: no answer (an error)
    deadline = time.perf_counter() + duration

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = []
        while time.perf_counter() < deadline:
            with lock:
                query = next(sentences_left)
            t0 = time.perf_counter()
            status = _post_search(conn, query)
            mine.append((status, (time.perf_counter() - t0) * 1000))
        conn.close()
        with lock:
            results.extend(mine)

    began = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # elapsed: the last answers come in after the deadline
    return {**_summary(results, time.perf_counter() - began), "clients": f"{clients} clients"}


def batch_counts(metrics: str) -> dict[str, float]:
    """Batches and the searches in them so far, from /metrics ({} where there are none)."""
    found = dict(re.findall(r"^hanet_search_batch_size_(count|sum) (\S+)$", metrics, re.M))
    return {k: float(v) for k, v in found.items()}


def report_load(runs: list[dict], server: Path) -> None:
    for run in runs:
        batches = run["batches"]
        mean = batches["sum"] / batches["count"] if batches and batches["count"] else None
        print(
            f"{run['clients']:>11s}: {run['per_s']:6.1f} searches/s  p50 "
            f"{run['p50']:7.1f} ms  p99 {run['p99']:7.1f} ms  answered {run['ok']} in "
            f"{run['seconds']:.1f} s  503: {run['refused']}  errors: {run['errors']}  mean batch "
            + (f"{mean:.1f}" if mean is not None else "n/a")
        )
    print(f"server RSS {runs[-1]['rss_mb']:.0f} MB, server code: {server}")
