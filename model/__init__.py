"""HANet (Hierarchical Alignment Network, Wu et al., ACM MM 2021) on an open_clip backbone.

Pure PyTorch + open_clip: imports nothing from ``service`` or ``indexer``.
"""

from model.checkpoint import file_sha256
from model.config import (
    SCORE_NAMES,
    ConfigError,
    HANetCfg,
    PreprocessCfg,
    get_config,
    list_configs,
)
from model.embeddings import TextEmbeddings, VideoEmbeddings
from model.errors import CheckpointError, ModelError
from model.hanet import Concept, HANet, create_model, load_checkpoint
from model.preprocess import frames_to_pixels
from model.vocab import ConceptVocab

__all__ = [
    "SCORE_NAMES",
    "CheckpointError",
    "Concept",
    "ConceptVocab",
    "ConfigError",
    "HANet",
    "HANetCfg",
    "ModelError",
    "PreprocessCfg",
    "TextEmbeddings",
    "VideoEmbeddings",
    "create_model",
    "file_sha256",
    "frames_to_pixels",
    "get_config",
    "list_configs",
    "load_checkpoint",
]
