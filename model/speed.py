"""Faster numeric modes for serving. Each is opt-in; the benchmark shows that it keeps rankings."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.hanet import HANet


class LinearSelfAttention(nn.Module):
    """``nn.MultiheadAttention`` (self-attention, batch first) rebuilt from plain ``nn.Linear``
    layers, so that dynamic quantisation reaches its projections too: in the text tower the
    attention projections hold a third of the weights, and a single query is bound by reading
    weights."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if not mha.batch_first or mha.in_proj_weight is None:
            raise ValueError("expected a batch-first MultiheadAttention with packed projections")
        dim, self.heads = mha.embed_dim, mha.num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        with torch.no_grad():
            self.qkv.weight.copy_(mha.in_proj_weight)
            self.qkv.bias.copy_(mha.in_proj_bias)
            self.out.weight.copy_(mha.out_proj.weight)
            self.out.bias.copy_(mha.out_proj.bias)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        need_weights: bool = False,
        attn_mask: Tensor | None = None,
    ) -> tuple[Tensor, None]:
        if not (q is k is v):
            raise ValueError("self-attention only")
        b, length, dim = q.shape
        qkv = self.qkv(q).view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        return self.out(x.transpose(1, 2).reshape(b, length, dim)), None


def quantize_text_tower(model: HANet) -> HANet:
    """int8 dynamic quantisation (per output channel) of every Linear layer of the text tower
    (attention projections included, via ``LinearSelfAttention``) and of the text heads (level
    projections, graph attention), for encoding single queries on a CPU. In place; the model
    must be on the CPU and in eval mode."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if model.training or model.device.type != "cpu":
        raise ValueError("quantize a CPU model in eval mode")
    for block in model.clip.transformer.resblocks:
        if isinstance(block.attn, nn.MultiheadAttention):
            block.attn = LinearSelfAttention(block.attn)
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        # per-output-channel scales: they keep fused-score rankings closer to float32 than
        # per-tensor ones, for a little more time per query (docs/benchmarks.md)
        spec = {nn.Linear: per_channel_dynamic_qconfig}
        model.clip.transformer = quantize_dynamic(model.clip.transformer, spec)
        # the heads' Linear layers too: faster per query at the same top-10 overlap with
        # float32 (docs/benchmarks.md)
        model.text = quantize_dynamic(model.text, spec)
    return model


class TracedTextTower(nn.Module):
    """A text transformer as a frozen TorchScript graph, traced once: the same operations
    without Python's per-module dispatch, which for one short query is about 30% of the tower's
    time. Takes any batch size and sequence length (the trace records shapes symbolically;
    tested against the eager tower), and always an attention mask."""

    def __init__(self, tower: nn.Module, width: int) -> None:
        super().__init__()
        length = 5
        x = torch.zeros(2, length, width)
        mask = torch.full((length, length), float("-inf")).triu_(1)  # CLIP's causal mask
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated
            # the float tower's shape checks are traced as constants; its arithmetic is not
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(tower, (x, mask), check_trace=False)
            self.graph = torch.jit.freeze(traced.eval())

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        return self.graph(x, attn_mask)


def trace_text_tower(model: HANet) -> HANet:
    """Replace the text transformer with its ``TracedTextTower`` (after ``quantize_text_tower``
    if both are wanted), for encoding queries on a CPU. In place; eval mode, CPU."""
    if model.training or model.device.type != "cpu":
        raise ValueError("trace a CPU model in eval mode")
    clip = model.clip
    if not isinstance(clip.transformer, TracedTextTower):
        clip.transformer = TracedTextTower(clip.transformer, clip.token_embedding.embedding_dim)
    return model


def for_serving(model: HANet, int8_text: bool = False) -> HANet:
    """The model as the search service runs queries on it: on a CPU, the text tower int8 if
    asked (``quantize_text_tower``) and traced (``trace_text_tower``). In place."""
    if model.device.type != "cpu":
        return model
    if int8_text:
        quantize_text_tower(model)
    return trace_text_tower(model)
