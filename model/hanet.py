"""HANet: the two branches on one open_clip backbone, and the public operations on them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from model import scores as scoring
from model.backbone import (
    build_clip,
    encode_frames,
    encode_frames_and_patches,
    encode_tokens,
    load_clip_weights,
)
from model.checkpoint import file_sha256, read_checkpoint, save_checkpoint
from model.config import GLOBAL_ONLY_FUSION, ConfigError, HANetCfg, PreprocessCfg, get_config
from model.embeddings import TextEmbeddings, VideoEmbeddings
from model.errors import CheckpointError, ModelError
from model.layers import FrameDifferences, SpatialSoftArgmax
from model.parse import ParsedBatch, SentenceParser
from model.text import TextHeads
from model.video import VideoHeads
from model.vocab import ConceptVocab


@dataclass(frozen=True)
class Concept:
    name: str
    probability: float


class HANet(nn.Module):
    """Hierarchical Alignment Network on an open_clip backbone."""

    def __init__(self, cfg: HANetCfg, vocab: ConceptVocab | None = None) -> None:
        super().__init__()
        if vocab is not None and (len(vocab.verbs), len(vocab.nouns)) != (
            cfg.num_verbs,
            cfg.num_nouns,
        ):
            raise ModelError("concept vocabulary sizes differ from the config's num_verbs/nouns")
        self.cfg = cfg
        self.vocab = vocab
        self.clip = build_clip(cfg.clip)
        self.keypoints = None
        if cfg.keypoints:
            self.keypoints = SpatialSoftArgmax(
                int(cfg.clip["vision_cfg"]["width"]), cfg.keypoints, self.clip.visual.grid_size
            )
        self.motion_stream = None
        if cfg.motion_stream:
            self.motion_stream = FrameDifferences(cfg.preprocess.image_size, cfg.motion_stream)
        self.video = VideoHeads(cfg)
        self.text = TextHeads(cfg)
        self.parser = SentenceParser(cfg.max_words, cfg.max_verbs, cfg.max_args, cfg.text_graph)
        self.checkpoint_sha256: str | None = None  # set by save / load_checkpoint

    @property
    def preprocess(self) -> PreprocessCfg:
        """Image size, mean and std the image tower expects."""
        return self.cfg.preprocess

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- video ---------------------------------------------------------------------------
    def encode_frames(
        self, pixels: Tensor, mask: Tensor, following: Tensor | None = None
    ) -> Tensor:
        """pixels (B, T, 3, H, W), mask (B, T) -> backbone features (B, T, Dc), zeros where
        padded (with keypoints or a motion stream, (B, T, Dc + cfg.frame_extras): each frame's
        keypoint positions, then its motion-stream features, follow its own). Only real frames
        go through the image tower. ``following``: each frame's successor for the motion stream
        (``FrameDifferences``); ignored without one."""
        b, t = mask.shape
        if self.keypoints is None:
            features = encode_frames(self.clip, pixels[mask])  # (n_valid, Dc)
        else:  # (n_valid, Dc + 2K): the keypoints' positions after the features
            features, patches = encode_frames_and_patches(self.clip, pixels[mask])
            features = torch.cat([features, self.keypoints(patches).to(features.dtype)], dim=-1)
        if self.motion_stream is not None:
            moving = self.motion_stream(pixels, mask, following).to(features.dtype)
            features = torch.cat([features, moving], dim=-1)
        out = features.new_zeros(b, t, features.shape[-1])
        out[mask] = features
        return out

    def encode_video_features(self, features: Tensor, mask: Tensor) -> VideoEmbeddings:
        """Heads only, on cached backbone features (B, T, Dc): the frozen-backbone path."""
        return self.video(features, mask)

    def encode_video(
        self, pixels: Tensor, mask: Tensor, following: Tensor | None = None
    ) -> VideoEmbeddings:
        """pixels (B, T, 3, H, W) preprocessed frames, mask (B, T) bool -> VideoEmbeddings.
        ``following`` (B, T, 3, H, W), optional: each frame's successor in its video, for the
        motion stream."""
        if pixels.dim() != 5 or mask.shape != pixels.shape[:2]:
            raise ValueError(
                f"pixels (B, T, 3, H, W) and mask (B, T) expected, got "
                f"{tuple(pixels.shape)} and {tuple(mask.shape)}"
            )
        if not bool(mask.any(1).all()):
            raise ValueError("every video needs at least one real frame")
        if following is not None and following.shape != pixels.shape:
            raise ValueError("following frames must have the pixels' shape")
        features = self.encode_frames(pixels, mask.bool(), following)
        return self.encode_video_features(features, mask.bool())

    # -- text ----------------------------------------------------------------------------
    def parse(self, sentences: list[str]) -> ParsedBatch:
        return self.parser(sentences)

    def encode_parsed(self, parsed: ParsedBatch) -> TextEmbeddings:
        parsed = parsed.to(self.device)
        tokens, sentence = encode_tokens(self.clip, parsed.token_ids, parsed.eot_index)
        return self.text(tokens, sentence, parsed)

    def encode_text(self, sentences: list[str]) -> TextEmbeddings:
        """Sentences -> TextEmbeddings (decomposition, text tower, heads)."""
        if not sentences:
            raise ValueError("no sentences to encode")
        return self.encode_parsed(self.parse(sentences))

    # -- scores --------------------------------------------------------------------------
    def similarity(
        self, text: TextEmbeddings, video: VideoEmbeddings, grams: dict[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Every level's score, (num_texts, num_videos) each, plus "fused". ``grams``: the
        videos' stored ``scores.unit_grams`` (an index build's), if any."""
        return scoring.similarity(
            text, video, self.cfg.fusion, self.cfg.attention_scale, grams=grams
        )

    def top_concepts(self, video: VideoEmbeddings, k: int = 5) -> list[dict[str, list[Concept]]]:
        """Per video, its ``k`` most probable action (verb) and entity (noun) concepts."""
        if self.vocab is None:
            raise ModelError(
                "this model has no concept vocabulary: its concept heads are "
                "untrained (train it with `hanet train`)"
            )
        actions = _top(video.verb_probs, self.vocab.verbs, k)
        entities = _top(video.noun_probs, self.vocab.nouns, k)
        return [{"actions": a, "entities": e} for a, e in zip(actions, entities, strict=True)]

    def save(self, path: str, dtype: torch.dtype | None = None) -> str:
        """Write a checkpoint (atomically), weights in ``dtype`` if given (float16 halves the
        file); returns its content hash."""
        return save_checkpoint(self, path, dtype)


