"""Masks and regions, applied to ANY method's output: decode a mask, check it fits the input, feather it,
and composite the styled image over the input (``out = input * (1 - m) + styled * m``).

Pure NumPy + Pillow (no torch): the batch job decodes and feathers masks in its CPU read tasks, which do
not import torch, and the actor only composites.

Decoding (:func:`decode_mask`):

- ``alpha`` mode, a weight per pixel in 0..1: white (1) = styled, black (0) = the input unchanged, grey =
  a blend. A greyscale image is its own weight; an RGB image is weighed by its luminance (Pillow's
  ITU-R 601 ``L``); an image with an alpha channel (RGBA, LA, a palette with transparency) uses its
  alpha when any pixel is not fully opaque (a cut-out painted in an editor), else its luminance (an
  RGBA export of a black-and-white drawing). 16-bit greys are scaled by 65535.
- ``labels`` mode, an integer per pixel: label 0 = the input unchanged, label k = the k-th style. A
  palette image's index is the label; a grey image's value is; an RGB(A) image must be grey (R = G = B),
  anything else is refused (colours have no order).

A mask must have exactly the input's size (width x height, after EXIF orientation): a wrong-sized mask
is a :class:`MaskError`, never silently resized. (Programs that shrink inputs with ``--max-side``
shrink the mask the same way after the check: :func:`fit_mask`.)

Feathering (:func:`feather`): a Gaussian blur with sigma = PX / 3, edges replicated. At a distance of
PX pixels or more from a straight edge the weight is within 0.14 % of 0 or 1 (the Gaussian's tail
beyond 3 sigma), i.e. under 0.35 grey levels on the largest possible difference: PX is the feather
band's half-width. PX = 0 leaves the mask as it is.

Compositing (:func:`composite`, :func:`composite_labels`) runs in float32 and rounds half up to uint8
once, at the end (``floor(x + 0.5)``), so a weight of exactly 0 or 1 returns the input or the styled
pixel bit for bit. Label masks blend the per-style outputs with one-hot weights, feathered one label at
a time; the feathered weights still sum to one, since the blur is linear.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MODES = ("alpha", "labels")
MAX_MASK_PIXELS = 64_000_000  # as image_io's default: a mask is a decompression bomb like any image


class MaskError(ValueError):
    """A mask that cannot be used: unreadable, the wrong size, or labels that name no style."""

    error_type = "mask_error"


def decode_mask(data: bytes, mode: str = "alpha", *, max_pixels: int = MAX_MASK_PIXELS) -> np.ndarray:
    """Mask file bytes -> (H, W) float32 weights in 0..1 (``alpha``) or (H, W) int32 labels (``labels``)."""
    if mode not in MODES:
        raise ValueError(f"mask mode must be one of {MODES}, got {mode!r}")
    if not data:
        raise MaskError("the mask file is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(bytes(data)))
        if img.size[0] * img.size[1] > max_pixels:
            raise MaskError(f"the mask has {img.size[0]}x{img.size[1]} pixels, more than the limit of {max_pixels}")
        img.load()
        img = ImageOps.exif_transpose(img)  # oriented as image_io orients the input
    except MaskError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise MaskError(f"the mask is not a readable image ({type(exc).__name__}: {exc})") from None
    with img:
        return _labels(img) if mode == "labels" else _weights(img)


def _weights(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        top = 65535.0 if img.mode.startswith("I;16") or np.asarray(img).max() > 255 else 255.0
        return np.clip(np.asarray(img, dtype=np.float32) / top, 0, 1)
    if img.mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0, 1)
    if img.mode == "P" and "transparency" in img.info or img.mode in ("PA", "LA", "RGBA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"))
        if alpha.min() < 255:
            return alpha.astype(np.float32) / 255
        img = rgba
    return np.asarray(img.convert("L"), dtype=np.float32) / 255


def _labels(img: Image.Image) -> np.ndarray:
    if img.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
        return np.asarray(img).astype(np.int32)
    if img.mode == "1":
        return np.asarray(img).astype(np.int32)
    rgb = np.asarray(img.convert("RGB"))
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
        raise MaskError(f"a label mask must be greyscale or a palette image (value k = style k); this {img.mode} "
                        "image has colours")
    return rgb[..., 0].astype(np.int32)


def check_size(mask: np.ndarray, height: int, width: int) -> None:
    """MaskError unless ``mask`` is ``height`` x ``width`` (the input's size, before any --max-side)."""
    h, w = mask.shape[:2]
    if (h, w) != (height, width):
        raise MaskError(f"the mask is {w}x{h} but the input is {width}x{height}; masks are not resized, "
                        "make one the input's size")


def fit_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A mask already checked against the input file, brought to the size the input was decoded at
    (``--max-side``): weights by area averaging, labels by nearest neighbour."""
    if mask.shape[:2] == (height, width):
        return mask
    if mask.dtype == np.int32:
        return np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST)).astype(np.int32)
    weights = Image.fromarray(np.ascontiguousarray(mask, dtype=np.float32))  # mode F
    return np.asarray(weights.resize((width, height), Image.Resampling.BOX))


def _kernel(px: float) -> np.ndarray:
    sigma = px / 3.0
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def feather(mask: np.ndarray, px: float) -> np.ndarray:
    """(H, W) weights -> the same blurred by a Gaussian with sigma = px / 3 (edges replicated); px 0: a copy."""
    if px < 0:
        raise ValueError(f"feather must be >= 0 pixels, got {px}")
    m = np.asarray(mask, dtype=np.float32)
    if px == 0:
        return m.copy()
    k = _kernel(px)
    r = len(k) // 2
    for axis in (0, 1):  # separable: rows then columns, one shifted slice per tap
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        padded = np.pad(m, pad, mode="edge")
        out = np.zeros_like(m)
        n = m.shape[axis]
        for t, weight in enumerate(k):
            out += weight * (padded[t : t + n] if axis == 0 else padded[:, t : t + n])
        m = out
    return np.clip(m, 0, 1)


def _round_u8(x: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(x, 0, 255) + 0.5).astype(np.uint8)


def composite(image: np.ndarray, styled: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``image * (1 - w) + styled * w`` per pixel: (H, W, 3) uint8 twice and (H, W) weights in 0..1 ->
    (H, W, 3) uint8, computed in float and rounded once."""
    if image.shape != styled.shape:
        raise MaskError(f"the styled output is {styled.shape[1]}x{styled.shape[0]} but the input is "
                        f"{image.shape[1]}x{image.shape[0]}; masks apply to same-size outputs only")
    check_size(weights, image.shape[0], image.shape[1])
    w = np.asarray(weights, dtype=np.float32)[..., None]  # (H, W, 1)
    x = np.asarray(image, dtype=np.float32)
    return _round_u8(x + (np.asarray(styled, dtype=np.float32) - x) * w)


def check_labels(labels: np.ndarray, styles: int) -> None:
    """MaskError when a label names no style (0: the input, 1..styles: the styles, in the run's order)."""
    top = int(labels.max(initial=0))
    if int(labels.min(initial=0)) < 0 or top > styles:
        raise MaskError(f"the label mask has values up to {top} but there are {styles} style(s): label k is the "
                        f"k-th style, 0 the input unchanged")


def label_weights(labels: np.ndarray, styles: int, px: float = 0) -> np.ndarray:
    """(H, W) labels -> (styles + 1, H, W) one-hot weights (0: the input, k: style k), each feathered by ``px``."""
    check_labels(labels, styles)
    return np.stack([feather(labels == k, px) for k in range(styles + 1)])


def composite_labels(image: np.ndarray, outputs: Sequence[np.ndarray], labels: np.ndarray, px: float = 0
                     ) -> np.ndarray:
    """Several styles in one image: ``outputs[k - 1]`` where the label is k, the input where it is 0, the
    feathered one-hot weights blending them across each border."""
    check_size(labels, image.shape[0], image.shape[1])
    weights = label_weights(labels, len(outputs), px)
    acc = np.asarray(image, dtype=np.float32) * weights[0][..., None]
    for k, styled in enumerate(outputs, start=1):
        if styled.shape != image.shape:
            raise MaskError(f"style {k}'s output is {styled.shape[1]}x{styled.shape[0]} but the input is "
                            f"{image.shape[1]}x{image.shape[0]}; masks apply to same-size outputs only")
        acc += np.asarray(styled, dtype=np.float32) * weights[k][..., None]
    return _round_u8(acc)


def region_weights(mask: np.ndarray, mode: str, px: float, style_index: int, styles: int) -> np.ndarray:
    """The weights of one style's output where a program writes one file per style: ``alpha``: the
    feathered mask (every style alike); ``labels``: the feathered region of label ``style_index + 1``."""
    if mode == "alpha":
        return feather(mask, px)
    check_labels(mask, styles)
    return feather(mask == style_index + 1, px)
