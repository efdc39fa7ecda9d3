"""Hardware decoding (NVDEC through PyAV), chosen per process (``indexer.decode``): the choice,
and the software fallback where no CUDA device can be created, on real files. NVDEC itself
needs a GPU and is not exercised here; on a host where PyAV can create a CUDA device the
fallback tests skip and the frames are still compared with the software decoder's."""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from av.codec.hwaccel import HWAccel

from db.queue import Claim
from indexer import decode
from indexer.decode import (
    DecodeError,
    HwChoice,
    choose_hwaccel,
    decode_hwaccel,
    open_media,
    process_hwaccel,
    to_rgb_square,
)
from indexer.reader import Decoded, Where, die_with_parent, pool_context, read_video
from indexer.segment_plan import HWACCELS
from indexer.segments import SegmentCfg, decode_segments

MEDIA = Path(__file__).resolve().parents[3] / "shared" / "media"
# Short segments, so that the 2 s generated videos make several of them.
SHORT = SegmentCfg(min_s=0.25, max_s=1.0, window_s=0.5, overlap_s=0.25)
NO_DEVICE = process_hwaccel("cuda").device == "none"  # PyAV cannot create a CUDA device here
needs_no_device = pytest.mark.skipif(not NO_DEVICE, reason="a CUDA device can be created here")


def _media(name: str) -> Path:
    path = MEDIA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


class Probes:
    """The two probes of ``choose_hwaccel``, answering as told and counting their calls."""

    def __init__(self, visible: bool, error: str | None) -> None:
        self.visible, self.error, self.calls = visible, error, []

    def cuda_visible(self) -> bool:
        self.calls.append("torch")
        return self.visible

    def device_error(self) -> str | None:
        self.calls.append("pyav")
        return self.error


@pytest.mark.parametrize(
    ("requested", "visible", "error", "device", "calls"),
    [
        ("auto", True, None, "cuda", ["torch", "pyav"]),
        ("auto", True, "no driver", "none", ["torch", "pyav"]),
        ("auto", False, None, "none", ["torch"]),  # torch sees none: PyAV is not asked
        ("cuda", False, None, "cuda", ["pyav"]),  # forced: torch is not asked
        ("cuda", True, "no driver", "none", ["pyav"]),
        ("none", True, None, "none", []),
    ],
)
def test_the_choice_takes_cuda_only_when_its_probes_allow(
    requested, visible, error, device, calls
) -> None:
    probes = Probes(visible, error)
    choice = choose_hwaccel(requested, probes.cuda_visible, probes.device_error)
    assert choice.device == device
    assert probes.calls == calls
    if error is not None:
        assert error in choice.reason


def test_auto_decodes_in_software_where_torch_sees_no_cuda_device() -> None:
    if torch.cuda.is_available():
        pytest.skip("torch sees a CUDA device here")
    assert process_hwaccel("auto") == HwChoice("none", "torch sees no CUDA device")
    assert decode_hwaccel("auto") is None


def test_none_is_software_decoding_without_asking_anything() -> None:
    def unasked() -> bool:
        raise AssertionError("a probe was asked")

    choice = choose_hwaccel("none", unasked, unasked)
    assert choice == HwChoice("none", "hardware decoding off (hwaccel 'none')")
    assert decode_hwaccel("none") is None


@needs_no_device
def test_requested_cuda_without_a_device_is_software_decoding() -> None:
    choice = process_hwaccel("cuda")
    assert choice.reason.startswith("PyAV cannot create a CUDA device (")
    assert decode_hwaccel("cuda") is None


def test_segment_cfg_checks_hwaccel() -> None:
    assert [SegmentCfg(hwaccel=h).hwaccel for h in HWACCELS] == ["auto", "none", "cuda"]
    assert SegmentCfg().hwaccel == "auto"
    with pytest.raises(ValueError, match="hwaccel must be one of"):
        SegmentCfg(hwaccel="nvdec")


def _assert_same_chunks(a, b) -> None:
    assert [(s.start_s, s.end_s) for s in a.segments] == [(s.start_s, s.end_s) for s in b.segments]
    for x, y in zip(a.segments, b.segments, strict=True):
        assert np.array_equal(x.frames, y.frames)
        assert np.array_equal(x.following, y.following)
        assert np.array_equal(x.timestamps_s, y.timestamps_s)
    assert (a.next_start_s, a.duration_s, a.codec) == (b.next_start_s, b.duration_s, b.codec)


def _cases(synth_corpus: Path, name: str) -> tuple[Path, SegmentCfg]:
    if name.startswith("synth"):
        return synth_corpus / name, SHORT
    return _media(name), SegmentCfg()


