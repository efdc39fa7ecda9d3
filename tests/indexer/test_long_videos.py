"""Long videos end to end: a generated 72 s video with hard cuts and a shot longer than the
longest segment, indexed by ``run_indexing`` (small segment settings: several chunks, many
segments) beside short videos; searched by video and by moment; deleted; killed and run again;
damaged files."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
from av.video.frame import PictureType
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import migrations
from db import queue
from db.connect import make_engine
from db.queue import Claim
from db.schema import Video
from index.reader import Build, load_current
from index.vectors import unit_id
from index.writer import compact
from indexer.decode import decode_video
from indexer.job import IndexingCfg, run_indexing
from indexer.reader import Decoded, Reader
from indexer.segments import DecodedSegment, SegmentCfg, decode_segments, plan_segments
from indexer.writer import remove_videos
from model import HANet, get_config
from model.preprocess import normalize_frames
from service.candidates import UNITS_PER_VIDEO
from service.search import Query, search

FPS, SIDE = 10, 96
# Shots far apart in colour: each change is a hard cut. The 1 s shot (8-9 s) joins the next
# one; the 26 s shot (40-66 s) is longer than max_s and is cut into windows.
PALETTE = [(230, 40, 40), (30, 110, 30), (40, 90, 220), (240, 240, 240), (60, 220, 220),
           (20, 20, 20), (250, 230, 60), (120, 20, 140)]  # fmt: skip
CUTS_S, DURATION_S = [8.0, 9.0, 20.0, 31.0, 40.0, 66.0], 72.0
# Small settings, so that the long video is read in four chunks and cut into many segments
# (the rules' own count: plan_segments), windows without overlap, so that the spans tile it.
SEGMENTS = SegmentCfg(min_s=2.0, max_s=12.0, window_s=6.0, overlap_s=0.0, chunk_s=20.0)
WHOLE = dataclasses.replace(SEGMENTS, chunk_s=float("inf"))
PLAN = plan_segments(CUTS_S, DURATION_S, SEGMENTS)
N = len(PLAN)  # the long video's units
SHORT = {"a.mp4": ([], 3.0), "b.mp4": ([3.0], 7.0), "c.mp4": ([5.0], 11.5)}  # one unit each
LONG_ID = 1  # queued first; the short videos are 2, 3, 4


def _image(index: int, colour: tuple[int, int, int]) -> np.ndarray:
    """A shot-coloured frame with a square moving right."""
    image = np.empty((SIDE, SIDE, 3), np.uint8)
    image[:] = colour
    x = 8 + (3 * index) % 64
    image[40:64, x : x + 16] = [255 - v for v in colour]
    return image


def _write(path: Path, cuts_s: list[float], duration_s: float) -> Path:
    """An H.264 video at FPS with hard cuts at ``cuts_s``, each on a keyframe."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuv420p"
        stream.options = {"x264-params": "forced-idr=1"}
        for i in range(round(duration_s * FPS)):
            time_s = i / FPS
            shot = sum(time_s >= c - 1e-9 for c in cuts_s)
            frame = av.VideoFrame.from_ndarray(_image(i, PALETTE[shot % len(PALETTE)]), "rgb24")
            if any(abs(time_s - c) < 1e-9 for c in cuts_s):
                frame.pict_type = PictureType.I
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """long.mp4 (72 s), its MPEG-TS and Matroska copies, and three short videos."""
    folder = tmp_path_factory.mktemp("long")
    for ext in ("mp4", "ts", "mkv"):
        _write(folder / f"long.{ext}", CUTS_S, DURATION_S)
    for name, (cuts, duration) in SHORT.items():
        _write(folder / name, cuts, duration)
    return folder


@pytest.fixture(scope="module")
def motion_model(tmp_path_factory) -> tuple[HANet, Path]:
    """A tiny model with a motion stream (it reads each frame's decoded successor), its
    temporal convolution random (it starts at zero, where motion changes nothing); saved."""
    torch.manual_seed(0)
    model = HANet(dataclasses.replace(get_config("tiny"), motion_stream=4)).eval()
    torch.nn.init.normal_(model.video.motion.weight, std=0.2)
    path = tmp_path_factory.mktemp("ckpt") / "motion.pt"
    model.save(str(path))
    return model, path


