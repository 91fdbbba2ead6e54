"""Perceptual losses as pure functions (pystiche's habit), plus cached style targets.

All losses take ``reduction="mean"`` (a scalar, for optimisation) or ``"none"`` (one value per
image, shape (B,), for per-image metrics).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .style_encoding import GramTarget

FeatureExtractor = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_image
    if reduction == "mean":
        return per_image.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', not {reduction!r}")


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix F·Fᵀ / (C·H·W) of (B, C, H, W) features -> (B, C, C).

    Normalised by C·H·W as pytorch/examples ``fast_neural_style`` does, so style weights carry over
    from that code and the value does not grow with image size. Always computed in float32: bf16
    sums over H·W lose too much precision.
    """
    b, c, h, w = features.shape
    if c > 1 and not features.is_contiguous() and features.is_contiguous(memory_format=torch.channels_last):
        f = features.permute(0, 2, 3, 1).reshape(b, h * w, c).float()  # (B, N, C): a view of NHWC memory
        return torch.bmm(f.transpose(1, 2), f) / (c * h * w)  # (B, C, C)
    f = features.reshape(b, c, h * w).float()  # (B, C, N)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)  # (B, C, C)


def content_loss(features: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Feature reconstruction loss: mean squared error between (B, C, H, W) feature maps."""
    diff = features.float() - target.float()
    return _reduce(diff.pow(2).flatten(1).mean(1), reduction)


def style_loss(
    features: Mapping[str, torch.Tensor],
    target_grams: Mapping[str, torch.Tensor],
    layer_weights: Mapping[str, float] | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Weighted sum over layers of the MSE between Gram matrices.

    ``target_grams[layer]`` is (1, C, C) (one style for the batch) or (B, C, C).
    """
    total: torch.Tensor | None = None
    for layer, target in target_grams.items():
        weight = 1.0 if layer_weights is None else float(layer_weights.get(layer, 1.0))
        gram = gram_matrix(features[layer])  # (B, C, C)
        term = weight * (gram - target.to(gram)).pow(2).flatten(1).mean(1)  # (B,)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("style_loss needs at least one target layer")
    return _reduce(total, reduction)


def tv_loss(images: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Total variation: mean absolute difference between neighbouring pixels of (B, C, H, W)
    images, in the images' own units (0..255 here), summed over the two directions."""
    x = images.float()
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1) if x.shape[2] > 1 else x.new_zeros(x.shape[0])
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1) if x.shape[3] > 1 else x.new_zeros(x.shape[0])
    return _reduce(dh + dw, reduction)


def image_to_tensor(image: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in 0..255."""
    t = torch.from_numpy(np.ascontiguousarray(image)).to(device=device)
    return t.permute(2, 0, 1).unsqueeze(0).float()


@torch.no_grad()
def style_grams(
    extractor: FeatureExtractor,
    style: torch.Tensor,
    layers: Sequence[str],
    scales: Sequence[float] = (1.0,),
) -> dict[str, torch.Tensor]:
    """Gram targets {layer: (1, C, C)} of a (1, 3, H, W) 0..255 style image.

    With several ``scales`` the style image is resized by each factor and the Gram matrices are
    averaged, so one target captures the style's texture at several sizes.
    """
    sums: dict[str, torch.Tensor] = {}
    for scale in scales:
        img = style
        if scale != 1.0:
            size = [max(16, round(s * scale)) for s in style.shape[-2:]]
            img = F.interpolate(style, size=size, mode="bilinear", align_corners=False, antialias=scale < 1.0)
        feats = extractor(img)
        for layer in layers:
            g = gram_matrix(feats[layer])
            sums[layer] = g if layer not in sums else sums[layer] + g
    return {layer: g / len(scales) for layer, g in sums.items()}


class StyleTargetCache:
    """Style Gram targets computed once per (style image, loss model, layers, scales)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, dict[str, torch.Tensor]] = {}

    def get(
        self,
        extractor: FeatureExtractor,
        style_image: np.ndarray,
        layers: Sequence[str],
        scales: Sequence[float] = (1.0,),
        loss_model: str = "",
        device: torch.device | str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Grams for an (H, W, 3) uint8 style image, from the cache when already computed."""
        digest = hashlib.sha256(np.ascontiguousarray(style_image).tobytes()).hexdigest()
        key = (digest, style_image.shape, loss_model, tuple(layers), tuple(scales), str(device))
        if key not in self._cache:
            self._cache[key] = style_grams(extractor, image_to_tensor(style_image, device), layers, scales)
        return self._cache[key]

    def __len__(self) -> int:
        return len(self._cache)


@torch.no_grad()
def blended_style_grams(
    extractor: FeatureExtractor,
    styles: Sequence[torch.Tensor | np.ndarray | GramTarget],
    weights: Sequence[float],
    layers: Sequence[str],
    scales: Sequence[float] = (1.0,),
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Style-loss targets of a blend of styles: ``{layer: sum_k w_k * G_k[layer]}``, (1, C, C).

    ``styles`` are the blend's style images, each (1, 3, H, W) float 0..255 or (H, W, 3) uint8, at
    their own sizes; ``G_k`` is :func:`style_grams` of image k; ``weights`` (one per image, >= 0) are
    normalised to sum to one. So the target of a blend is the same convex mix of the styles' Gram
    matrices as the network's mix of norm parameters, and a one-hot weight gives exactly that style's
    own target. (It is not the Gram matrix of a blended image: mixing pixels would average colours,
    not textures.) Images with weight 0 are not run through the extractor; a :class:`GramTarget` (a style
    image's targets computed before, :mod:`stylize_core.style_encoding`) is not run through it either.
    """
    if len(styles) != len(weights):
        raise ValueError(f"{len(styles)} style images for {len(weights)} weights")
    total = float(sum(weights))
    if not np.isfinite(total) or total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"style weights must be >= 0 with a positive sum, not {list(weights)}")
    out: dict[str, torch.Tensor] = {}
    for style, weight in zip(styles, weights):
        if weight == 0:
            continue
        if isinstance(style, GramTarget):
            grams = {layer: torch.from_numpy(np.asarray(style.grams[layer])).to(device) for layer in layers}
        else:
            image = image_to_tensor(style, device) if isinstance(style, np.ndarray) else style.to(device)
            grams = style_grams(extractor, image, layers, scales)
        for layer, gram in grams.items():
            term = gram * (weight / total)  # (1, C, C)
            out[layer] = term if layer not in out else out[layer] + term
    return out
