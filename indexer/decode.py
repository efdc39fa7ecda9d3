"""Video decoding with PyAV: the best video stream, T frames sampled by timestamp, RGB at the
model's input size. Used by the indexer and by the dataset loaders alike.

Sampling seeks to the keyframe before a target and decodes forward only when the target is far
ahead, so a 10-minute file costs about as much as a 10-second one. Anything that is not a
decodable video raises ``DecodeError`` with the reason; no placeholder frames are ever returned.

The indexer's segment decoder may decode on a GPU (NVDEC): ``decode_hwaccel`` decides once per
process (``SegmentCfg.hwaccel``), and frames come back to the CPU before anything else sees them,
so the rest of the path is the software decoder's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.codec.codec import Codec
from av.codec.hwaccel import HWAccel
from av.video.reformatter import VideoReformatter

log = logging.getLogger(__name__)

# Decode forward instead of seeking when the next target is at most this far ahead.
_SEEK_THRESHOLD_S = 2.0


class DecodeError(Exception):
    """A file that cannot give video frames: missing, not media, no video stream, corrupt."""


@dataclass(frozen=True)
class DecodedVideo:
    """frames (T, S, S, 3) uint8 RGB; timestamps_s (T,) presentation time of each frame."""

    frames: np.ndarray
    timestamps_s: np.ndarray
    duration_s: float
    width: int
    height: int
    codec: str
    stream_index: int


@dataclass(frozen=True)
class MediaInfo:
    """What ``probe_media`` found: the demuxer's name (``"mov,mp4,m4a,3gp,3g2,mj2"``), the
    HTTP media type of the container (``"video/mp4"``) and the video stream's codec and size."""

    format_name: str
    media_type: str
    codec: str
    width: int
    height: int


def open_media(path: Path, hwaccel: HWAccel | None = None) -> av.container.InputContainer:
    """The file opened for reading; ``DecodeError`` when it is missing or not media. With
    ``hwaccel`` its video decodes on that device where it can; a file the device cannot be set
    up for opens for software decoding instead."""
    if not path.is_file():
        raise DecodeError(f"file not found: {path.name}")
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore", hwaccel=hwaccel)
    except av.FFmpegError as exc:
        if hwaccel is None:
            raise DecodeError(f"not a readable media file ({exc.strerror or exc})") from exc
        container = open_media(path)  # DecodeError when it is not media at all
        log.warning("%s: no hardware decoding (%s): decoding in software", path.name, exc)
        return container


@dataclass(frozen=True)
class HwChoice:
    """Whether a process decodes on a device: ``device`` "cuda" or "none", and why."""

    device: str
    reason: str


def torch_sees_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


_HELD_DEVICES: list[HWAccel] = []  # the probe's device, held: later opens share its context


