"""How large an image becomes and its resampling: ``--max-side``'s size rule (the size a decode
gives, from a header alone too) and Lanczos resizes to a longest or shortest side. Split from
:mod:`stylize_core.image_io`, whose decoder applies the rule; :func:`resize_max_side` and
:func:`resize_short_side` stay importable from there (the documented Python API).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def decoded_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """The (height, width) an image of this (oriented) size decodes to under ``max_side``."""
    target = max_side_size(width, height, max_side)
    return (height, width) if target is None else (target[1], target[0])


def resize_max_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale (never upscale) so max(H, W) <= max_side, keeping aspect; None/0 -> unchanged.

    Uses Lanczos (``Image.Resampling.LANCZOS``). The input array is returned as is when no resize
    is needed.
    """
    check_rgb_array(image)
    if not max_side:
        return image
    if max_side < 0:
        raise ValueError(f"max_side must be positive, None or 0, got {max_side}")
    height, width = image.shape[:2]
    size = max_side_size(width, height, max_side)
    return image if size is None else resize_lanczos(image, *size)


def max_side_size(width: int, height: int, max_side: int | None) -> tuple[int, int] | None:
    """(width, height) that :func:`resize_max_side` gives, or None when it leaves the image as is."""
    longest = max(height, width)
    if not max_side or longest <= max_side:
        return None
    scale = max_side / longest
    # The long side lands exactly on max_side; the short side rounds but never vanishes.
    new_w = max_side if width == longest else max(1, round(width * scale))
    new_h = max_side if height == longest else max(1, round(height * scale))
    return new_w, new_h


def resize_short_side(image: np.ndarray, short_side: int) -> np.ndarray:
    """Resize (up or down) so min(H, W) == short_side, keeping aspect (Lanczos)."""
    check_rgb_array(image)
    if short_side <= 0:
        raise ValueError(f"short_side must be positive, got {short_side}")
    height, width = image.shape[:2]
    shortest = min(height, width)
    if shortest == short_side:
        return image
    scale = short_side / shortest
    new_w = short_side if width == shortest else max(1, round(width * scale))
    new_h = short_side if height == shortest else max(1, round(height * scale))
    return resize_lanczos(image, new_w, new_h)


def resize_lanczos(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8, Lanczos (Pillow)."""
    pil = Image.fromarray(np.ascontiguousarray(image))
    out = pil.resize((width, height), Image.Resampling.LANCZOS)
    return np.array(out, dtype=np.uint8)  # (height, width, 3), writeable copy


def check_rgb_array(image: np.ndarray) -> None:
    """ValueError unless ``image`` is a non-empty (H, W, 3) uint8 array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected shape (H, W, 3), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image has a zero dimension: shape {image.shape}")