@pytest.mark.parametrize(
    "name",
    ["synth000000.mp4", "synth000003.mp4", "nasa_13013.mp4", "bt709_full_range.mp4"],
)
def test_requested_cuda_decodes_the_frames_of_software_decoding(synth_corpus, name) -> None:
    path, cfg = _cases(synth_corpus, name)
    software = decode_segments(path, 8, 64, replace(cfg, hwaccel="none"))
    cuda = decode_segments(path, 8, 64, replace(cfg, hwaccel="cuda"))
    assert len(software.segments) >= (3 if cfg is SHORT or name.startswith("nasa") else 1)
    _assert_same_chunks(software, cuda)
    assert software.decoder == "software"
    if NO_DEVICE:
        assert cuda.decoder == "software"


@needs_no_device
def test_a_file_opened_for_a_device_that_cannot_be_created_decodes_in_software(
    synth_corpus, caplog
) -> None:
    path = synth_corpus / "synth000001.mp4"
    nvdec = HWAccel(device_type="cuda", allow_software_fallback=True)
    with open_media(path, nvdec) as container:
        stream = container.streams.video[0]
        assert not stream.codec_context.is_hwaccel
        fallback = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert "no hardware decoding" in caplog.text
    with open_media(path) as container:
        plain = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    assert len(fallback) == len(plain) > 0
    assert all(np.array_equal(a, b) for a, b in zip(fallback, plain, strict=True))
    with pytest.raises(DecodeError, match="not a readable media file"):
        open_media(synth_corpus / "broken.mp4", nvdec)


# NVDEC's frames come back to the CPU (av_hwframe_transfer_data) as NV12, or P010 for 10-bit
# video, with the decoded frame's colour properties; the software decoder gives planar YUV.
@pytest.mark.parametrize(
    ("name", "device_format"),
    [
        ("synth000002.mp4", "nv12"),
        ("nasa_13013.mp4", "nv12"),
        ("bt709_full_range.mp4", "nv12"),  # full range (yuvj420p)
        ("h265_video.mp4", "nv12"),
        ("h265_10bits.mp4", "p010le"),
    ],
)
def test_frames_in_the_devices_layout_give_the_same_pixels(
    synth_corpus, name, device_format
) -> None:
    path = synth_corpus / name if name.startswith("synth") else _media(name)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f for _, f in zip(range(4), container.decode(stream), strict=False)]
    assert len(frames) == 4
    for frame in frames:
        copied = frame.reformat(format=device_format)
        assert copied.format.name == device_format != frame.format.name
        assert (copied.colorspace, copied.color_range) == (frame.colorspace, frame.color_range)
        assert np.array_equal(to_rgb_square(copied, 64), to_rgb_square(frame, 64))
        small = {"width": 64, "height": 36, "format": "bgr24", "interpolation": "AREA"}
        assert np.array_equal(
            copied.reformat(**small).to_ndarray(), frame.reformat(**small).to_ndarray()
        )


@pytest.mark.parametrize(
    ("hwaccel", "visible", "method"),
    [("auto", True, "spawn"), ("cuda", True, "spawn"), ("auto", False, None), ("none", True, None)],
)
def test_decoding_processes_are_spawned_where_they_may_use_cuda(hwaccel, visible, method) -> None:
    context = pool_context(SegmentCfg(hwaccel=hwaccel), lambda: visible)
    assert (context and context.get_start_method()) == method


def test_decoding_processes_start_as_before_where_torch_sees_no_cuda_device() -> None:
    assert (pool_context(SegmentCfg()) is None) == (not torch.cuda.is_available())


def test_a_spawned_decoding_process_reads_what_this_process_decodes(synth_corpus) -> None:
    path = synth_corpus / "synth000004.mp4"
    cfg = replace(SHORT, hwaccel="cuda")
    context = pool_context(cfg, lambda: True)
    with ProcessPoolExecutor(1, context, initializer=die_with_parent) as pool:
        read = pool.submit(read_video, Claim(7, str(path)), 8, 64, cfg, Where()).result()
    assert isinstance(read, Decoded) and read.video_id == 7
    assert len(read.chunk.segments) >= 3
    _assert_same_chunks(read.chunk, decode_segments(path, 8, 64, cfg))


def _decisions_in_this_process() -> tuple[int, int, str]:
    before = sum(pid == os.getpid() for pid, _ in decode._CHOICES)
    device = process_hwaccel("auto").device
    return before, sum(pid == os.getpid() for pid, _ in decode._CHOICES), device


@pytest.mark.skipif(sys.platform != "linux", reason="fork")
def test_a_forked_process_decides_anew() -> None:
    parent = process_hwaccel("auto")
    assert (os.getpid(), "auto") in decode._CHOICES
    with ProcessPoolExecutor(1, multiprocessing.get_context("fork")) as pool:
        before, after, device = pool.submit(_decisions_in_this_process).result()
    assert (before, after) == (0, 1)
    if parent.device == "none":  # a process forked from one that used CUDA cannot use it
        assert device == "none"
