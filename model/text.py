"""HANet text branch heads (spec section 3), on top of per-token backbone features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import ROLES, HANetCfg
from model.embeddings import TextEmbeddings
from model.layers import AttentionGCN, ConceptClassifier, level_projection, topk_pool
from model.parse import ROLE_IDS, ParsedBatch


class TextHeads(nn.Module):
    def __init__(self, cfg: HANetCfg) -> None:
        super().__init__()
        self.cfg = cfg
        dim_in, dim = cfg.clip_embed_dim, cfg.embed_dim
        self.event = level_projection(dim_in, dim)
        self.action = level_projection(dim_in, dim)
        self.entity = level_projection(dim_in, dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.roles = nn.Embedding(len(ROLES), dim)  # multiplies node vectors; ones = no-op
        nn.init.ones_(self.roles.weight)
        self.gcn = AttentionGCN(dim, cfg.gcn_dropout)
        self.verb_classifier = ConceptClassifier(dim, cfg.num_verbs, kernel_size=1)
        self.noun_classifier = ConceptClassifier(dim, cfg.num_nouns, kernel_size=1)

    def forward(self, tokens: Tensor, sentence: Tensor, parsed: ParsedBatch) -> TextEmbeddings:
        """tokens (N, L, Dc) per-token backbone features; sentence (N, Dc) the backbone's
        sentence (end-of-text) embedding."""
        action = self.drop(self.action(tokens))  # (N, L, D)
        entity = self.drop(self.entity(tokens))
        verb_phrases = _max_pool_spans(action, parsed.verb_spans)  # (N, Pv, D)
        arg_phrases = _max_pool_spans(entity, parsed.arg_spans)  # (N, Pa, D)

        n, pv = verb_phrases.shape[:2]
        root = self.drop(self.event(sentence)).unsqueeze(1)  # (N, 1, D)
        role_ids = torch.cat(
            [
                torch.full((n, 1), ROLE_IDS["ROOT"], device=tokens.device),
                torch.full((n, pv), ROLE_IDS["V"], device=tokens.device),
                parsed.arg_roles,
            ],
            dim=1,
        )  # (N, 1 + Pv + Pa)
        scale = self.roles(role_ids)  # (N, 1 + Pv + Pa, D)
        if self.cfg.text_graph == "reference":  # mlsent.py: only phrase nodes are role-scaled
            scale = torch.cat([torch.ones_like(scale[:, :1]), scale[:, 1:]], dim=1)
        nodes = torch.cat([root, verb_phrases, arg_phrases], dim=1) * scale
        nodes = self.gcn(nodes, parsed.adjacency)  # (N, 1 + Pv + Pa, D)

        verb_probs = topk_pool(
            self.verb_classifier(action, parsed.word_mask), parsed.word_mask, self.cfg.topk_divisor
        )
        noun_probs = topk_pool(
            self.noun_classifier(entity, parsed.word_mask), parsed.word_mask, self.cfg.topk_divisor
        )
        vm, am = parsed.verb_mask.unsqueeze(-1), parsed.arg_mask.unsqueeze(-1)
        return TextEmbeddings(
            global_=F.normalize(nodes[:, 0], dim=-1),
            verb_phrases=F.normalize(verb_phrases, dim=-1) * vm,
            arg_phrases=F.normalize(arg_phrases, dim=-1) * am,
            verb_nodes=F.normalize(nodes[:, 1 : 1 + pv], dim=-1) * vm,
            arg_nodes=F.normalize(nodes[:, 1 + pv :], dim=-1) * am,
            verb_mask=parsed.verb_mask,
            arg_mask=parsed.arg_mask,
            verb_probs=verb_probs,
            noun_probs=noun_probs,
        )


def _max_pool_spans(tokens: Tensor, spans: Tensor) -> Tensor:
    """Max over each span's tokens: tokens (N, L, D), spans (N, P, L) bool -> (N, P, D);
    empty spans give zeros."""
    masked = tokens.unsqueeze(1).masked_fill(~spans.unsqueeze(-1), float("-inf"))  # (N,P,L,D)
    pooled = masked.max(dim=2).values
    return torch.where(spans.any(-1, keepdim=True), pooled, torch.zeros_like(pooled))
