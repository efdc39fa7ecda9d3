"""open_clip architectures and pretrained weights: each supported architecture scores exactly
like CLIP with mean-pooled frames before training (random weights, built by open_clip's own
factory), and ``--pretrained`` resolves through open_clip's registry without the network (a
weights file, or a tag found in a cache the test fills)."""

from __future__ import annotations

import huggingface_hub
import open_clip
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from model import CheckpointError, load_checkpoint
from model.config import GLOBAL_ONLY_FUSION, ConfigError
from model.pretrained import SUPPORTED_ARCHS, create_pretrained, from_open_clip, hanet_config
from service.cli import app

CAPTIONS = ["a man is playing guitar on the stage", "a dog runs after a ball", "a cat"]


def _clip_mean_pooling(clip, pixels: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor):
    """CLIP's zero-shot scores with mean-pooled frames, from open_clip's own encoders."""
    text = F.normalize(clip.encode_text(tokens), dim=-1)
    videos = []
    for i in range(len(pixels)):
        frames = F.normalize(clip.encode_image(pixels[i][mask[i]]), dim=-1)
        videos.append(F.normalize(frames.mean(0), dim=-1))
    return text @ torch.stack(videos).T


@pytest.mark.slow
@pytest.mark.parametrize("arch", SUPPORTED_ARCHS)
def test_zero_shot_equals_clip_mean_pooling(arch: str) -> None:
    torch.manual_seed(0)
    quick = bool(open_clip.get_model_config(arch).get("quick_gelu"))
    clip = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick).eval()
    model = from_open_clip(hanet_config(arch), clip)
    size = model.preprocess.image_size
    pixels = torch.randn(2, 3, 3, size, size, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[True, True, True], [True, True, False]])
    with torch.no_grad():
        scores = model.similarity(model.encode_text(CAPTIONS), model.encode_video(pixels, mask))
        expected = _clip_mean_pooling(clip, pixels, mask, open_clip.tokenize(CAPTIONS))
    assert model.cfg.fusion == GLOBAL_ONLY_FUSION
    assert torch.allclose(scores["global"], expected, atol=1e-5), arch
    assert torch.allclose(scores["fused"], expected, atol=1e-5), arch
    assert expected.std() > 1e-4  # not vacuous: pairs score differently


def test_unsupported_architectures_are_refused_by_name() -> None:
    for arch in ("ViT-B-32-SigLIP", "coca_ViT-B-32", "no-such-arch"):
        with pytest.raises(ConfigError, match="not supported"):
            hanet_config(arch)


def test_openai_tag_brings_quick_gelu_and_its_preprocessing() -> None:
    cfg = hanet_config("ViT-B-32", "openai")
    assert cfg.clip["quick_gelu"] is True  # OpenAI's weights were trained with QuickGELU
    assert "quick_gelu" not in hanet_config("ViT-B-32", "laion2b_s34b_b79k").clip
    assert cfg.preprocess.mean == open_clip.get_pretrained_cfg("ViT-B-32", "openai")["mean"]
    assert (cfg.max_words, cfg.embed_dim, cfg.preprocess.image_size) == (77, 512, 224)


@pytest.fixture(scope="module")
def rn50_weights(tmp_path_factory) -> dict:
    """Random RN50 weights (QuickGELU, as OpenAI's), saved as float16 to keep the file small."""
    torch.manual_seed(0)
    clip = open_clip.create_model("RN50", pretrained=None, force_quick_gelu=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in clip.state_dict().items()}
    path = tmp_path_factory.mktemp("rn50") / "open_clip_pytorch_model.bin"
    torch.save(state, path)
    return {"path": path, "state": state}


def _same_backbone(model, state: dict) -> bool:
    ours = model.clip.state_dict()
    return set(ours) == set(state) and all(
        torch.equal(ours[k].to(v.dtype), v) for k, v in state.items()
    )


@pytest.mark.slow
def test_pretrained_weights_file_goes_through_open_clip(rn50_weights: dict) -> None:
    model = create_pretrained("RN50", str(rn50_weights["path"]))
    assert _same_backbone(model, rn50_weights["state"])
    with pytest.raises(CheckpointError, match="open_clip cannot load"):
        create_pretrained("RN50", str(rn50_weights["path"].with_name("missing.bin")))


@pytest.mark.slow
def test_pretrained_tag_is_read_from_open_clips_cache(
    rn50_weights: dict, tmp_path, monkeypatch
) -> None:
    """``hanet init --pretrained openai`` for RN50: open_clip resolves the tag to its Hugging
    Face repository and finds the file in the cache (filled here in the Hub's cache layout), so
    nothing is downloaded; offline mode makes any request an error."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    repo_id = open_clip.get_pretrained_cfg("RN50", "openai")["hf_hub"].rstrip("/")
    repo = tmp_path / "cache" / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit / "open_clip_pytorch_model.bin").symlink_to(rn50_weights["path"])
    out = tmp_path / "hanet.pt"
    args = ["init", "--arch", "RN50", "--pretrained", "openai", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    model = load_checkpoint(out)
    assert model.cfg.clip_arch == "RN50" and model.cfg.clip["quick_gelu"] is True
    assert model.cfg.fusion == GLOBAL_ONLY_FUSION
    assert _same_backbone(model, rn50_weights["state"])
    # a cache without the file: open_clip would have to download, which offline mode refuses
    empty = CliRunner().invoke(app, [*args, "--cache-dir", str(tmp_path / "empty")])
    assert empty.exit_code != 0 and "open_clip cannot load" in empty.output
