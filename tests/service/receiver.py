"""A real HTTP server on loopback for the tests of webhooks and ingest by URL: it records what
it is sent and answers with planned statuses, or serves files, redirects, endless bodies."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """What the server answers: ``statuses`` for POSTs in turn (then 200); ``files`` by path
    for GETs; ``redirects`` path -> Location; ``endless`` paths stream without end."""

    statuses: list[int] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    endless: set[str] = field(default_factory=set)
    got: list[Received] = field(default_factory=list)
    host: str = "127.0.0.1"
    server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}"

    def __enter__(self) -> Receiver:
        self.server = ThreadingHTTPServer((self.host, 0), _handler(self))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            receiver.got.append(Received(self.path, dict(self.headers.items()), body))
            status = receiver.statuses.pop(0) if receiver.statuses else 200
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            receiver.got.append(Received(self.path, dict(self.headers.items()), b""))
            if self.path in receiver.redirects:
                self.send_response(302)
                self.send_header("location", receiver.redirects[self.path])
                self.send_header("content-length", "0")
                self.end_headers()
            elif self.path in receiver.endless:  # no length: read until it stops (never)
                self.send_response(200)
                self.end_headers()
                try:
                    while True:
                        self.wfile.write(b"\0" * 65536)
                except OSError:  # the client hung up
                    pass
            elif self.path in receiver.files:
                data = receiver.files[self.path]
                self.send_response(200)
                self.send_header("content-type", "video/mp4")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_error(404)

    return Handler
