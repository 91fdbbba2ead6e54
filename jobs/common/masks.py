"""Where an input's mask is and how a program reads it, shared by the programs that take masks (the
batch job and, through it, the nightly catalog; the video job). The pixel rules (decoding, size check,
feathering, compositing) are :mod:`stylize_core.masks`; docs/operations/masks.md describes both.

Pillow + NumPy only (no torch): the batch job reads masks in its CPU read tasks.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from stylize_core.masks import MaskError, check_size, decode_mask, fit_mask, region_weights

from jobs.common.storage import StorageOptions, join_uri, read_bytes, redact

MASK_ERROR = "mask_error"
MASK_ONE = 65535  # mask weights travel as uint16: half the bytes of float32, steps of 1/65535 (0.004 grey levels)


class MaskReading(Protocol):
    """What :func:`read_mask` takes from a program's settings."""

    storage_options: StorageOptions | None
    mask_prefix: str | None
    mask_mode: str
    mask_feather: float
    max_pixels: int

    @property
    def label_count(self) -> int: ...


def mask_rel_path(rel_path: str) -> str:
    """Where an input's mask is under ``--mask-prefix``: its relative path, extension replaced by ``.png``."""
    stem = rel_path.rsplit(".", 1)[0] if "." in rel_path.rsplit("/", 1)[-1] else rel_path
    return stem + ".png"


def mask_uri_for(settings: MaskReading, rel_path: str, given: str = "") -> str:
    """The input's mask: ``given`` (a manifest's ``mask_uri``) where given, else ``{--mask-prefix}/{rel_path
    minus its extension}.png``; "" for none."""
    if given or not settings.mask_prefix:
        return given
    return join_uri(settings.mask_prefix, mask_rel_path(rel_path))


def read_mask(uri: str, settings: MaskReading, size: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """The mask at ``uri`` checked against the input file's (height, width) ``size``, brought to the decoded
    ``shape`` and feathered: (S, H, W) uint16 weights (:data:`MASK_ONE` = 1), S = 1 (alpha: every style
    alike) or one per label 1..S (labels: plane k-1 is style k's region; S is ``settings.label_count``).
    MaskError naming the mask when it is missing, unreadable or wrong-sized."""
    what = f"mask {redact(uri)}"
    try:
        mask = decode_mask(read_bytes(uri, settings.storage_options), settings.mask_mode, max_pixels=settings.max_pixels)
        check_size(mask, *size)
        mask = fit_mask(mask, *shape)
        labels = settings.label_count
        picks = range(1) if settings.mask_mode == "alpha" else range(labels)
        weights = [region_weights(mask, settings.mask_mode, settings.mask_feather, k, labels) for k in picks]
    except FileNotFoundError:
        raise MaskError(f"{what}: not found") from None
    except MaskError as exc:
        raise MaskError(f"{what}: {exc}") from None
    except Exception as exc:  # storage/network/permission
        raise MaskError(f"{what}: cannot be read ({type(exc).__name__}: {exc})") from None
    return np.stack([np.floor(w * MASK_ONE + 0.5).astype(np.uint16) for w in weights])
