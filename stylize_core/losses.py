"""Perceptual losses as pure functions (pystiche's habit), plus cached style targets.

All losses take ``reduction="mean"`` (a scalar, for optimisation) or ``"none"`` (one value per
image, shape (B,), for per-image metrics). The feature-statistics distance (:func:`feature_stats`,
:func:`stats_distance`) is defined here once for the metrics, the AdaIN demo and its benchmark.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

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


STATS_EPS = 1e-5  # pytorch-AdaIN's calc_mean_std default

Stats = tuple[torch.Tensor, torch.Tensor]  # per-channel (mean, std) of a layer, each (B, C)


def channel_mean_std(features: torch.Tensor, eps: float = STATS_EPS) -> Stats:
    """Per-channel mean and std over H*W of (B, C, H, W) features, each (B, C) float32; the std is
    sqrt(unbiased variance + eps), as pytorch-AdaIN's ``calc_mean_std`` (stylize_core.adain uses this),
    except that a 1x1 map (a tiny image's deep layer) has variance 0, not NaN."""
    b, c = features.shape[:2]
    flat = features.reshape(b, c, -1).float()
    return flat.mean(dim=2), (flat.var(dim=2, correction=int(flat.shape[2] > 1)) + eps).sqrt()


def feature_stats(layers: Sequence[torch.Tensor]) -> list[Stats]:
    """Per layer, per-channel (mean, std) over H*W of (B, C, H, W) features, each (B, C)."""
    return [channel_mean_std(f) for f in layers]


def stats_distance(a: Sequence[Stats], b: Sequence[Stats]) -> torch.Tensor:
    """Sum over layers of the RMS difference of the channel means plus that of the stds, (B,).

    The statistics distance of the metrics (``style_stat_distance``: output vs style image, and
    ``style_stat_ratio``: that over content vs style) and of the AdaIN demo's benchmark. Either side
    may be (1, C) per layer (one style for a batch): it broadcasts.
    """
    total: torch.Tensor | None = None
    for (ma, sa), (mb, sb) in zip(a, b, strict=True):
        term = (ma.float() - mb.float()).pow(2).mean(1).sqrt() + (sa.float() - sb.float()).pow(2).mean(1).sqrt()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("stats_distance needs at least one layer")
    return total


def image_to_tensor(image: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in 0..255."""
    t = torch.from_numpy(np.ascontiguousarray(image)).to(device=device)
    return t.permute(2, 0, 1).unsqueeze(0).float()


@dataclass
class StyleTargets:
    """A style's metric targets in the loss network, per layer: Gram matrices (1, C, C) and the
    per-channel mean and std (1, C) of its features (empty when not known: no statistics distance)."""

    grams: dict[str, torch.Tensor]
    means: dict[str, torch.Tensor] = field(default_factory=dict)
    stds: dict[str, torch.Tensor] = field(default_factory=dict)

    def stats(self, layers: Sequence[str]) -> list[Stats] | None:
        """[(mean, std) per layer of ``layers``], or None when some layer's statistics are missing."""
        if not all(layer in self.means and layer in self.stds for layer in layers):
            return None
        return [(self.means[layer], self.stds[layer]) for layer in layers]


@torch.no_grad()
def style_targets(
    extractor: FeatureExtractor,
    style: torch.Tensor,
    layers: Sequence[str],
    scales: Sequence[float] = (1.0,),
) -> StyleTargets:
    """Gram targets {layer: (1, C, C)} and channel mean/std {layer: (1, C)} of a (1, 3, H, W) 0..255
    style image, from the same extractor pass.

    With several ``scales`` the style image is resized by each factor and the Gram matrices (and
    statistics) are averaged, so one target captures the style's texture at several sizes.
    """
    sums: dict[str, list[torch.Tensor]] = {}
    for scale in scales:
        img = style
        if scale != 1.0:
            size = [max(16, round(s * scale)) for s in style.shape[-2:]]
            img = F.interpolate(style, size=size, mode="bilinear", align_corners=False, antialias=scale < 1.0)
        feats = extractor(img)
        for layer in layers:
            parts = [gram_matrix(feats[layer]), *channel_mean_std(feats[layer])]
            sums[layer] = parts if layer not in sums else [a + b for a, b in zip(sums[layer], parts)]
    n = len(scales)
    return StyleTargets({k: v[0] / n for k, v in sums.items()}, {k: v[1] / n for k, v in sums.items()},
                        {k: v[2] / n for k, v in sums.items()})


@torch.no_grad()
def style_grams(
    extractor: FeatureExtractor,
    style: torch.Tensor,
    layers: Sequence[str],
    scales: Sequence[float] = (1.0,),
) -> dict[str, torch.Tensor]:
    """Gram targets {layer: (1, C, C)} of a (1, 3, H, W) 0..255 style image (:func:`style_targets`'
    Grams: with several ``scales``, averaged over the resized images)."""
    return style_targets(extractor, style, layers, scales).grams


class StyleTargetCache:
    """Style targets (Grams and channel statistics) computed once per (style image, loss model, layers, scales)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, StyleTargets] = {}

    def get_targets(
        self,
        extractor: FeatureExtractor,
        style_image: np.ndarray,
        layers: Sequence[str],
        scales: Sequence[float] = (1.0,),
        loss_model: str = "",
        device: torch.device | str | None = None,
    ) -> StyleTargets:
        """:func:`style_targets` of an (H, W, 3) uint8 style image, from the cache when already computed."""
        digest = hashlib.sha256(np.ascontiguousarray(style_image).tobytes()).hexdigest()
        key = (digest, style_image.shape, loss_model, tuple(layers), tuple(scales), str(device))
        if key not in self._cache:
            self._cache[key] = style_targets(extractor, image_to_tensor(style_image, device), layers, scales)
        return self._cache[key]

    def __len__(self) -> int:
        return len(self._cache)


def _encoded_targets(target: GramTarget, layers: Sequence[str], device) -> StyleTargets:
    """A :class:`GramTarget` (numpy, computed before) as tensors on ``device``."""
    def tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {layer: torch.from_numpy(np.asarray(arrays[layer])).to(device) for layer in layers if layer in arrays}

    return StyleTargets(tensors(target.grams), tensors(target.means), tensors(target.stds))


@torch.no_grad()
def blended_style_targets(extractor: FeatureExtractor, styles: Sequence[torch.Tensor | np.ndarray | GramTarget],
                          weights: Sequence[float], layers: Sequence[str], scales: Sequence[float] = (1.0,),
                          device: torch.device | str | None = None) -> StyleTargets:
    """:func:`blended_style_grams`, with the channel means and stds mixed by the same weights (the
    blend's statistics targets; missing where any weighted style lacks them)."""
    if len(styles) != len(weights):
        raise ValueError(f"{len(styles)} style images for {len(weights)} weights")
    total = float(sum(weights))
    if not np.isfinite(total) or total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"style weights must be >= 0 with a positive sum, not {list(weights)}")
    out = StyleTargets({}, {}, {})
    stats_known = True
    for style, weight in zip(styles, weights):
        if weight == 0:
            continue
        if isinstance(style, GramTarget):
            one = _encoded_targets(style, layers, device)
        else:
            image = image_to_tensor(style, device) if isinstance(style, np.ndarray) else style.to(device)
            one = style_targets(extractor, image, layers, scales)
        stats_known = stats_known and one.stats(layers) is not None
        for mine, theirs in ((out.grams, one.grams), (out.means, one.means), (out.stds, one.stds)):
            for layer, value in theirs.items():
                term = value * (weight / total)  # (1, C, C) or (1, C)
                mine[layer] = term if layer not in mine else mine[layer] + term
    if not stats_known:
        out.means.clear()
        out.stds.clear()
    return out


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
    :func:`blended_style_targets` mixes the channel statistics too.
    """
    return blended_style_targets(extractor, styles, weights, layers, scales, device).grams