def _cfg(**kw) -> IndexingCfg:
    return IndexingCfg(**{"decode_workers": 1, "batch_size": 4, "segments": SEGMENTS, **kw})


def _queue(url: str, paths: list[Path]) -> Engine:
    """A migrated database with ``paths`` queued in order (ids 1, 2, ...)."""
    migrations.upgrade(url)
    engine = make_engine(url)
    for i, path in enumerate(paths):
        queue.enqueue(engine, media_path=str(path), sha256=f"{i:064d}")
    return engine


def _row(engine: Engine, video_id: int) -> Video:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(Video, video_id)


def _whole(path: Path, model: HANet) -> list[DecodedSegment]:
    """The segments of ``path`` read in one call (the oracle for chunked reading)."""
    t, size = model.cfg.max_frames, model.preprocess.image_size
    chunk = decode_segments(path, t, size, WHOLE)
    assert chunk.next_start_s is None
    return chunk.segments


def _spans(segments: list[DecodedSegment]) -> list[tuple[float, float]]:
    return [(s.start_s, s.end_s) for s in segments]


def _stored_spans(build: Build, video_id: int) -> list[tuple[float, float]]:
    return [build.span(u) for u in build.units(video_id)]


@pytest.fixture(scope="module")
def indexed(media, motion_model, tmp_path_factory) -> SimpleNamespace:
    """The long video and the short ones indexed in one run, each progress write of the run
    seen as the database had it right after the write."""
    model, _ = motion_model
    root = tmp_path_factory.mktemp("run")
    url = f"sqlite:///{root / 'db.sqlite3'}"
    engine = _queue(url, [media / "long.mp4", *(media / name for name in SHORT)])
    seen, real = [], queue.progress

    def recording(engine_, video_id, **kw):
        written = real(engine_, video_id, **kw)
        row = _row(engine_, video_id)
        seen.append((video_id, written, row.status, row.indexed_s, row.duration_s, row.segments))
        return written

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(queue, "progress", recording)
        summary = run_indexing(engine, model, root / "index", _cfg(), progress=False)
    return SimpleNamespace(
        engine=engine, url=url, root=root, index=root / "index", summary=summary, seen=seen
    )


def test_a_long_video_is_indexed_as_its_segments(indexed, media, motion_model) -> None:
    """Read in chunks, its units are the segments one call reads (same spans, in order), each
    stored as the model embeds that segment's frames and their successors."""
    model, _ = motion_model
    assert indexed.summary.indexed == 4 and not indexed.summary.failed
    segments = _whole(media / "long.mp4", model)
    n = len(segments)
    assert n == N >= 8 and np.allclose(_spans(segments), PLAN)  # the cuts found where they are
    assert any(b - a == SEGMENTS.window_s for a, b in PLAN)  # the long shot in windows
    build = load_current(indexed.index, expect_checkpoint=model.checkpoint_sha256)
    units = build.units(LONG_ID)
    assert units == [unit_id(LONG_ID, i) for i in range(n)]
    assert np.allclose(_stored_spans(build, LONG_ID), _spans(segments), atol=1e-5)
    spans = _stored_spans(build, LONG_ID)
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(DURATION_S)
    assert all(b == pytest.approx(c) for (_, b), (c, _) in zip(spans, spans[1:], strict=False))
    row = _row(indexed.engine, LONG_ID)
    assert row.status == "indexed" and row.segments == n
    assert row.duration_s == pytest.approx(DURATION_S) and row.claimed_by is None
    stored = build.embeddings(units)
    with torch.inference_mode():
        for i, segment in enumerate(segments):
            frames = normalize_frames(torch.from_numpy(segment.frames), model.preprocess)[None]
            after = normalize_frames(torch.from_numpy(segment.following), model.preprocess)[None]
            mask = torch.ones(1, len(segment.frames), dtype=torch.bool)
            direct = model.encode_video(frames, mask, after)
            row_i = stored.select([i])
            for name in ("global_", "action_segments", "entity_segments", "action_frames"):
                got, want = getattr(row_i, name).float(), getattr(direct, name)
                assert torch.allclose(got[:, : want.shape[1]], want, atol=2e-3), (i, name)
            times = build.frame_times(units[i])[: len(segment.timestamps_s)]
            assert np.allclose(times, segment.timestamps_s, atol=1e-5)