def cuda_device_error() -> str | None:
    """None when PyAV can create a CUDA device for H.264 decoding here, else the reason. The
    device created is kept for the process's life: it holds CUDA's primary context, which each
    file's decoder then shares (``_NVDEC``) instead of creating a context of its own."""
    try:
        _HELD_DEVICES.append(_NVDEC.create(Codec("h264", "r")))
    except (av.FFmpegError, NotImplementedError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def choose_hwaccel(
    requested: str,
    cuda_visible: Callable[[], bool] = torch_sees_cuda,
    device_error: Callable[[], str | None] = cuda_device_error,
) -> HwChoice:
    """The decoder for ``requested`` (``SegmentCfg.hwaccel``): "none" never decodes on a
    device; "auto" on CUDA when torch sees a CUDA device and PyAV can create one; "cuda" when
    PyAV can create one, whatever torch sees. The probes are asked only as far as needed."""
    if requested == "none":
        return HwChoice("none", "hardware decoding off (hwaccel 'none')")
    if requested == "auto" and not cuda_visible():
        return HwChoice("none", "torch sees no CUDA device")
    error = device_error()
    if error is not None:
        return HwChoice("none", f"PyAV cannot create a CUDA device ({error})")
    why = "requested" if requested == "cuda" else "torch sees a CUDA device"
    return HwChoice("cuda", f"{why} and PyAV created one")


_CHOICES: dict[tuple[int, str], HwChoice] = {}  # (process id, request): a fork decides anew


def process_hwaccel(requested: str) -> HwChoice:
    """``choose_hwaccel`` with the real probes, once per process and request; logged once."""
    key = (os.getpid(), requested)
    if key not in _CHOICES:
        choice = _CHOICES[key] = choose_hwaccel(requested)
        warn = requested == "cuda" and choice.device == "none"
        level = logging.WARNING if warn else logging.INFO
        log.log(level, "decoding with %s (hwaccel %r): %s", choice.device, requested, choice.reason)
    return _CHOICES[key]


def decode_hwaccel(requested: str) -> HWAccel | None:
    """What ``open_media`` gets for ``SegmentCfg.hwaccel`` = ``requested`` in this process:
    NVDEC, falling back to software per stream (a codec or profile it does not decode), or
    None (software decoding)."""
    return _NVDEC if process_hwaccel(requested).device == "cuda" else None


# CUDA's primary context (shared with the probe's device), frames copied back to the CPU (NV12,
# P010 ...) before ``to_rgb_square``; a stream NVDEC cannot decode falls back to software.
_NVDEC = HWAccel(device_type="cuda", allow_software_fallback=True, options={"primary_ctx": "1"})


def pick_video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The video stream with the most pixels (then the most frames); cover-art pictures and
    streams without a decoder are not videos."""
    candidates = [
        s
        for s in container.streams.video
        if s.codec_context is not None
        and not (s.disposition & av.stream.Disposition.attached_pic)
        and (s.codec_context.width or 0) > 0
    ]
    if not candidates:
        raise DecodeError("no video stream in the file")
    return max(candidates, key=lambda s: (s.codec_context.width * s.codec_context.height, s.frames))


def declared_duration_s(container: av.container.InputContainer, stream) -> float | None:
    """What the headers say the stream (else the container) lasts; None when they do not say.
    Headers can lie: a truncated file keeps its full declared duration."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def to_rgb_square(
    frame: av.VideoFrame, size: int, reformatter: VideoReformatter | None = None
) -> np.ndarray:
    """Shortest side to ``size`` (swscale, bicubic), then centre crop: (size, size, 3) uint8.
    A ``reformatter`` kept across the frames of a stream saves setting up swscale each time
    (the same pixels)."""
    w, h = frame.width, frame.height
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    how = {"width": new_w, "height": new_h, "format": "rgb24", "interpolation": "BICUBIC"}
    rgb = reformatter.reformat(frame, **how) if reformatter else frame.reformat(**how)
    image = rgb.to_ndarray()
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(image[top : top + size, left : left + size])


def sample_times(duration_s: float, num_frames: int, fps: float | None = None) -> np.ndarray:
    """Target timestamps: ``num_frames`` spread uniformly over the duration (the centre of each
    of ``num_frames`` equal parts), or one every 1/fps seconds, at most ``num_frames``."""
    if fps:
        times = np.arange(0.0, duration_s, 1.0 / fps)[:num_frames]
        return times if len(times) else np.zeros(1)
    return (np.arange(num_frames) + 0.5) * duration_s / num_frames


def decode_video(
    path: str | Path, num_frames: int, size: int, fps: float | None = None
) -> DecodedVideo:
    """Decode ``num_frames`` frames of ``path`` sampled by timestamp, as RGB ``size`` squares.
    A video shorter than ``num_frames`` frames gives each of its frames once."""
    path = Path(path)
    with open_media(path) as container:
        stream = pick_video_stream(container)
        stream.thread_type = "AUTO"
        duration = declared_duration_s(container, stream)
        if duration is None or duration <= 0:
            duration = _probe_duration(container, stream)
        targets = sample_times(duration, num_frames, fps)
        frames, times = _decode_at(container, stream, targets, size)
        ctx = stream.codec_context
        info = (ctx.width, ctx.height, ctx.name, stream.index)
    if not frames:
        raise DecodeError("no frame could be decoded (corrupt or truncated file)")
    if times[-1] + _SEEK_THRESHOLD_S < targets[-1]:
        raise DecodeError(
            f"truncated: frames end at {times[-1]:.2f} s of a declared {duration:.2f} s"
        )
    return DecodedVideo(
        frames=np.stack(frames),
        timestamps_s=np.asarray(times, dtype=np.float64),
        duration_s=float(duration),
        width=info[0],
        height=info[1],
        codec=info[2],
        stream_index=info[3],
    )


# Media types of the containers FFmpeg names (mov/mp4 and matroska/webm are told apart by
# their headers); any other container with a decodable video stream is application/octet-stream.
_MEDIA_TYPES = {
    "avi": "video/x-msvideo",
    "mpegts": "video/mp2t",
    "mpeg": "video/mpeg",
    "flv": "video/x-flv",
    "ogg": "video/ogg",
    "asf": "video/x-ms-asf",
}
_OCTET_STREAM = "application/octet-stream"
_EBML_DOCTYPE_WEBM = b"\x42\x82\x84webm"  # the EBML header's DocType element, 4 bytes "webm"


