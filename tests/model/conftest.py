from __future__ import annotations

import pytest
import torch

from corpus.datasets import load_generic
from corpus.prepare import split_data, vocab_from
from corpus.synth import generate_corpus
from model import HANet, create_model, get_config

CAPTIONS = [
    "a small red star moves left, then a blue circle grows",
    "the big green square slides to the right",
    "a man is playing guitar on the stage",
    "a cat",
]


@pytest.fixture(scope="module")
def tiny() -> HANet:
    torch.manual_seed(0)
    return create_model("tiny")


def random_pixels(model: HANet, batch: int, frames: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    size = model.preprocess.image_size
    return torch.randn(batch, frames, 3, size, size, generator=g)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict:
    """A tiny procedural corpus (60 videos, decoded), its vocabulary and the sized config:
    what the training tests train on."""
    root = tmp_path_factory.mktemp("train")
    dataset = load_generic(generate_corpus(root / "c", 60, seed=2, workers=2, progress=False))
    vocab, cfg = vocab_from(dataset, get_config("tiny"))
    train_data, _ = split_data(dataset, "train", cfg, vocab, progress=False)
    val_data, _ = split_data(dataset, "val", cfg, None, progress=False)
    return {"vocab": vocab, "cfg": cfg, "train": train_data, "val": val_data}
