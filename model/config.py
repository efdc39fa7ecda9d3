"""Named HANet architectures: frozen dataclasses saved inside every checkpoint."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

# Order of the seven alignment scores; fusion weights follow it.
SCORE_NAMES: tuple[str, ...] = (
    "global",
    "local_action",
    "local_entity",
    "individual_action",
    "individual_entity",
    "concept_verb",
    "concept_noun",
)
EMBEDDING_SCORES = SCORE_NAMES[:5]
CONCEPT_SCORES = SCORE_NAMES[5:]

# Spec section 4: (mean of the 5 embedding scores + mean of the 2 Jaccard scores) / 2.
SPEC_FUSION: tuple[float, ...] = (0.1, 0.1, 0.1, 0.1, 0.1, 0.25, 0.25)
# Spec section 7: until the heads are trained, only the global (CLIP) score counts.
GLOBAL_ONLY_FUSION: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

# Role types of the sentence graph (spec section 3.2), plus the root.
ROLES: tuple[str, ...] = (
    "ROOT",
    "V",
    "ARG0",
    "ARG1",
    "ARG2",
    "ARG3",
    "ARG4",
    "ARGM-LOC",
    "ARGM-MNR",
    "ARGM-TMP",
    "ARGM-DIR",
    "ARGM-ADV",
    "ARGM-PRP",
    "ARGM-PRD",
    "ARGM-COM",
    "ARGM-MOD",
    "NOUN",
)


# Where the temporal convolution adds motion (see HANetCfg.motion_levels).
MOTION_LEVELS: tuple[str, ...] = ("action", "all")
# Edges of the sentence graph (see HANetCfg.text_graph).
TEXT_GRAPHS: tuple[str, ...] = ("reference", "extended")
# Fields that checkpoints written before the field existed lack, with the value that rebuilds
# the model they were trained as (the dataclass default is what new models get).
LEGACY_DEFAULTS: dict[str, Any] = {"text_graph": "extended"}


class ConfigError(ValueError):
    """An architecture config that cannot be built (unknown name, bad or unknown keys)."""


@dataclass(frozen=True)
class PreprocessCfg:
    """What the image tower expects: square RGB frames of ``image_size``, normalised."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class HANetCfg:
    """One HANet architecture. ``clip`` is an open_clip model config (the dict open_clip's own
    JSON configs hold: embed_dim, vision_cfg, text_cfg), so a checkpoint rebuilds its backbone
    without any registry."""

    name: str
    clip_arch: str  # open_clip architecture name, or a project name for custom configs
    clip: dict[str, Any] = field(hash=False)
    embed_dim: int  # joint space D of the HANet heads
    max_frames: int = 12
    max_words: int = 32  # text context length in CLIP tokens, SOT and EOT included
    num_verbs: int = 512  # Kv, verb concept vocabulary size
    num_nouns: int = 1024  # Kn, noun concept vocabulary size
    num_action_segments: int = 10
    num_entity_segments: int = 20
    action_window: int = 5  # frames averaged around a verb concept's peak
    entity_frames: int = 3  # most probable frames averaged per noun concept
    topk_divisor: int = 8  # k = ceil(valid_len / topk_divisor) in concept pooling
    se_reduction: int = 16
    # Adaptation: a residual temporal convolution (0 disables it). The reference fed its
    # levels motion features (I3D on VATEX); per-frame CLIP features carry no motion, so it is
    # given back here, zero-initialised so that the zero-shot start is unchanged.
    # ``motion_levels`` "action": on the action level only (the default; the event and entity
    # levels stay frame-wise, as specified); "all": on the frame features that all three level
    # projections read, as I3D features fed all three (then the global vector can tell a video
    # from its reverse).
    motion_kernel: int = 3
    motion_levels: str = "action"
    # Adaptation, not in the reference: ``keypoints`` K > 0 gives the temporal convolution, beside
    # each frame's features, the (x, y) of K soft-argmax keypoints over the image tower's patch
    # tokens (a spatial soft-argmax: a learnt map per keypoint, softmax over the patches, its
    # expected grid position), so that where things are, and so which way they move, is in
    # reach of the convolution. 0 (the default) leaves the frame features as they are.
    keypoints: int = 0
    # Adaptation, not in the reference: ``motion_stream`` S > 0 gives the temporal convolution,
    # beside each frame's features (and keypoints), S features of a small convolutional network
    # over the frame and its difference to the next frame: a motion stream in the place of the
    # reference's I3D features (which saw motion that per-frame CLIP features cannot). 0 (the
    # default) leaves the frame features as they are.
    motion_stream: int = 0
    max_verbs: int = 4
    max_args: int = 6
    # The sentence graph's edges. "reference": the reference code's (root -> verb, verb <-> its
    # arguments, no self-loops; an argument without a verb is isolated, and the root receives
    # nothing, so the sentence's global vector is its own). "extended": this project's first
    # graph (self-loops, root <-> verb both ways, arguments without a verb tied to the root),
    # which checkpoints written before this field was added were trained with.
    text_graph: str = "reference"
    dropout: float = 0.2
    gcn_dropout: float = 0.5
    attention_scale: float = 4.0  # softmax temperature of the cross-attention scores
    fusion: tuple[float, ...] = SPEC_FUSION
    preprocess: PreprocessCfg = PreprocessCfg(224, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    def __post_init__(self) -> None:
        if len(self.fusion) != len(SCORE_NAMES):
            raise ConfigError(f"fusion needs {len(SCORE_NAMES)} weights, got {len(self.fusion)}")
        if self.num_action_segments > self.num_verbs:
            raise ConfigError("num_action_segments cannot exceed num_verbs")
        if self.num_entity_segments > self.num_nouns:
            raise ConfigError("num_entity_segments cannot exceed num_nouns")
        if self.action_window % 2 != 1:
            raise ConfigError("action_window must be odd (a window centred on the peak frame)")
        if self.motion_kernel and self.motion_kernel % 2 != 1:
            raise ConfigError("motion_kernel must be 0 (off) or odd")
        if self.motion_levels not in MOTION_LEVELS:
            raise ConfigError(
                f"motion_levels must be one of {MOTION_LEVELS}, not {self.motion_levels!r}"
            )
        if self.text_graph not in TEXT_GRAPHS:
            raise ConfigError(f"text_graph must be one of {TEXT_GRAPHS}, not {self.text_graph!r}")
        if self.keypoints < 0 or (self.keypoints and not self.motion_kernel):
            raise ConfigError("keypoints must be 0 (off), or positive with a motion_kernel")
        if self.motion_stream < 0 or (self.motion_stream and not self.motion_kernel):
            raise ConfigError("motion_stream must be 0 (off), or positive with a motion_kernel")
        if self.max_words > self.clip["text_cfg"].get("context_length", 77):
            raise ConfigError("max_words exceeds the text tower's context length")
        if self.preprocess.image_size != _image_size(self.clip):
            raise ConfigError("preprocess.image_size differs from the image tower's")

    @property
    def clip_embed_dim(self) -> int:
        return int(self.clip["embed_dim"])

    @property
    def frame_extras(self) -> int:
        """Features each frame carries after the backbone's, for the temporal convolution
        only: the keypoints' (x, y), then the motion stream's."""
        return 2 * self.keypoints + self.motion_stream

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HANetCfg:
        """Strict inverse of ``to_dict``: unknown or missing required keys are errors. A key in
        ``LEGACY_DEFAULTS`` that ``data`` lacks (an older checkpoint's config) takes the value
        that model was built with, not today's default."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(unknown)}")
        values = {**LEGACY_DEFAULTS, **data}
        if "preprocess" in values:
            p = values["preprocess"]
            values["preprocess"] = PreprocessCfg(
                int(p["image_size"]), tuple(p["mean"]), tuple(p["std"])
            )
        if "fusion" in values:
            values["fusion"] = tuple(float(w) for w in values["fusion"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc

    def with_fusion(self, fusion: tuple[float, ...]) -> HANetCfg:
        return replace(self, fusion=tuple(float(w) for w in fusion))


def _image_size(clip: dict[str, Any]) -> int:
    size = clip["vision_cfg"].get("image_size", 224)
    return int(size if isinstance(size, int) else size[0])


OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# A small open_clip ViT and text transformer: fast on a CPU, for tests and the demo model.
_TINY_CLIP: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3},
}
# open_clip's own ViT-B-32 config (open_clip/model_configs/ViT-B-32.json).
_VIT_B_32_CLIP: dict[str, Any] = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
}

_NAMED: dict[str, HANetCfg] = {
    "tiny": HANetCfg(
        name="tiny",
        clip_arch="hanet-tiny",
        clip=_TINY_CLIP,
        embed_dim=128,
        max_frames=8,
        max_words=32,
        num_verbs=64,
        num_nouns=128,
        preprocess=PreprocessCfg(64, OPENAI_MEAN, OPENAI_STD),
    ),
    "ViT-B-32": HANetCfg(
        name="ViT-B-32",
        clip_arch="ViT-B-32",
        clip=_VIT_B_32_CLIP,
        embed_dim=512,
        max_frames=12,
        max_words=77,
        preprocess=PreprocessCfg(224, OPENAI_MEAN, OPENAI_STD),
    ),
}


def list_configs() -> list[str]:
    return sorted(_NAMED)


def get_config(name: str) -> HANetCfg:
    """The named architecture (a copy: callers may not mutate the registry's dicts)."""
    try:
        return copy.deepcopy(_NAMED[name])
    except KeyError:
        raise ConfigError(f"unknown architecture {name!r}; known: {list_configs()}") from None