def test_progress_is_written_while_it_is_indexed(indexed) -> None:
    """Each chunk but the last wrote how far the video was read, while it was processing; the
    indexed row says all of it was."""
    progress = [s for s in indexed.seen if s[0] == LONG_ID]
    assert len(progress) == 3  # four chunks
    for _, written, status, indexed_s, duration_s, segments in progress:
        assert written and status == "processing" and segments is None
        assert 0 < indexed_s < DURATION_S and duration_s == pytest.approx(DURATION_S)
    reached = [s[3] for s in progress]
    assert reached == sorted(reached) and reached[0] >= SEGMENTS.chunk_s
    assert {s[0] for s in indexed.seen} == {LONG_ID}  # short videos come in one chunk
    row = _row(indexed.engine, LONG_ID)
    assert row.indexed_s == row.duration_s == pytest.approx(DURATION_S)


def test_short_videos_stay_one_unit(indexed, media, motion_model) -> None:
    model, _ = motion_model
    build = load_current(indexed.index)
    for video_id, name in enumerate(SHORT, start=2):
        decoded = decode_video(media / name, model.cfg.max_frames, model.preprocess.image_size)
        assert build.units(video_id) == [unit_id(video_id, 0)]
        assert build.span(unit_id(video_id, 0)) == pytest.approx((0.0, decoded.duration_s))
        times = build.frame_times(unit_id(video_id, 0))[: len(decoded.timestamps_s)]
        assert np.allclose(times, decoded.timestamps_s, atol=1e-5)
        row = _row(indexed.engine, video_id)
        assert row.status == "indexed" and row.segments == 1
        assert row.duration_s == row.indexed_s == pytest.approx(SHORT[name][1])
    assert build.manifest["counts"]["event"] == N + 3


SENTENCES = ["a red square moves right", "a white box on a green field", "something falls"]


def test_search_by_video_and_by_moment(indexed, motion_model) -> None:
    """By video: the long video once per hit list, with up to ``moments`` of its units, each
    moment inside its unit's span. By moment: several of its units, each once."""
    model, _ = motion_model
    build = load_current(indexed.index)
    spans = {tuple(np.round(s, 3)) for s in _stored_spans(build, LONG_ID)}
    for sentence in SENTENCES:
        hits = search(model, build, Query(sentence, top_k=10, group_by="video", moments=3))
        assert sorted(h.video_id for h in hits) == [1, 2, 3, 4]  # each video once
        (long,) = [h for h in hits if h.video_id == LONG_ID]
        assert len(long.moments) == 3
        assert (long.start_s, long.end_s, long.score) == (
            long.moments[0].start_s, long.moments[0].end_s, long.moments[0].score,
        )  # fmt: skip
        assert [m.score for m in long.moments] == sorted(
            (m.score for m in long.moments), reverse=True
        )
        own = {(m.segment_start_s, m.segment_end_s) for m in long.moments}
        assert len(own) == 3 and own <= spans  # three different units of it
        for m in long.moments:
            assert m.segment_start_s <= m.start_s <= m.end_s <= m.segment_end_s
        for h in hits:
            if h.video_id != LONG_ID:
                assert len(h.moments) == 1  # one unit: one moment
        moments = search(model, build, Query(sentence, top_k=20, group_by="moment"))
        of_long = [m for m in moments if m.video_id == LONG_ID]
        assert len(moments) == len(of_long) + 3
        assert len(of_long) == min(len(spans), UNITS_PER_VIDEO)  # the candidates it may take
        places = {(h.moments[0].segment_start_s, h.moments[0].segment_end_s) for h in of_long}
        assert len(places) == len(of_long) and places <= spans
        for h in of_long:
            assert h.moments[0].segment_start_s <= h.start_s <= h.end_s
            assert h.end_s <= h.moments[0].segment_end_s


