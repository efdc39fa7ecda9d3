"""Small real index builds: the tiny config's shapes, seeded random unit vectors, real FAISS
indexes and float16 rerank rows written by the index writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from index import rows
from index.reader import GRAM_FILES
from index.writer import IndexWriter
from model import HANetCfg, VideoEmbeddings, get_config

CHECKPOINT = "c" * 64


def as_written_before(root: Path, grams: bool = True) -> None:
    """Every part of the version at ``root`` rewritten as parts were written before records
    (``rows.STRUCTURED``): a file per field; without ``grams`` as before Gram matrices too."""
    for folder in sorted(root.glob("parts/*")):
        for path in (folder / f"{name}.npy" for name in rows.STRUCTURED):
            if path.exists():
                packed = np.load(path)
                for name in packed.dtype.names:
                    if grams or name not in GRAM_FILES.values():
                        np.save(folder / f"{name}.npy", np.ascontiguousarray(packed[name]))
                path.unlink()


def as_written_before_summaries(root: Path) -> None:
    """Every part of the version at ``root`` rewritten as records parts were written before
    summaries (``rows.SUMMARY``): the global vector in the records, the probabilities in files
    of their own."""
    for folder in sorted(root.glob("parts/*")):
        records, summary = (np.load(folder / f"{n}.npy") for n in (rows.RECORDS, rows.SUMMARY))
        moved = [n for n in summary.dtype.names if n not in rows.PROB_FIELDS]
        fields = [(n, records.dtype.fields[n][0]) for n in records.dtype.names]
        fields += [(n, summary.dtype.fields[n][0]) for n in moved]
        joined = np.zeros(len(records), np.dtype(fields, align=True))
        for name in records.dtype.names:
            joined[name] = records[name]
        for name in moved:
            joined[name] = summary[name]
        np.save(folder / f"{rows.RECORDS}.npy", joined)
        for name in rows.PROB_FIELDS:
            np.save(folder / f"{name}.npy", np.ascontiguousarray(summary[name]))
        (folder / f"{rows.SUMMARY}.npy").unlink()


def mapped_kb(path: Path) -> int:
    """This process's resident kB of its mappings of ``path``, or of files under it
    (/proc/self/smaps Rss; Linux)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
            mapped = line.split()[-1] if len(line.split()) >= 6 else ""
            inside = mapped == str(path) or mapped.startswith(f"{path}/")
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def videos(cfg: HANetCfg, ids: list[int], seed: int = 0) -> VideoEmbeddings:
    """Embeddings of these videos in ``cfg``'s shapes (each id seeds its own vectors, and
    ``seed`` shifts them all: the same id and seed give the same video)."""
    t, d = cfg.max_frames, cfg.embed_dim
    sa, se = cfg.num_action_segments, cfg.num_entity_segments
    rows = []
    for video_id in ids:
        g = torch.Generator().manual_seed(seed * 100_003 + video_id)
        first = torch.randint(0, t - cfg.action_window + 1, (1, sa), generator=g)
        rows.append(
            VideoEmbeddings(
                global_=unit(torch.randn(1, d, generator=g)),
                action_frames=unit(torch.randn(1, t, d, generator=g)),
                entity_frames=unit(torch.randn(1, t, d, generator=g)),
                frame_mask=torch.ones(1, t, dtype=torch.bool),
                action_segments=unit(torch.randn(1, sa, d, generator=g)),
                action_spans=torch.stack([first, first + cfg.action_window - 1], dim=-1),
                entity_segments=unit(torch.randn(1, se, d, generator=g)),
                verb_probs=torch.rand(1, cfg.num_verbs, generator=g),
                noun_probs=torch.rand(1, cfg.num_nouns, generator=g),
            )
        )
    return VideoEmbeddings.cat(rows)


def times(cfg: HANetCfg, count: int) -> np.ndarray:
    """(count, T) frame timestamps: T frames over 2 s."""
    return np.tile((np.arange(cfg.max_frames, dtype=np.float32) + 0.5) * 0.25, (count, 1))


def add(writer: IndexWriter, ids: list[int], seed: int = 0) -> None:
    """Publish these videos through a writer, as an indexer worker does."""
    cfg = get_config("tiny")
    writer.publish(ids, videos(cfg, ids, seed), times(cfg, len(ids)))


@pytest.fixture
def cfg() -> HANetCfg:
    return get_config("tiny")


@pytest.fixture
def index_dir(tmp_path: Path, cfg: HANetCfg) -> Path:
    """An index of videos 1..12, published in two versions (two rerank parts)."""
    folder = tmp_path / "index"
    writer = IndexWriter.open(folder, cfg, CHECKPOINT, "Flat")
    add(writer, list(range(1, 7)))
    add(writer, list(range(7, 13)))
    return folder
