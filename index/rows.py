"""Rerank row formats: how a part stores its units' embedding vectors and concept probabilities.

    float16   each vector and probability as float16, 2 bytes each (every part written
              before formats existed is one)
    int8      each vector as int8 codes with one float32 scale per vector (x ~ scale * code,
              scale = max|x| / 127: <field>.npy int8 and <field>.scale.npy), 1 byte per
              dimension; probabilities as uint8 codes (p ~ code / 255)

A part's format is read from its files (``part_format``: an int8 array with a scale beside
it; uint8 probabilities), so builds mixing parts of both formats serve (``gather_decoded``:
a search's candidates' rows from whichever parts hold them). A rerank gets float16 vectors
from a float16 part (multiplied as they are) and float32 ones from an int8 part (decoding
writes a copy anyway: one pass, one multiply per gathered element, on the candidates only),
the probabilities in float32; the Gram matrices written beside the rows are those of the
decoded vectors, so ``model.similarity`` with or without them agrees. docs/capacity.md has
the measured fidelity, memory and speed of each format.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

ROW_FORMATS = ("float16", "int8")
DEFAULT_ROW_FORMAT = "float16"  # what new builds get unless asked: see docs/capacity.md
# The embedding vectors (float16, or int8 + scale) and the concept probabilities (float16, or uint8)
VECTOR_FIELDS = ("global_", "action_frames", "entity_frames", "action_segments", "entity_segments")
PROB_FIELDS = ("verb_probs", "noun_probs")
SCALE = ".scale"  # "<field>.scale": an int8 field's per-vector scales, (N, ...) float32
# A part's records (RECORDS.npy, a structured array: one record per unit holding all its fields
# but its summary's, Gram matrices included), by that name in a loaded part beside views of its
# fields; parts written before records have a file per field
RECORDS = "rows"
# A part's summaries (SUMMARY.npy, a second record per unit): its global vector and concept
# probabilities, what the candidate stage reads of many units (their exact global and concept
# scores) and the concept lists read by column at load. Records parts written before summaries
# hold the probabilities in files of their own and the global vector in the records.
SUMMARY = "summary"
SUMMARY_FIELDS = ("global_", "global_" + SCALE, *PROB_FIELDS)
STRUCTURED = (RECORDS, SUMMARY)  # a loaded part's structured arrays, beside their fields' views
# The files holding a part's summaries: SUMMARY, or an older part's files of those fields
SUMMARY_FILES = (SUMMARY, *SUMMARY_FIELDS)
PROB_LEVELS = 255


class RowFormatError(ValueError):
    """An unknown rerank row format."""


def check_format(fmt: str) -> str:
    if fmt not in ROW_FORMATS:
        raise RowFormatError(f"rerank row format must be one of {ROW_FORMATS}, not {fmt!r}")
    return fmt


def encode(name: str, array: np.ndarray, fmt: str) -> dict[str, np.ndarray]:
    """One field's rows as a part stores them, by file name (without ".npy"): the field itself
    and, for int8 vectors, its scales. Fields other than vectors and probabilities as given."""
    check_format(fmt)
    if name in VECTOR_FIELDS:
        x = np.asarray(array, np.float32)
        if fmt == "float16":
            return {name: x.astype(np.float16)}
        scale = np.abs(x).max(-1) / 127  # (N, ...) one per vector
        safe = np.where(scale > 0, scale, 1).astype(np.float32)
        codes = np.clip(np.rint(x / safe[..., None]), -127, 127).astype(np.int8)
        return {name: codes, name + SCALE: scale.astype(np.float32)}
    if name in PROB_FIELDS:
        p = np.asarray(array, np.float32)
        if fmt == "float16":
            return {name: p.astype(np.float16)}
        return {name: np.rint(np.clip(p, 0, 1) * PROB_LEVELS).astype(np.uint8)}
    return {name: np.asarray(array)}


def decode(name: str, stored: np.ndarray, scale: np.ndarray | None) -> torch.Tensor:
    """Rows as a rerank takes them: vectors as stored in float16, or decoded from int8 to
    float32 (one pass, in NumPy: a float16 result would take a second), probabilities float32,
    other fields as stored. ``stored``, ``scale``: gathered rows of the field and its scales
    (None: a float part)."""
    if name in VECTOR_FIELDS and scale is not None:
        x = np.asarray(stored).astype(np.float32)
        x *= np.asarray(scale, np.float32)[..., None]
        return torch.from_numpy(x)
    if name in PROB_FIELDS and np.asarray(stored).dtype == np.uint8:
        return torch.from_numpy(np.asarray(stored, np.float32) / np.float32(PROB_LEVELS))
    tensor = torch.from_numpy(np.ascontiguousarray(stored))
    if name in VECTOR_FIELDS:
        return tensor if tensor.dtype == torch.float16 else tensor.half()
    if name in PROB_FIELDS:
        return tensor.float()
    return tensor


def part_format(part: dict[str, np.ndarray]) -> str:
    """A loaded part's row format, from its files (by name, without ".npy")."""
    return "int8" if "global_" + SCALE in part else "float16"


Parts = list[dict[str, np.ndarray]]  # a build's loaded parts: per part, its arrays by file name


def gather(parts: Parts, name: str, where: np.ndarray) -> np.ndarray:
    """Rows of one stored array at (part, row) pairs (``where``, (N, 2)), as stored: one
    gather per part, not per row."""
    used = np.unique(where[:, 0]).tolist()
    if len(used) == 1:  # the usual case (one part after compaction): no second copy
        return np.asarray(parts[used[0]][name][where[:, 1]])
    first = next(part[name] for part in parts if name in part)
    out = np.empty((len(where), *first.shape[1:]), dtype=first.dtype)
    for part in used:
        chosen = where[:, 0] == part
        out[chosen] = parts[part][name][where[chosen, 1]]
    return out


def gather_decoded(parts: Parts, name: str, where: np.ndarray) -> torch.Tensor:
    """One field's rows at (part, row) pairs as a rerank takes them (``decode``: each part in
    its own row format), one gather per part; float32 when float16 and int8 parts mix."""
    used = np.unique(where[:, 0]).tolist() or [0]
    if len(used) == 1:  # the usual case (one part after compaction): no second copy
        return _decode_part(parts[used[0]], name, where[:, 1])
    got = {p: _decode_part(parts[p], name, where[where[:, 0] == p, 1]) for p in used}
    dtype = functools.reduce(torch.promote_types, [g.dtype for g in got.values()])
    out = torch.empty((len(where), *got[used[0]].shape[1:]), dtype=dtype)
    for part, rows in got.items():  # float16 and int8 parts: float32
        out[torch.from_numpy(where[:, 0] == part)] = rows.to(dtype)
    return out


def _decode_part(part: dict[str, np.ndarray], name: str, at: np.ndarray) -> torch.Tensor:
    scales = part.get(name + SCALE)
    return decode(name, part[name][at], None if scales is None else scales[at])


def bytes_per_unit(fmt: str, dims: dict[str, tuple[int, ...]]) -> int:
    """Bytes one unit's vectors and probabilities take in ``fmt`` (``dims``: per field, its
    shape without the unit axis): for capacity estimates."""
    total = 0
    for name, shape in dims.items():
        n = int(np.prod(shape))
        if name in VECTOR_FIELDS:
            total += n * 2 if fmt == "float16" else n + n // shape[-1] * 4
        elif name in PROB_FIELDS:
            total += n * 2 if fmt == "float16" else n
    return total