def _top(probs: Tensor, names: tuple[str, ...], k: int) -> list[list[Concept]]:
    """Per row of ``probs`` (M, K), its ``k`` most probable concepts, most probable first."""
    values, index = probs.float().topk(min(k, len(names)), dim=-1)
    return [
        [Concept(names[i], round(v, 4)) for v, i in zip(vs, js, strict=True)]
        for vs, js in zip(values.tolist(), index.tolist(), strict=True)
    ]


def create_model(
    name: str, clip_weights: str | None = None, vocab: ConceptVocab | None = None
) -> HANet:
    """A HANet of a named architecture, in eval mode. With ``clip_weights`` (an open_clip
    weights file) the backbone is loaded from it and the fusion uses the global score alone
    until the heads are trained, so the model scores exactly like CLIP with mean-pooled frames."""
    cfg = get_config(name)
    if clip_weights is not None:
        cfg = cfg.with_fusion(GLOBAL_ONLY_FUSION)
    model = HANet(cfg, vocab)
    if clip_weights is not None:
        load_clip_weights(model.clip, clip_weights)
    return model.eval()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> HANet:
    """Rebuild the model a checkpoint describes and load its weights strictly (eval mode)."""
    path = Path(path)
    payload = read_checkpoint(path)
    try:
        cfg = HANetCfg.from_dict(payload["config"])
        vocab = ConceptVocab.from_dict(payload["vocab"]) if payload.get("vocab") else None
        model = HANet(cfg, vocab)
        state = {
            k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()
        }
        model.load_state_dict(state, strict=True)
    except (ConfigError, KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path} does not match this code's HANet: {exc}") from exc
    model.checkpoint_sha256 = file_sha256(path)
    return model.to(map_location).eval()