def _copy_of(indexed: SimpleNamespace, folder: Path) -> tuple[Engine, Path]:
    """A copy of the run's database (SQLite's backup: the WAL included) and index."""
    shutil.copytree(indexed.index, folder / "index")
    with (
        contextlib.closing(sqlite3.connect(indexed.root / "db.sqlite3")) as source,
        contextlib.closing(sqlite3.connect(folder / "db.sqlite3")) as target,
    ):
        source.backup(target)
    return make_engine(f"sqlite:///{folder / 'db.sqlite3'}"), folder / "index"


def test_deleting_it_removes_every_unit_and_compaction_keeps_the_others(
    indexed, motion_model, tmp_path
) -> None:
    model, _ = motion_model
    engine, index = _copy_of(indexed, tmp_path)
    before = load_current(index)
    units = np.array(before.units(LONG_ID), np.int64)
    assert len(units) == N and before.known(units).all()
    assert remove_videos(engine, index, [LONG_ID]) == [LONG_ID]
    for build in (load_current(index), compact(index)):
        assert LONG_ID not in build and build.units(LONG_ID) == []
        assert not build.known(units).any()
        assert build.video_ids() == [2, 3, 4]
        assert build.known(np.array([unit_id(v, 0) for v in (2, 3, 4)])).all()
        for sentence in SENTENCES:
            for group_by in ("video", "moment"):
                hits = search(model, build, Query(sentence, top_k=20, group_by=group_by))
                assert sorted(h.video_id for h in hits) == [2, 3, 4]
    compacted = load_current(index)
    assert compacted.manifest["counts"]["event"] == 3 and len(compacted.manifest["parts"]) == 1
    assert _row(engine, LONG_ID) is None and _row(engine, 2).status == "indexed"


def _units_of(build: Build, video_id: int) -> tuple[list[int], list, torch.Tensor]:
    units = build.units(video_id)
    return units, _stored_spans(build, video_id), build.embeddings(units).global_.float()


def _assert_same_index(build: Build, reference: Build) -> None:
    """Two builds of the same videos: the same units, spans and embeddings, nothing doubled."""
    assert build.video_ids() == reference.video_ids()
    assert build.manifest["counts"] == reference.manifest["counts"]
    for video_id in reference.video_ids():
        units, spans, vectors = _units_of(build, video_id)
        want_units, want_spans, want_vectors = _units_of(reference, video_id)
        assert units == want_units and np.allclose(spans, want_spans)
        assert torch.allclose(vectors, want_vectors, atol=2e-3)


def test_published_but_not_marked_then_indexed_again_is_not_doubled(
    indexed, media, motion_model, tmp_path
) -> None:
    """As if the worker died between the publish and the rows: the long video indexed again
    replaces all its units."""
    model, _ = motion_model
    engine, index = _copy_of(indexed, tmp_path)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE videos SET status = 'pending' WHERE id = {LONG_ID}")
    assert run_indexing(engine, model, index, _cfg(), progress=False).indexed == 1
    _assert_same_index(load_current(index), load_current(indexed.index))
    assert _row(engine, LONG_ID).segments == N


CHILD = """
import sys, time
from pathlib import Path
from db import queue
from db.connect import make_engine
from indexer.job import IndexingCfg, run_indexing
from indexer.segments import SegmentCfg
from model import load_checkpoint

real, calls = queue.progress, []

def progress(*args, **kwargs):  # the third chunk taken (the first four units held): stop here
    written = real(*args, **kwargs)
    calls.append(args[1])
    if len(calls) == 3:
        print("mid-video", flush=True)
        time.sleep(600)
    return written

queue.progress = progress
url, checkpoint, index = sys.argv[1:]
cfg = IndexingCfg(decode_workers=1, batch_size=4, segments=SEGMENTS, spill_units=1)
run_indexing(make_engine(url), load_checkpoint(checkpoint), Path(index), cfg, progress=False)
""".replace("SEGMENTS", repr(SEGMENTS))