def probe_media(path: str | Path) -> MediaInfo:
    """Check that ``path`` holds a video by decoding its first frame, and tell its container's
    HTTP media type from what the demuxer found (never from the file's name). ``DecodeError``
    with the reason for anything else: text, HTML, images, audio only, junk, truncated data."""
    path = Path(path)
    with open_media(path) as container:
        format_name = container.format.name
        if format_name == "image2" or format_name.endswith("_pipe"):
            raise DecodeError(f"a still image ({format_name}), not a video")
        stream = pick_video_stream(container)
        if _next_frame(_frames(container, stream), stream) is None:
            raise DecodeError("no frame could be decoded (corrupt or truncated file)")
        brand = str(container.metadata.get("major_brand", "")).strip()
        ctx = stream.codec_context
        codec, width, height = ctx.name, ctx.width, ctx.height
    return MediaInfo(format_name, _media_type(path, format_name, brand), codec, width, height)


def _media_type(path: Path, format_name: str, brand: str) -> str:
    if format_name.startswith("mov,mp4"):
        return "video/quicktime" if brand == "qt" else "video/mp4"
    if format_name == "matroska,webm":
        with open(path, "rb") as f:
            head = f.read(64)
        return "video/webm" if _EBML_DOCTYPE_WEBM in head else "video/x-matroska"
    return _MEDIA_TYPES.get(format_name, _OCTET_STREAM)


def frame_time(frame: av.VideoFrame, stream) -> float:
    """Presentation time of ``frame`` in seconds (not relative to the stream start)."""
    if frame.time is not None:
        return float(frame.time)
    if frame.pts is not None and stream.time_base is not None:
        return float(frame.pts * stream.time_base)
    return 0.0


def decode_thumbnail(path: str | Path, time_s: float, max_side: int = 320) -> bytes:
    """A JPEG of the frame nearest to ``time_s`` seconds, scaled to fit ``max_side`` (aspect
    kept). ``time_s`` past the end gives the last frame; ``DecodeError`` as ``decode_video``."""
    from io import BytesIO

    from PIL import Image

    def fit(frame: av.VideoFrame) -> np.ndarray:
        scale = min(1.0, max_side / max(frame.width, frame.height))
        w, h = max(2, round(frame.width * scale)), max(2, round(frame.height * scale))
        return frame.reformat(width=w, height=h, format="rgb24").to_ndarray()

    with open_media(Path(path)) as container:
        stream = pick_video_stream(container)
        stream.thread_type = "AUTO"
        frames, _ = _decode_at(container, stream, np.array([max(0.0, time_s)]), convert=fit)
    if not frames:
        raise DecodeError("no frame could be decoded (corrupt or truncated file)")
    out = BytesIO()
    Image.fromarray(frames[0]).save(out, format="JPEG", quality=85)
    return out.getvalue()


def _decode_at(
    container, stream, targets: np.ndarray, size: int = 0, convert=None
) -> tuple[list, list[float]]:
    """For each target time, the decoded frame nearest to it, seeking only when the target is
    far ahead of the decoder. A frame picked twice is kept once. Frames become ``size`` RGB
    squares, or whatever ``convert`` makes of them."""
    convert = convert or (lambda frame: to_rgb_square(frame, size))
    frames: list[np.ndarray] = []
    times: list[float] = []
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    iterator = None
    prev = pending = None  # (time, frame) pairs
    for target in targets + start:
        position = pending[0] if pending else prev[0] if prev else start
        if target - position > _SEEK_THRESHOLD_S:
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
            iterator, prev, pending = None, None, None
        if iterator is None:
            iterator = _frames(container, stream)
        chosen = None
        while chosen is None:
            current, pending = pending or _next_frame(iterator, stream), None
            if current is None:  # end of stream: the last frame is the nearest
                chosen = prev
                break
            if current[0] + 1e-6 >= target:
                closer_before = prev is not None and target - prev[0] <= current[0] - target + 1e-6
                chosen, pending = (prev if closer_before else current), current
            else:
                prev = current
        if chosen is None:
            break
        if not times or chosen[0] - start > times[-1]:
            frames.append(convert(chosen[1]))
            times.append(chosen[0] - start)
    return frames, times


def _next_frame(iterator, stream) -> tuple[float, av.VideoFrame] | None:
    frame = next(iterator, None)
    return None if frame is None else (frame_time(frame, stream), frame)


def _frames(container, stream):
    try:
        yield from container.decode(stream)
    except av.FFmpegError as exc:
        raise DecodeError(f"corrupt video data ({exc.strerror or exc})") from exc


def _probe_duration(container, stream) -> float:
    """Duration by decoding to the end, for files whose headers do not say."""
    last = None
    for frame in _frames(container, stream):
        last = frame_time(frame, stream)
    if last is None:
        raise DecodeError("no frame could be decoded (corrupt or truncated file)")
    container.seek(0, stream=stream)
    rate = stream.average_rate or Fraction(25)
    return last + float(1 / rate)
