"""The reader on its own: claims -> decoded segments of videos (in worker processes) or the
reasons why not. Long videos read in chunks are in test_long_videos.py."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from db.queue import Claim
from indexer import reader as reader_module
from indexer.decode import decode_video
from indexer.reader import Decoded, Reader, Undecodable
from indexer.segments import decode_segments

FRAMES, SIZE = 8, 32


def _claims(paths: list[Path], first_id: int = 1) -> list[Claim]:
    return [Claim(first_id + i, str(p)) for i, p in enumerate(paths)]


def _assert_decoded_as_in_process(read: Decoded | Undecodable, path: Path) -> None:
    """A short video: read whole, as one segment sampled as decode_video samples it."""
    assert isinstance(read, Decoded), read
    assert read.first == 0 and read.last and read.following() is None
    direct = decode_video(path, FRAMES, SIZE)
    (segment,) = read.chunk.segments
    assert np.array_equal(segment.frames, direct.frames)
    assert np.array_equal(segment.timestamps_s, direct.timestamps_s)
    assert segment.following.shape == segment.frames.shape
    assert (segment.start_s, segment.end_s) == (0.0, direct.duration_s)
    assert read.chunk.duration_s == direct.duration_s


def test_each_claim_gives_its_video_or_the_reason_in_claim_order(corpus) -> None:
    paths = sorted(corpus.iterdir())[:5]  # broken.mp4 first, then four videos
    missing = Claim(99, str(corpus / "gone.mp4"))
    with Reader(FRAMES, SIZE, workers=2) as reader:
        batch = reader.read([*_claims(paths), missing])
        assert len(batch) == 6 and batch.video_ids == [1, 2, 3, 4, 5, 99]
        reads = list(batch)
    assert [r.video_id for r in reads] == [1, 2, 3, 4, 5, 99]
    broken, *videos, gone = reads
    assert isinstance(broken, Undecodable) and "not a readable media file" in broken.reason
    assert isinstance(gone, Undecodable) and gone.reason == "file not found: gone.mp4"
    assert broken.first == gone.first == 0  # nothing of them was read
    for read, path in zip(videos, paths[1:], strict=True):
        _assert_decoded_as_in_process(read, path)


def test_the_next_batch_decodes_while_this_one_is_used(corpus) -> None:
    paths = sorted(corpus.iterdir())[1:7]
    with Reader(FRAMES, SIZE, workers=1) as reader:
        first = reader.read(_claims(paths[:3]))
        second = reader.read(_claims(paths[3:], first_id=4))  # submitted before any is waited for
        assert not reader.read([])  # an empty claim reads as an empty batch
        got = [*second, *first]
    assert [r.video_id for r in got] == [4, 5, 6, 1, 2, 3]
    assert all(isinstance(r, Decoded) for r in got)


def _decode_or_die(path, num_frames, size, cfg, *where):
    """decode_segments, except that a file named crash.mp4 kills its process (as a segfault in
    the decoder, or the kernel's out-of-memory killer, would)."""
    if Path(path).name == "crash.mp4":
        os._exit(139)
    return decode_segments(path, num_frames, size, cfg, *where)


@pytest.mark.skipif(
    multiprocessing.get_start_method() != "fork", reason="the workers must inherit the patch"
)
@pytest.mark.slow
def test_a_file_that_kills_its_decoder_costs_that_video_only(corpus, monkeypatch) -> None:
    monkeypatch.setattr(reader_module, "decode_segments", _decode_or_die)
    paths = sorted(corpus.iterdir())[1:5]
    crash = corpus.parent / "crash.mp4"
    crash.write_bytes(b"")
    claims = [*_claims(paths[:2]), Claim(3, str(crash)), *_claims(paths[2:], first_id=4)]
    with Reader(FRAMES, SIZE, workers=2) as reader:
        reads = list(reader.read(claims))
        after = list(reader.read(_claims(paths)))  # the dead pool was replaced
    assert [r.video_id for r in reads] == [1, 2, 3, 4, 5]
    dead = reads[2]
    assert isinstance(dead, Undecodable) and "decoder process died" in dead.reason
    assert dead.first == 0
    for read, path in zip([*reads[:2], *reads[3:]], paths, strict=True):
        _assert_decoded_as_in_process(read, path)
    for read, path in zip(after, paths, strict=True):
        _assert_decoded_as_in_process(read, path)


def test_decoding_processes_die_on_sigterm_though_the_indexer_handles_it(corpus) -> None:
    """The indexer handles SIGTERM (finish the batch, then stop); its forked decoding processes
    must not keep that handler, or a broken pool's terminate() of its other processes is
    ignored and the pool's shutdown waits forever on one blocked writing its result."""
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        with Reader(FRAMES, SIZE, workers=2) as reader:
            list(reader.read(_claims(sorted(corpus.iterdir())[1:3])))
            processes = list(reader._pool._processes.values())
            assert len(processes) == 2
            for process in processes:
                process.terminate()
        # Read once the pool has shut down: its own thread reaps processes that die under it,
        # and a join racing that thread's can see no exit code (os.waitpid: no such child).
        assert [p.exitcode for p in processes] == [-signal.SIGTERM] * 2
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_read_outside_its_with_block_is_an_error(corpus) -> None:
    reader = Reader(FRAMES, SIZE)
    with pytest.raises(RuntimeError, match="with"):
        reader.read(_claims(sorted(corpus.iterdir())[1:2]))


CHILD = """
import os, sys, time
from indexer.reader import Reader
from db.queue import Claim
with Reader(num_frames=4, size=32, workers=2) as reader:
    [read] = reader.read([Claim(1, sys.argv[1])])  # the pool's processes are up
    print(" ".join(str(p) for p in reader._pool._processes), flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is as good as gone
        return f.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_decoding_processes_die_with_a_killed_indexer(corpus) -> None:
    """kill -9 of the indexer must not leave its decoding processes waiting forever."""
    indexer = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(sorted(corpus.glob("*.mp4"))[0])],
        stdout=subprocess.PIPE,
        text=True,
    )
    workers = [int(p) for p in indexer.stdout.readline().split()]
    assert len(workers) == 2 and all(map(_alive, workers))
    indexer.kill()
    indexer.wait()
    deadline = time.monotonic() + 30
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, workers))