@pytest.mark.slow
def test_kill_9_mid_video_then_rerun_matches_an_uninterrupted_run(
    indexed, media, motion_model, tmp_path
) -> None:
    model, checkpoint = motion_model
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    engine = _queue(url, [media / "long.mp4", *(media / name for name in SHORT)])
    root = Path(__file__).resolve().parents[2]
    indexer = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(checkpoint), str(tmp_path / "index")],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert indexer.stdout.readline().strip() == "mid-video"
    finally:
        os.kill(indexer.pid, signal.SIGKILL)
        indexer.wait()
    row = _row(engine, LONG_ID)
    assert row.status == "processing" and 0 < row.indexed_s < DURATION_S  # killed midway
    assert queue.counts(engine)["indexed"] == 0
    spools = tmp_path / "index" / ".spool"
    assert [p.name.split("-")[0] for p in spools.iterdir()] == [str(LONG_ID)]  # units on disk
    summary = run_indexing(engine, model, tmp_path / "index", _cfg(spill_units=1), progress=False)
    assert summary.indexed == 4 and not summary.failed
    assert not list(spools.iterdir())  # the killed worker's spool, and the new one, removed
    assert queue.counts(engine) == {"pending": 0, "processing": 0, "indexed": 4, "failed": 0}
    _assert_same_index(load_current(tmp_path / "index"), load_current(indexed.index))
    row = _row(engine, LONG_ID)
    assert row.segments == N and row.indexed_s == row.duration_s == pytest.approx(DURATION_S)


# --- the reader on long videos -------------------------------------------------------------


def test_a_long_video_comes_in_chunks_beside_the_batch_s_other_videos(media) -> None:
    """The claims' first reads come in claim order, a long video's later chunks among them,
    each numbered from where the previous one stopped; together they are the whole read."""
    names = ["long.mp4", "a.mp4", "b.mp4"]
    claims = [Claim(i, str(media / name)) for i, name in enumerate(names, start=1)]
    with Reader(8, 64, workers=1, segments=SEGMENTS) as reader:
        reads = list(reader.read(claims))
    assert all(isinstance(r, Decoded) for r in reads)
    assert [r.video_id for r in reads if r.first == 0] == [1, 2, 3]
    chunks = [r for r in reads if r.video_id == 1]
    assert len(chunks) == 4 and [r.last for r in chunks] == [False, False, False, True]
    assert all(len(r.chunk.segments) == 1 for r in reads if r.video_id != 1)
    segments = [s for r in chunks for s in r.chunk.segments]
    whole = decode_segments(media / "long.mp4", 8, 64, WHOLE).segments
    assert _spans(segments) == _spans(whole)
    for one, other in zip(segments, whole, strict=True):
        assert np.array_equal(one.frames, other.frames)
        assert np.array_equal(one.following, other.following)
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.first == before.first + len(before.chunk.segments)
        assert before.following().start_s == after.chunk.segments[0].start_s


@pytest.mark.parametrize("ext", ["mkv", "ts"])
def test_other_containers_read_in_chunks_give_the_same_segments(media, ext) -> None:
    """Matroska, and MPEG-TS, whose seek may land on the keyframe at a chunk's start (a cut)
    rather than before it: the cut must still be seen, not taken for a window's start."""
    path = media / f"long.{ext}"
    with Reader(8, 64, workers=1, segments=SEGMENTS) as reader:
        reads = list(reader.read([Claim(1, str(path))]))
    segments = [s for r in reads for s in r.chunk.segments]
    assert len(reads) == 4
    assert _spans(segments) == _spans(decode_segments(path, 8, 64, WHOLE).segments)


