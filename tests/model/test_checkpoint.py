"""Checkpoints: strict loading and clear errors for bad files."""

from __future__ import annotations

import pytest
import torch

from model import CheckpointError, HANet, create_model, file_sha256, get_config, load_checkpoint
from model.config import GLOBAL_ONLY_FUSION, ConfigError, HANetCfg


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    create_model("tiny").save(str(path))
    return path


def test_missing_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_corrupt_file(tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(bad)


def test_truncated_file(saved, tmp_path) -> None:
    data = saved.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(cut)


def test_not_a_hanet_checkpoint(tmp_path) -> None:
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a HANet checkpoint"):
        load_checkpoint(other)


def test_mismatched_weights(saved, tmp_path) -> None:
    payload = torch.load(saved, weights_only=True)
    payload["config"]["num_verbs"] = 32  # heads in the file are sized 64
    wrong = tmp_path / "wrong.pt"
    torch.save(payload, wrong)
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(wrong)


def test_unknown_config_key(saved, tmp_path) -> None:
    payload = torch.load(saved, weights_only=True)
    payload["config"]["surprise"] = 1
    wrong = tmp_path / "wrong.pt"
    torch.save(payload, wrong)
    with pytest.raises(CheckpointError, match="unknown config keys"):
        load_checkpoint(wrong)


def test_hash_is_the_file_content_hash(saved) -> None:
    assert load_checkpoint(saved).checkpoint_sha256 == file_sha256(saved)


def test_bad_clip_weights_file(tmp_path) -> None:
    wrong = tmp_path / "vitb32.pt"
    torch.save({"visual.proj": torch.zeros(2, 2)}, wrong)
    with pytest.raises(CheckpointError, match="cannot load CLIP weights"):
        create_model("tiny", clip_weights=str(wrong))
    with pytest.raises(CheckpointError, match="not found"):
        create_model("tiny", clip_weights=str(tmp_path / "missing.pt"))


@pytest.mark.slow
def test_clip_weights_switch_fusion_to_global_only(tmp_path) -> None:
    weights = tmp_path / "w.pt"
    torch.save(HANet(get_config("tiny")).clip.state_dict(), weights)
    assert create_model("tiny", clip_weights=str(weights)).cfg.fusion == GLOBAL_ONLY_FUSION


def test_config_round_trip_and_validation() -> None:
    cfg = get_config("ViT-B-32")
    assert HANetCfg.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown architecture"):
        get_config("ViT-Z-99")
    with pytest.raises(ConfigError, match="fusion"):
        cfg.with_fusion((1.0,))
    with pytest.raises(ConfigError, match="motion_levels"):
        HANetCfg.from_dict({**cfg.to_dict(), "motion_levels": "event"})
    for bad in ({"keypoints": -1}, {"keypoints": 2, "motion_kernel": 0}):
        with pytest.raises(ConfigError, match="keypoints"):
            HANetCfg.from_dict({**cfg.to_dict(), **bad})
    for bad in ({"motion_stream": -1}, {"motion_stream": 8, "motion_kernel": 0}):
        with pytest.raises(ConfigError, match="motion_stream"):
            HANetCfg.from_dict({**cfg.to_dict(), **bad})


def test_config_saved_before_motion_levels_keeps_action_only_motion() -> None:
    """Checkpoints written before the choice existed had the convolution on the action level."""
    legacy = get_config("tiny").to_dict()
    del legacy["motion_levels"], legacy["keypoints"], legacy["motion_stream"]
    cfg = HANetCfg.from_dict(legacy)
    assert cfg.motion_levels == "action" and cfg.keypoints == 0 and cfg.motion_stream == 0
