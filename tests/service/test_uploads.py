"""Uploads over real HTTP: written once into the upload folder as they arrive, the size limit
enforced as bytes arrive (declared length or chunked), nothing left behind on a refused,
malformed or broken upload, and a full disk answered 507 with what was stored kept."""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from service.settings import HanetSettings
from tests.service.live_server import serve

LIMIT = 200_000
BOUNDARY = "hanet-test-boundary"


@pytest.fixture
def settings(tmp_path, vocab_checkpoint) -> HanetSettings:
    return HanetSettings(
        data_dir=tmp_path / "data", checkpoint=vocab_checkpoint, max_upload_bytes=LIMIT
    )


def _file_part(name: str = "clip.mp4") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()


END = f"\r\n--{BOUNDARY}--\r\n".encode()


class ChunkedUpload:
    """A POST /videos sent by hand with Transfer-Encoding: chunked (no Content-Length), a
    piece at a time, watching for an early answer."""

    def __init__(self, url: str) -> None:
        host = urlsplit(url)
        self.sock = socket.create_connection((host.hostname, host.port))
        self.sent = 0
        self.sock.sendall(
            (
                f"POST /videos HTTP/1.1\r\nHost: {host.netloc}\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            ).encode()
        )

    def send(self, piece: bytes) -> bool:
        """Send one chunk; False once the server has answered or closed."""
        if select.select([self.sock], [], [], 0)[0]:
            return False
        try:
            self.sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return False
        self.sent += len(piece)
        return True

    def finish(self) -> tuple[int, bytes]:
        """End the body (when still possible) and read the answer: (status, body)."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(b"0\r\n\r\n")
        data = b""
        self.sock.settimeout(60)
        with contextlib.suppress(ConnectionResetError):
            while chunk := self.sock.recv(65536):
                data += chunk
        self.sock.close()
        return int(data.split(b" ", 2)[1]), data.split(b"\r\n\r\n", 1)[-1]

    def close(self) -> None:
        self.sock.close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_chunked_upload_past_the_limit_is_cut_off_as_it_arrives(settings) -> None:
    with serve(settings, with_indexer=False) as (_app, url):
        upload = ChunkedUpload(url)
        upload.send(_file_part())
        attempted = 256 * 1024 * 1024  # far more than the server may take in before refusing
        while upload.sent < attempted and upload.send(os.urandom(64 * 1024)):
            pass
        status, body = upload.finish()
    assert status == 413 and b"larger than 200000 bytes" in body
    # refused early: the client stopped far short of what it meant to send (what it did send
    # is the limit plus the sockets' buffers)
    assert upload.sent < attempted / 4
    assert _leftovers(settings.upload_dir) == []


def test_an_upload_is_written_once_into_the_upload_folder(settings, synth_corpus) -> None:
    video = (synth_corpus / "synth000003.mp4").read_bytes()
    with serve(settings, with_indexer=False) as (_app, url):
        upload = ChunkedUpload(url)
        upload.send(_file_part("My Clip.MP4") + video[:1000])
        partial = []
        _wait_for(lambda: partial.extend(settings.upload_dir.glob(".upload-*")) or partial, "it")
        inode = partial[0].stat().st_ino  # the file the bytes go into, while they arrive
        upload.send(video[1000:] + END)
        status, body = upload.finish()
    assert status == 202, body
    stored = settings.upload_dir / (hashlib.sha256(video).hexdigest() + ".mp4")
    assert stored.read_bytes() == video
    assert stored.stat().st_ino == inode  # renamed into place, not copied
    assert _leftovers(settings.upload_dir) == [stored.name]


def test_a_broken_upload_leaves_nothing(settings, synth_corpus) -> None:
    video = (synth_corpus / "synth000003.mp4").read_bytes()
    with serve(settings, with_indexer=False) as (_app, url):
        upload = ChunkedUpload(url)
        upload.send(_file_part() + video[:1000])
        _wait_for(lambda: list(settings.upload_dir.glob(".upload-*")), "the upload to start")
        upload.close()  # the client goes away mid-body
        _wait_for(lambda: _leftovers(settings.upload_dir) == [], "the partial file to go")
        base = url + "/videos"
        cases = [
            # malformed: the body ends inside the file part (no closing boundary)
            (_file_part() + b"abc", 400, "malformed"),
            (_file_part() + b"abc\r\n" + _file_part("b.mp4") + b"x" + END, 422, "one file"),
            (f"--{BOUNDARY}--\r\n".encode(), 422, "no multipart field"),
            (_file_part() + END, 422, "empty"),
        ]
        for body, status, words in cases:
            answer = httpx.post(
                base,
                content=body,
                headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
            )
            assert answer.status_code == status, (body[:80], answer.text)
            assert words in answer.json()["detail"]
        no_boundary = httpx.post(
            base, content=b"x", headers={"content-type": "multipart/form-data"}
        )
        assert no_boundary.status_code == 400 and "boundary" in no_boundary.json()["detail"]
    assert _leftovers(settings.upload_dir) == []


@contextlib.contextmanager
def _small_disk(folder: Path, size: str) -> Iterator[None]:
    """A real filesystem of ``size`` (tmpfs) mounted at ``folder``: skipped where mounting is
    not allowed (it needs root)."""
    folder.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_full_disk_answers_507_and_keeps_what_was_stored(settings, synth_corpus) -> None:
    first = (synth_corpus / "synth000004.mp4").read_bytes()
    with _small_disk(settings.upload_dir, "64k"), serve(settings, with_indexer=False) as (_, url):
        kept = httpx.post(url + "/videos", files={"file": ("a.mp4", first, "video/mp4")})
        assert kept.status_code == 202, kept.text
        big = os.urandom(150_000)  # under the size limit, over the free space
        full = httpx.post(url + "/videos", files={"file": ("b.mp4", big, "video/mp4")})
        assert full.status_code == 507 and "storage is full" in full.json()["detail"]
        stored = settings.upload_dir / (hashlib.sha256(first).hexdigest() + ".mp4")
        assert _leftovers(settings.upload_dir) == [stored.name]
        assert stored.read_bytes() == first  # what was stored is untouched
        listed = httpx.get(url + "/videos").json()
        assert [v["id"] for v in listed["items"]] == [kept.json()["id"]]
        # the partial file's space was given back: the next upload that fits is taken
        second = (synth_corpus / "synth000005.mp4").read_bytes()
        taken = httpx.post(url + "/videos", files={"file": ("c.mp4", second, "video/mp4")})
        assert taken.status_code == 202, taken.text


def test_an_upload_carries_tags_and_metadata(settings, synth_corpus) -> None:
    video = (synth_corpus / "synth000004.mp4").read_bytes()
    with serve(settings, with_indexer=False) as (_app, url):
        files = {"file": ("clip.mp4", video, "video/mp4")}
        for data, says in (
            ({"metadata": "{not json"}, "not JSON"),
            ({"metadata": '{"camera": 7}'}, "string"),  # values are strings
            ({"tags": ",".join(f"t{i}" for i in range(51))}, "50"),
        ):
            answer = httpx.post(url + "/videos", files=files, data=data)
            assert answer.status_code == 400 and says in answer.text, answer.text
        assert _leftovers(settings.upload_dir) == []  # a refused upload is not kept
        data = {"title": "garden", "tags": "pets, garden,,", "metadata": '{"camera": "phone"}'}
        answer = httpx.post(url + "/videos", files=files, data=data)
        assert answer.status_code == 202, answer.text
        shown = httpx.get(f"{url}/videos/{answer.json()['id']}").json()
    assert (shown["title"], shown["tags"], shown["metadata"]) == (
        "garden",
        ["pets", "garden"],
        {"camera": "phone"},
    )
