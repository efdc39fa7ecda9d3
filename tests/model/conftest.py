from __future__ import annotations

import pytest
import torch

from model import HANet, create_model

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
