"""The indexing job's embedder: decoded videos -> the HANet video branch's embeddings (CUDA and
bf16 where the model is on a GPU), their frame times and concepts. No database, no index."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from indexer.decode import DecodedVideo
from indexer.reader import Decoded
from model import Concept, HANet, VideoEmbeddings
from model.backbone import autocast
from model.preprocess import normalize_frames

log = logging.getLogger(__name__)

CONCEPTS_PER_KIND = 3  # actions and entities kept on each video's row


@dataclass(frozen=True)
class EmbeddedBatch:
    """Videos embedded together, row i of each field being ``video_ids[i]``'s."""

    video_ids: list[int]
    embeddings: VideoEmbeddings  # CPU float32
    frame_times: np.ndarray  # (N, T) float32: each frame's time, zero past a video's frames
    durations_s: list[float]
    concepts: list[dict | None]  # {"actions": [{"name", "probability"}], "entities": [...]}


class Embedder:
    """Decoded videos -> ``EmbeddedBatch``, halving the batch on CUDA out-of-memory."""

    def __init__(self, model: HANet) -> None:
        self.model = model.eval()

    def __call__(self, decoded: list[Decoded]) -> EmbeddedBatch:
        videos = [d.video for d in decoded]
        embeddings = self.embed(videos)
        return EmbeddedBatch(
            video_ids=[d.video_id for d in decoded],
            embeddings=embeddings,
            frame_times=frame_times(videos, self.model.cfg.max_frames),
            durations_s=[v.duration_s for v in videos],
            concepts=self.concepts(embeddings),
        )

    def embed(self, videos: list[DecodedVideo]) -> VideoEmbeddings:
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
    def encode(self, videos: list[DecodedVideo]) -> VideoEmbeddings:
        """One pass of the video branch over ``videos``, padded to T frames (masked)."""
        model, t = self.model, self.model.cfg.max_frames
        size = model.preprocess.image_size
        frames = np.zeros((len(videos), t, size, size, 3), dtype=np.uint8)  # (N, T, S, S, 3)
        mask = np.zeros((len(videos), t), dtype=bool)  # (N, T)
        for i, v in enumerate(videos):
            frames[i, : len(v.frames)], mask[i, : len(v.frames)] = v.frames, True
        device = model.device
        pixels = normalize_frames(torch.from_numpy(frames).to(device), model.preprocess)
        with autocast(device):
            out = model.encode_video(pixels, torch.from_numpy(mask).to(device))
        return out.to("cpu", dtype=torch.float32)

    def concepts(self, embeddings: VideoEmbeddings) -> list[dict | None]:
        """Each video's most probable actions and entities, as stored on its row; None for
        every video when the model has no concept vocabulary."""
        if self.model.vocab is None:
            return [None] * len(embeddings)
        top = self.model.top_concepts(embeddings, k=CONCEPTS_PER_KIND)
        return [{kind: _as_json(found) for kind, found in video.items()} for video in top]


def _as_json(concepts: list[Concept]) -> list[dict[str, str | float]]:
    return [{"name": c.name, "probability": c.probability} for c in concepts]


def frame_times(videos: list[DecodedVideo], frames: int) -> np.ndarray:
    """(N, ``frames``) float32: each decoded frame's time in seconds, zero past the last."""
    times = np.zeros((len(videos), frames), dtype=np.float32)
    for i, v in enumerate(videos):
        times[i, : len(v.timestamps_s)] = v.timestamps_s
    return times