# --- damaged files ---------------------------------------------------------------------------


def _damaged(media: Path, folder: Path) -> dict[str, Path]:
    """long.mp4 with garbage over 3000 bytes in the middle; long.mkv and long.mp4 cut at 40 %
    (a Matroska file plays up to the cut; an MP4 loses its index, at the end)."""
    data = (media / "long.mp4").read_bytes()
    garbage = bytearray(data)
    middle = len(data) // 2
    garbage[middle : middle + 3000] = np.random.default_rng(0).bytes(3000)
    files = {"garbage.mp4": bytes(garbage), "cut.mp4": data[: len(data) * 2 // 5]}
    mkv = (media / "long.mkv").read_bytes()
    files["cut.mkv"] = mkv[: len(mkv) * 2 // 5]
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return {name: folder / name for name in files}


def test_damaged_files_are_indexed_with_what_can_be_read(media, motion_model, tmp_path) -> None:
    """Garbage in the middle: the decoder skips it, units on both sides. A Matroska file cut
    midway: its first part. An MP4 cut midway (its index lost): failed with the reason. None
    stays processing."""
    model, _ = motion_model
    files = _damaged(media, tmp_path)
    engine = _queue(f"sqlite:///{tmp_path / 'db.sqlite3'}", list(files.values()))
    summary = run_indexing(engine, model, tmp_path / "index", _cfg(), progress=False)
    assert summary.indexed == 2 and list(summary.failed) == [2]
    assert "not a readable media file" in summary.failed[2]
    assert queue.counts(engine) == {"pending": 0, "processing": 0, "indexed": 2, "failed": 1}
    build = load_current(tmp_path / "index")
    for video_id, name in [(1, "garbage.mp4"), (3, "cut.mkv")]:
        whole = _whole(files[name], model)
        spans = _stored_spans(build, video_id)
        assert np.allclose(spans, _spans(whole), atol=1e-5)
        assert spans[0][0] == 0.0
        assert _row(engine, video_id).segments == len(whole) == len(build.units(video_id))
    garbage = _stored_spans(build, 1)
    assert garbage[-1][1] == pytest.approx(DURATION_S) and len(garbage) >= N - 1  # both sides
    cut = _stored_spans(build, 3)
    assert 20.0 < cut[-1][1] < 40.0 and len(cut) >= 2  # the part before the cut


def test_a_file_damaged_while_it_is_indexed_keeps_its_first_segments(
    media, motion_model, tmp_path, db_url
) -> None:
    """The file becomes unreadable after its first chunk (replaced by its first bytes): the
    chunks read before are indexed, as the first units of the whole read."""
    model, _ = motion_model
    path = tmp_path / "long.mp4"
    shutil.copy(media / "long.mp4", path)
    engine = _queue(db_url, [path])
    real, damaged = queue.progress, []

    def damaging(engine_, video_id, **kw):
        if not damaged:  # at the first chunk taken: the rest of the file is gone
            (tmp_path / "cut.mp4").write_bytes(path.read_bytes()[:2000])
            os.replace(tmp_path / "cut.mp4", path)
            damaged.append(video_id)
        return real(engine_, video_id, **kw)

    whole = _whole(media / "long.mp4", model)
    t, size = model.cfg.max_frames, model.preprocess.image_size
    first = len(decode_segments(media / "long.mp4", t, size, SEGMENTS).segments)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(queue, "progress", damaging)
        summary = run_indexing(engine, model, tmp_path / "index", _cfg(), progress=False)
    assert summary.indexed == 1 and not summary.failed
    build = load_current(tmp_path / "index")
    spans = _stored_spans(build, 1)
    # the first chunk, and the second one if it was read before the damage
    assert damaged == [1] and first <= len(spans) < N
    assert np.allclose(spans, _spans(whole)[: len(spans)], atol=1e-5)
    row = _row(engine, 1)
    assert row.status == "indexed" and row.segments == len(spans)
    assert row.duration_s == pytest.approx(spans[-1][1])
