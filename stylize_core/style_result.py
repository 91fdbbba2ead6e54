"""What every method's stylizer returns for an image (:class:`StyleResult`) and the device rule they
share (:func:`resolve_device`): the feed-forward :class:`~stylize_core.stylizer.Stylizer`, AdaIN,
Gatys optimisation and the regions renderer alike, without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class StyleResult:
    """One stylised image and its metrics (losses are NaN when metrics are off or not measured)."""

    # (H, W, 3) uint8 (float32 0..255, unrounded, for a float32 input), the input's size (times the scale
    # of a super-resolution network)
    image: np.ndarray
    content_loss: float = float("nan")
    style_loss: float = float("nan")
    tv_loss: float = float("nan")
    # feature statistics vs the style image's (losses.stats_distance): the distance, and it over the input's
    style_stat_distance: float = float("nan")
    style_stat_ratio: float = float("nan")
    stylize_ms: float = 0.0
    metrics_ms: float = 0.0
    measured: bool = False  # whether the losses were measured (metrics on and the input sampled)
    forward_images: int = 1  # images in the forward pass that produced this output
    tiles: int = 1  # tiles the image ran as (1: one pass over the whole image)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
