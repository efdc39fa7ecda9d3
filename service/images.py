"""Uploaded images for search by image: bytes -> RGB pixels, or a clear refusal."""

from __future__ import annotations

import io

import numpy as np

MAX_IMAGE_BYTES = 20_000_000
MAX_IMAGE_PIXELS = 40_000_000  # width x height, read from the header before decoding


class NotAnImage(ValueError):
    """Bytes that are not an image Pillow can decode, or one with too many pixels."""


def decode_image(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB. Raises NotAnImage."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise NotAnImage("the file is empty: no image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise NotAnImage(
                    f"the image has {image.width} x {image.height} pixels, more than "
                    f"{MAX_IMAGE_PIXELS:,}"
                )
            rgb = np.array(image.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise NotAnImage(f"not an image this server can read ({type(exc).__name__})") from exc
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 1:
        raise NotAnImage("the image has no pixels")
    return rgb
