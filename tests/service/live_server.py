"""The app served over real HTTP on a free loopback port, in a thread, for tests that need a
real server (a browser, raw sockets)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from fastapi import FastAPI

from service.app import create_app
from service.settings import HanetSettings


@contextlib.contextmanager
def serve(settings: HanetSettings, with_indexer: bool = True) -> Iterator[tuple[FastAPI, str]]:
    """(app, its URL) while the block runs; the server stops after it."""
    import uvicorn

    app = create_app(settings, with_indexer=with_indexer)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
