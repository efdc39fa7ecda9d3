"""The indexing job's embedder: decoded segments -> the HANet video branch's embeddings (CUDA
and bf16 where the model is on a GPU), their frame times and spans. No database, no index."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch

from indexer.segments import DecodedSegment
from model import Concept, HANet, VideoEmbeddings
from model.backbone import autocast
from model.preprocess import normalize_frames

log = logging.getLogger(__name__)

CONCEPTS_PER_KIND = 3  # actions and entities kept on each video's row


@dataclass(frozen=True)
class Unit:
    """One segment of a video to embed: the video's ``segment``-th."""

    video_id: int
    segment: int
    decoded: DecodedSegment


@dataclass(frozen=True)
class EmbeddedBatch:
    """Units (segments of videos) embedded together, row i of each field being unit i's: a
    segment of video ``video_ids[i]``, its ``segments[i]``-th."""

    video_ids: list[int]
    segments: list[int]
    embeddings: VideoEmbeddings  # CPU float32
    frame_times: np.ndarray  # (N, T) float32: each frame's time in its video, zero past the last
    spans: np.ndarray  # (N, 2) float32: each unit's start and end in its video, seconds

    def __len__(self) -> int:
        return len(self.video_ids)

    def select(self, rows: list[int]) -> EmbeddedBatch:
        return EmbeddedBatch(
            [self.video_ids[i] for i in rows],
            [self.segments[i] for i in rows],
            self.embeddings.select(rows),
            self.frame_times[rows],
            self.spans[rows],
        )

    @staticmethod
    def cat(batches: list[EmbeddedBatch]) -> EmbeddedBatch:
        return EmbeddedBatch(
            [v for b in batches for v in b.video_ids],
            [s for b in batches for s in b.segments],
            VideoEmbeddings.cat([b.embeddings for b in batches]),
            np.concatenate([b.frame_times for b in batches]),
            np.concatenate([b.spans for b in batches]),
        )


class Embedder:
    """Decoded segments -> ``EmbeddedBatch``, halving the batch on CUDA out-of-memory."""

    def __init__(self, model: HANet) -> None:
        self.model = model.eval()

    def __call__(self, units: list[Unit]) -> EmbeddedBatch:
        segments = [u.decoded for u in units]
        return EmbeddedBatch(
            video_ids=[u.video_id for u in units],
            segments=[u.segment for u in units],
            embeddings=self.embed(segments),
            frame_times=frame_times(segments, self.model.cfg.max_frames),
            spans=np.array([[s.start_s, s.end_s] for s in segments], np.float32).reshape(-1, 2),
        )

    def embed(self, videos: list[DecodedSegment]) -> VideoEmbeddings:
        """``encode`` in as many pieces as the device's memory needs, in order."""
        try:
            return self.encode(videos)
        except torch.OutOfMemoryError:
            if len(videos) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(videos) // 2
            log.warning(
                "out of GPU memory at batch %d: retrying as %d + %d",
                len(videos),
                half,
                len(videos) - half,
            )
            return VideoEmbeddings.cat([self.embed(videos[:half]), self.embed(videos[half:])])

    @torch.inference_mode()
    def encode(self, videos: list[DecodedSegment]) -> VideoEmbeddings:
        """One pass of the video branch over segments, padded to T frames (masked), each
        frame's successor feeding the motion stream."""
        model, t = self.model, self.model.cfg.max_frames
        size = model.preprocess.image_size
        moving = model.motion_stream is not None  # successors are read by the motion stream only
        frames = np.zeros(
            (1 + moving, len(videos), t, size, size, 3), np.uint8
        )  # (., N, T, S, S, 3)
        mask = np.zeros((len(videos), t), dtype=bool)  # (N, T)
        for i, v in enumerate(videos):
            n = len(v.frames)
            frames[0, i, :n], mask[i, :n] = v.frames, True
            if moving:
                frames[1, i, :n] = motion_partners(v)
        device = model.device
        pixels = normalize_frames(torch.from_numpy(frames).to(device), model.preprocess)
        following = pixels[1] if moving else None
        with autocast(device):
            out = model.encode_video(pixels[0], torch.from_numpy(mask).to(device), following)
        return out.to("cpu", dtype=torch.float32)

    def concepts(self, units: VideoEmbeddings) -> dict | None:
        """A video's most probable actions and entities over its units (each concept at its
        most probable unit), as stored on its row; None when the model has no concept
        vocabulary."""
        if self.model.vocab is None:
            return None
        video = dataclasses.replace(
            units.select([0]),
            verb_probs=units.verb_probs.amax(0, keepdim=True),
            noun_probs=units.noun_probs.amax(0, keepdim=True),
        )
        top = self.model.top_concepts(video, k=CONCEPTS_PER_KIND)[0]
        return {kind: _as_json(found) for kind, found in top.items()}


def _as_json(concepts: list[Concept]) -> list[dict[str, str | float]]:
    return [{"name": c.name, "probability": c.probability} for c in concepts]


# Sampled frames at most this far apart are each other's motion partners, as in the clips the
# model was trained on (the next sampled frame); further apart, each frame's own successor.
DENSE_S = 0.25


def motion_partners(segment: DecodedSegment) -> np.ndarray:
    """(n, S, S, 3): the frame each sampled frame's motion is read against. In a segment
    sampled as densely as training clips (a short clip), the next sampled frame (the last
    frame: itself, no motion), exactly what the model saw in training; in a sparser one (a
    long segment), each frame's decoded successor, so that motion spans one frame interval
    rather than seconds."""
    times = segment.timestamps_s
    if len(times) > 1 and float(np.median(np.diff(times))) > DENSE_S:
        return segment.following
    return np.concatenate([segment.frames[1:], segment.frames[-1:]])


def frame_times(videos: list[DecodedSegment], frames: int) -> np.ndarray:
    """(N, ``frames``) float32: each decoded frame's time in seconds, zero past the last."""
    times = np.zeros((len(videos), frames), dtype=np.float32)
    for i, v in enumerate(videos):
        times[i, : len(v.timestamps_s)] = v.timestamps_s
    return times
