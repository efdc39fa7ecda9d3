"""Decoding real files (../shared/media, skipped when absent) and generated edge cases."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from indexer.decode import DecodeError, decode_video, probe_media, sample_times

MEDIA = Path(__file__).resolve().parents[3] / "shared" / "media"
VIDEOS = [
    "av1_video.mkv",
    "bt709_full_range.mp4",
    "h264_10bits.mp4",
    "h265_10bits.mp4",
    "h265_video.mp4",
    "nasa_13013.mp4",
]
AUDIO = ["nasa_13013.mp4.audio.mp3", "sine_mono_s16.wav"]
needs_media = pytest.mark.skipif(not MEDIA.is_dir(), reason=f"{MEDIA} is absent")


def _write(
    path: Path,
    frames: np.ndarray,
    codec: str = "libx264",
    fps: int = 10,
    pix_fmt: str = "yuv420p",
    pts: list[int] | None = None,
) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _ramp(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frame i is uniformly grey level 10 + 20 * i, so a decoded frame tells its index."""
    return np.stack([np.full((h, w, 3), 10 + 20 * i, dtype=np.uint8) for i in range(n)])


def _index_of(frame: np.ndarray) -> int:
    return round((float(frame.mean()) - 10) / 20)


@needs_media
@pytest.mark.parametrize("name", VIDEOS)
def test_real_samples_decode(name: str) -> None:
    video = decode_video(MEDIA / name, num_frames=8, size=64)
    assert video.frames.dtype == np.uint8 and video.frames.shape[1:] == (64, 64, 3)
    assert 1 <= len(video.frames) <= 8
    assert np.all(np.diff(video.timestamps_s) > 0)
    assert video.timestamps_s[0] >= 0 and video.timestamps_s[-1] <= video.duration_s
    assert video.frames.std() > 1  # real picture content, not a flat placeholder


@needs_media
def test_the_largest_of_two_video_streams_is_used() -> None:
    video = decode_video(MEDIA / "nasa_13013.mp4", num_frames=4, size=64)
    assert (video.width, video.height) == (480, 270)


@needs_media
@pytest.mark.parametrize("name", AUDIO)
def test_audio_only_files_have_no_video_stream(name: str) -> None:
    with pytest.raises(DecodeError, match="no video stream"):
        decode_video(MEDIA / name, num_frames=4, size=64)


def test_uniform_sampling_picks_the_nearest_frames(tmp_path: Path) -> None:
    path = _write(tmp_path / "ramp.mp4", _ramp(10), fps=10)
    video = decode_video(path, num_frames=5, size=32)
    # targets at the centres of 5 equal parts of 1 s: 0.1, 0.3, ..., 0.9 s -> frames 1,3,5,7,9
    assert [_index_of(f) for f in video.frames] == [1, 3, 5, 7, 9]
    assert video.timestamps_s.tolist() == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9], abs=1e-6)


def test_short_video_gives_each_frame_once(tmp_path: Path) -> None:
    video = decode_video(_write(tmp_path / "three.mp4", _ramp(3)), num_frames=12, size=32)
    assert [_index_of(f) for f in video.frames] == [0, 1, 2]


def test_one_frame_video(tmp_path: Path) -> None:
    video = decode_video(_write(tmp_path / "one.mp4", _ramp(1)), num_frames=12, size=32)
    assert len(video.frames) == 1


def test_odd_size_and_aspect_are_cropped_square(tmp_path: Path) -> None:
    frames = _ramp(4, h=61, w=97)
    path = _write(tmp_path / "odd.mkv", frames, codec="mpeg4", pix_fmt="yuv420p")
    video = decode_video(path, num_frames=4, size=40)
    assert video.frames.shape == (4, 40, 40, 3) and (video.width, video.height) == (97, 61)
    assert [_index_of(f) for f in video.frames] == [0, 1, 2, 3]


def test_vp9_and_unicode_file_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "vidéo 視頻.webm", _ramp(6), codec="libvpx-vp9")
    assert len(decode_video(path, num_frames=3, size=32).frames) == 3


