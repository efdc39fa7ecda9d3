"""The sentence graph's edges: the reference code's for new models, the first (extended) graph
for checkpoints written before ``HANetCfg.text_graph`` existed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from model import HANet, create_model, get_config, load_checkpoint
from model.backbone import encode_tokens
from model.config import ConfigError, HANetCfg

DEMO = Path(__file__).resolve().parents[2] / "model" / "weights" / "hanet-tiny-demo.pt"
# The demo model's scores computed before the text_graph field existed (same captions, seeded
# random frames): an old checkpoint must still give exactly these.
GOLDEN = Path(__file__).with_name("demo_scores_before_text_graph.json")


def _edges(adjacency: torch.Tensor) -> set[tuple[int, int]]:
    """(receiver, sender) pairs of one sentence's adjacency."""
    return {(int(i), int(j)) for i, j in adjacency.nonzero().tolist()}


def test_new_configs_use_the_reference_graph_and_old_ones_the_extended() -> None:
    cfg = get_config("tiny")
    assert cfg.text_graph == "reference"
    old = cfg.to_dict()
    del old["text_graph"]  # what a checkpoint written before the field holds
    assert HANetCfg.from_dict(old).text_graph == "extended"
    assert HANetCfg.from_dict(cfg.to_dict()).text_graph == "reference"
    with pytest.raises(ConfigError, match="text_graph"):
        replace(cfg, text_graph="full")


def test_reference_edges_follow_the_reference_reader() -> None:
    """rolegraphs.py: root -> each verb, verb <-> each of its arguments, no self-loops; an
    argument without a verb has no edge; the root receives nothing."""
    model = create_model("tiny")
    pv = model.cfg.max_verbs
    # "a red star moves left": verb 0 "moves left", arg 0 "a red star" (its ARG0)
    parsed = model.parse(["a red star moves left", "a red triangle and a yellow circle"])
    dec = parsed.decompositions[0]
    assert [(p.role, p.parent) for p in dec.args] == [("ARG0", 0)]
    verb, arg = 1, 1 + pv
    assert _edges(parsed.adjacency[0]) == {(verb, 0), (verb, arg), (arg, verb)}
    assert not parsed.adjacency[0, 0].any()  # the root receives nothing
    # no verb: both noun phrases are NOUN nodes, isolated
    assert [p.role for p in parsed.decompositions[1].args] == ["NOUN", "NOUN"]
    assert _edges(parsed.adjacency[1]) == set()


def test_extended_edges_are_kept_as_an_option() -> None:
    model = HANet(replace(get_config("tiny"), text_graph="extended"))
    pv = model.cfg.max_verbs
    parsed = model.parse(["a red star moves left", "a red triangle and a yellow circle"])
    nodes = 1 + pv + model.cfg.max_args
    loops = {(i, i) for i in range(nodes)}
    verb, arg = 1, 1 + pv
    assert _edges(parsed.adjacency[0]) == loops | {(0, verb), (verb, 0), (verb, arg), (arg, verb)}
    tied = {(0, arg), (arg, 0), (0, arg + 1), (arg + 1, 0)}  # verbless arguments -> root
    assert _edges(parsed.adjacency[1]) == loops | tied


def _trained_like(cfg: HANetCfg) -> HANet:
    """A model whose GCN and role embedding are no longer at their no-op start."""
    torch.manual_seed(0)
    model = HANet(cfg).eval()
    with torch.no_grad():
        for p in (model.text.gcn.out.weight, model.text.gcn.out.bias, model.text.roles.weight):
            p.add_(torch.randn_like(p) * 0.5)
    return model


def test_reference_root_keeps_its_own_vector() -> None:
    """With the reference graph the sentence's global vector does not mix in phrase nodes:
    it is the normalised event projection of CLIP's sentence embedding, whatever the phrases;
    the extended graph's root does mix them in."""
    sentences = ["a man is playing guitar on the stage", "a man"]
    for graph, own in (("reference", True), ("extended", False)):
        model = _trained_like(replace(get_config("tiny"), text_graph=graph))
        with torch.no_grad():
            text = model.encode_text(sentences)
            parsed = model.parse(sentences)
            _, sentence = encode_tokens(model.clip, parsed.token_ids, parsed.eot_index)
            root = model.text.gcn.norm(model.text.event(sentence))
            expected = torch.nn.functional.normalize(root, dim=-1)
        same = torch.allclose(text.global_, expected, atol=1e-6)
        assert same == own, graph
        # verb nodes still hear the root and their arguments in both graphs
        assert text.verb_nodes[0].abs().sum() > 0


@pytest.mark.skipif(not DEMO.is_file(), reason="bundled demo model absent")
def test_old_checkpoint_scores_exactly_as_before() -> None:
    golden = json.loads(GOLDEN.read_text())
    model = load_checkpoint(DEMO)
    assert model.cfg.text_graph == "extended"
    g = torch.Generator().manual_seed(golden["pixels_seed"])
    size, t = model.preprocess.image_size, model.cfg.max_frames
    pixels = torch.randn(golden["videos"], t, 3, size, size, generator=g)
    mask = torch.ones(golden["videos"], t, dtype=torch.bool)
    mask[1, golden["mask_video1_from"] :] = False
    with torch.no_grad():
        scores = model.similarity(
            model.encode_text(golden["captions"]), model.encode_video(pixels, mask)
        )
    assert set(scores) == set(golden["scores"])
    for name, expected in golden["scores"].items():
        assert torch.allclose(scores[name], torch.tensor(expected), atol=1e-6), name
    # and the same weights read as the reference graph would score otherwise
    as_reference = HANet(replace(model.cfg, text_graph="reference"), model.vocab).eval()
    as_reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        other = as_reference.similarity(
            as_reference.encode_text(golden["captions"]), as_reference.encode_video(pixels, mask)
        )
    assert not torch.allclose(other["fused"], scores["fused"], atol=1e-4)
