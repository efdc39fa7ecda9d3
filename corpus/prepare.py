"""From a dataset on disk to the tensors ``model.train`` and ``model.evaluate`` take."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

import torch

from corpus.datasets import Caption, Dataset, VideoItem, decode_split
from model.config import HANetCfg
from model.train import SplitData
from model.vocab import ConceptVocab, build_vocab, caption_concepts, concept_targets

log = logging.getLogger(__name__)


def _concepts(caption: Caption) -> tuple[set[str], set[str]]:
    if caption.words is not None and caption.pos is not None:
        return caption_concepts(list(caption.words), list(caption.pos), list(caption.lemmas or ()))
    return caption_concepts(caption.text.lower().replace(",", " ,").replace(".", " ").split())


def vocab_from(dataset: Dataset, cfg: HANetCfg) -> tuple[ConceptVocab, HANetCfg]:
    """The concept vocabulary of the training captions, and ``cfg`` resized to it."""
    concepts = [_concepts(c) for v in dataset.split("train") for c in v.captions]
    vocab = build_vocab(concepts, cfg.num_verbs, cfg.num_nouns)
    if not vocab.verbs or not vocab.nouns:
        raise ValueError("the training captions name no verbs or no nouns")
    sized = replace(
        cfg,
        num_verbs=len(vocab.verbs),
        num_nouns=len(vocab.nouns),
        num_action_segments=min(cfg.num_action_segments, len(vocab.verbs)),
        num_entity_segments=min(cfg.num_entity_segments, len(vocab.nouns)),
    )
    return vocab, sized


def _cache_path(
    cache_dir: Path | None, items: list[VideoItem], frames: int, size: int, served: bool
):
    if cache_dir is None:
        return None
    key = hashlib.sha256("\n".join(str(v.path) for v in items).encode()).hexdigest()[:16]
    return cache_dir / f"frames-{key}-{frames}x{size}{'-served' if served else ''}.npz"


def split_data(
    dataset: Dataset,
    split: str,
    cfg: HANetCfg,
    vocab: ConceptVocab | None,
    cache_dir: Path | None = None,
    progress: bool = True,
    served: bool = False,
) -> tuple[SplitData, list[VideoItem]]:
    """Decoded frames of a split (videos that fail to decode are left out and logged) with
    captions and, given a vocabulary, concept targets. ``served``: each video decoded as the
    indexer embeds a unit, motion partners included (``decode_split``)."""
    items = dataset.split(split)
    size, t = cfg.preprocess.image_size, cfg.max_frames
    path = _cache_path(cache_dir, items, t, size, served)
    cache = decode_split(items, t, size, path, progress, served)
    for vid, reason in cache.failed.items():
        log.warning("left out %s: %s", vid, reason)
    kept = [v for v in items if v.id not in cache.failed]
    targets = None
    if vocab is not None:
        targets = []
        for v in kept:
            concepts = [_concepts(c) for c in v.captions]
            targets.append([concept_targets(vocab, c, concepts) for c in concepts])
    data = SplitData(
        frames=torch.from_numpy(cache.frames),
        mask=torch.from_numpy(cache.mask),
        captions=[[c.text for c in v.captions] for v in kept],
        targets=targets,
        following=None if cache.following is None else torch.from_numpy(cache.following),
    )
    if any("source" in v.extra for v in kept):  # windows of long videos (corpus.windows)
        data.sources = [v.extra["source"]["video"] if "source" in v.extra else v.id for v in kept]
        data.caption_events = [
            v.extra.get("caption_events", [None] * len(v.captions)) for v in kept
        ]
    return data, kept


def hard_pairs(items: list[VideoItem]) -> dict[str, list[tuple[int, str, str]]]:
    """(video index, true caption, distractor) pairs from manifests that provide them."""
    pairs: dict[str, list[tuple[int, str, str]]] = {"mirrored": [], "swapped": []}
    for i, item in enumerate(items):
        for kind in pairs:
            if kind in item.extra:
                true, false = item.extra[kind]
                pairs[kind].append((i, true["text"], false["text"]))
    return pairs