def test_variable_frame_rate(tmp_path: Path) -> None:
    pts = [0, 40, 80, 400, 440, 900, 950, 1900]  # ms, irregular
    path = _write(tmp_path / "vfr.mkv", _ramp(8), pts=pts)
    video = decode_video(path, num_frames=4, size=32)
    times = video.timestamps_s
    assert np.all(np.diff(times) > 0)
    # every decoded time is a real frame time
    assert all(min(abs(t * 1000 - p) for p in pts) < 2 for t in times)


def test_long_video_seeks(tmp_path: Path) -> None:
    frames = _ramp(12, h=32, w=32)
    long = np.concatenate([frames] * 50)  # 600 frames at 10 fps = 60 s
    path = _write(tmp_path / "long.mp4", long, fps=10)
    video = decode_video(path, num_frames=6, size=32)
    targets = sample_times(60.0, 6)
    assert video.timestamps_s == pytest.approx(targets, abs=0.06)


def test_fixed_rate_sampling(tmp_path: Path) -> None:
    path = _write(tmp_path / "ramp.mp4", _ramp(10), fps=10)
    video = decode_video(path, num_frames=12, size=32, fps=2.5)
    assert video.timestamps_s.tolist() == pytest.approx([0.0, 0.4, 0.8], abs=1e-6)
    # a tie between two frames goes to the earlier one
    video = decode_video(path, num_frames=12, size=32, fps=4)
    assert video.timestamps_s.tolist() == pytest.approx([0.0, 0.2, 0.5, 0.7], abs=1e-6)


def test_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("these are not the frames you are looking for\n" * 50)
    with pytest.raises(DecodeError, match="not a readable media file"):
        decode_video(path, num_frames=4, size=32)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="not found"):
        decode_video(tmp_path / "gone.mp4", num_frames=4, size=32)


def test_truncated_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "full.mkv", _ramp(12, h=32, w=32).repeat(10, axis=0), fps=10)
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(DecodeError):
        decode_video(cut, num_frames=8, size=32)


@pytest.mark.parametrize(
    ("name", "codec", "media_type"),
    [
        ("v.mp4", "libx264", "video/mp4"),
        ("v.mov", "libx264", "video/quicktime"),
        ("v.mkv", "mpeg4", "video/x-matroska"),
        ("v.webm", "libvpx-vp9", "video/webm"),
        ("v.avi", "mpeg4", "video/x-msvideo"),
        ("v.ts", "mpeg2video", "video/mp2t"),
    ],
)
def test_probe_tells_the_container_type_from_the_contents(
    tmp_path: Path, name: str, codec: str, media_type: str
) -> None:
    written = _write(tmp_path / name, _ramp(4), codec=codec)
    disguised = written.rename(tmp_path / "x.html")  # the name plays no part
    info = probe_media(disguised)
    assert info.media_type == media_type
    assert (info.width, info.height) == (64, 48)


def test_probe_falls_back_to_octet_stream_for_other_video_containers(tmp_path: Path) -> None:
    info = probe_media(_write(tmp_path / "v.nut", _ramp(3), codec="mpeg4"))
    assert info.format_name == "nut" and info.media_type == "application/octet-stream"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"<html><script>alert(document.cookie)</script></html>\n", "not a readable media"),
        (b"these are notes, not frames\n" * 40, "not a readable media"),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>\n',
            "still image",
        ),
    ],
)
def test_probe_refuses_what_is_not_a_video(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "x.mp4"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=reason):
        probe_media(path)


def test_probe_refuses_images_and_truncated_videos(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(tmp_path / "still.png")
    with pytest.raises(DecodeError, match="still image"):
        probe_media(tmp_path / "still.png")
    data = _write(tmp_path / "v.mp4", _ramp(4)).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # the index (moov) is at the end
    with pytest.raises(DecodeError):
        probe_media(tmp_path / "cut.mp4")
    with pytest.raises(DecodeError, match="not found"):
        probe_media(tmp_path / "gone.mp4")


@needs_media
@pytest.mark.parametrize("name", VIDEOS)
def test_probe_accepts_the_real_samples(name: str) -> None:
    expected = "video/x-matroska" if name.endswith(".mkv") else "video/mp4"
    assert probe_media(MEDIA / name).media_type == expected


@needs_media
@pytest.mark.parametrize("name", AUDIO)
def test_probe_refuses_audio_only_files(name: str) -> None:
    with pytest.raises(DecodeError, match="no video stream"):
        probe_media(MEDIA / name)
