"""Several styles in one image by a label mask, the region-aware way: AdaIN with per-region statistics.

Region weights are what :func:`stylize_core.masks.label_weights` gives: ``(K + 1, H, W)`` planes, plane
0 the input (label 0), plane k style k, each in 0..1 (feathered or not), summing to one per pixel.
``K`` planes alone are accepted too (the input's plane is then ``1 - sum``).

**Label 0 is composited, not stylised.** No decoder reproduces its input exactly (the demo AdaIN
decoder is off by tens of grey levels), so "label 0 = the input unchanged" is met by compositing the
decoded image over the input with plane 0's weight (:func:`composite_keep`), as every masked output is
(``out = input x w0 + styled x (1 - w0)``, rounded once). Inside the method, the style planes are
renormalised over the styles (:func:`style_shares`): in a feather band between region k and label 0 the
method renders pure style k and the compositing does the blending, once. Where no style has any
weight, AdaIN keeps the content features (so the decoder's receptive field near a border sees the
input's own features, not a style) and a network renders a mix of the styles the image holds there
without counting those pixels in any region's statistics; the input covers them either way.

**AdaIN by per-region statistics** (:func:`regional_adain`): the shares are area-averaged to the
relu4_1 grid (an 8 x 8 block of pixels per feature; ``ceil`` sizes as the encoder's pooling). Region
k's content mean and std are the weighted mean and the weighted, bias-corrected std of the features
(weights ``a_k``; variance ``sum a (f - mu)^2 / (V1 - V2 / V1)`` with ``V1 = sum a``, ``V2 = sum a^2``,
plus AdaIN's eps 1e-5): for weights of all ones that is exactly :func:`~stylize_core.adain.calc_mean_std`,
so a mask of one region everywhere is plain AdaIN. Each region's features are normalised with its
own content statistics and given style k's mean and std; the results are combined with the shares
(``t = sum_k a_k t_k + (1 - sum_k a_k) f``: a grid cell only partly in any region, at an edge with
label 0, keeps the rest of the content feature), ``alpha`` blends with the content features as in plain AdaIN, and the decoder
runs once. Compared with whole-image AdaIN per style then compositing, a region's look comes from its
own content (a sky region is not normalised by the statistics of the building next to it) and the
decoder runs once instead of K times.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .adain import EPS, AdaINStylizer, StyleStats, to_unit
from .color import finish


def as_planes(weights: np.ndarray | torch.Tensor, styles: int) -> torch.Tensor:
    """Region weights as a float32 (K + 1, H, W) tensor (plane 0 the input); ``styles`` = K. K planes
    alone get plane 0 = ``1 - sum`` (clamped at 0)."""
    w = torch.as_tensor(np.asarray(weights, dtype=np.float32) if isinstance(weights, np.ndarray) else weights)
    w = w.float()
    if w.dim() != 3 or w.shape[0] not in (styles, styles + 1):
        raise ValueError(f"region weights must be ({styles} or {styles + 1}, H, W) for {styles} style(s), "
                         f"got {tuple(w.shape)}")
    if w.shape[0] == styles:
        w = torch.cat([(1 - w.sum(0, keepdim=True)).clamp_min(0), w])
    return w


def style_shares(planes: torch.Tensor, fill: str = "uniform") -> torch.Tensor:
    """(K + 1, H, W) region weights -> (K, H, W) weights of the styles alone, summing to one per pixel
    where any style has weight; elsewhere (the input covers those pixels) ``fill``: ``uniform`` (1/K
    each: a network needs some norm parameters everywhere), ``present`` (the same over the styles the
    image holds) or ``zero``."""
    styled = planes[1:]
    total = styled.sum(0, keepdim=True)
    if fill == "zero":
        empty = torch.zeros_like(styled)
    elif fill == "present" and bool(styled.any()):
        held = styled.flatten(1).any(1).to(styled.dtype)  # (K,)
        empty = (held / held.sum())[:, None, None].expand_as(styled)
    else:
        empty = torch.full_like(styled, 1.0 / styled.shape[0])
    return torch.where(total > 0, styled / total.clamp_min(1e-12), empty)


def to_grid(weights: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(K, H, W) weights area-averaged to (K, h, w), a network layer's grid."""
    if tuple(weights.shape[-2:]) == tuple(size):
        return weights
    return F.adaptive_avg_pool2d(weights[None], size)[0]


def weighted_mean_std(feat: torch.Tensor, weights: torch.Tensor, eps: float = EPS
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per region and channel, the weighted mean and bias-corrected std of (1, C, h, w) features under
    (K, h, w) weights: (K, C, 1, 1) each, and the regions' masses (K,). A region of no mass gets mean 0,
    std sqrt(eps); with all-one weights this is :func:`~stylize_core.adain.calc_mean_std`."""
    f = feat[0].flatten(1).float()  # (C, N)
    a = weights.flatten(1).to(f)  # (K, N)
    v1 = a.sum(1)  # (K,)
    v2 = a.pow(2).sum(1)
    mean = (a @ f.T) / v1.clamp_min(1e-12)[:, None]  # (K, C)
    # sum a (f - mu)^2, one region at a time (centred, not E[f^2] - mu^2: float32 cancels there)
    var_sum = torch.stack([(f - mean[k][:, None]).pow(2) @ a[k] for k in range(a.shape[0])])  # (K, C)
    denom = (v1 - v2 / v1.clamp_min(1e-12)).clamp_min(1e-12)  # V1 - V2/V1: n - 1 for unit weights
    var = torch.where(denom[:, None] > 1e-6, var_sum / denom[:, None], torch.zeros_like(var_sum)).clamp_min(0)
    return mean[..., None, None], (var + eps).sqrt()[..., None, None], v1


class RegionStats:
    """:func:`weighted_mean_std` summed over tiles (stylize_core.adain_tiles: ``add`` each tile's owned
    features, then ``result``): per region the weighted mean and bias-corrected std of the whole
    feature map, from float64 sums of ``a``, ``a^2``, ``a f`` and ``a f^2``. ``shares``: (K, h, w) on
    the whole image's feature grid."""

    def __init__(self, shares: torch.Tensor) -> None:
        self.shares = shares
        self.sums: list = [0.0, 0.0, 0.0, 0.0]  # V1 (K,), V2 (K,), sum a f (K, C), sum a f^2 (K, C)

    def add(self, core: torch.Tensor, rows: slice, cols: slice) -> None:
        a = self.shares[:, rows, cols].flatten(1).double().to(core.device)  # (K, N)
        f = core[0].flatten(1).double()  # (C, N)
        for k, part in enumerate((a.sum(1), a.square().sum(1), a @ f.T, a @ f.square().T)):
            self.sums[k] = self.sums[k] + part

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each (K, C, 1, 1) float32, as :func:`weighted_mean_std` gives them."""
        v1, v2, s, q = self.sums
        mean = s / v1.clamp_min(1e-12)[:, None]
        var_sum = q - mean * s  # sum a (f - mu)^2
        denom = (v1 - v2 / v1.clamp_min(1e-12)).clamp_min(1e-12)
        var = torch.where(denom[:, None] > 1e-6, var_sum / denom[:, None], torch.zeros_like(var_sum)).clamp_min(0)
        return mean.float()[..., None, None], (var + EPS).sqrt().float()[..., None, None]


def regional_adain(feat: torch.Tensor, shares: torch.Tensor, styles: Sequence[StyleStats],
                   stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """(1, C, h, w) content features, (K, h, w) style shares on their grid, K styles' statistics ->
    (1, C, h, w): each region normalised with its own content statistics and given its style's, then
    combined with the shares; where the shares are all zero, the content features. ``stats``: the
    regions' content (mean, std) when they come from the whole image (a tile's: :class:`RegionStats`)."""
    if shares.shape[0] != len(styles):
        raise ValueError(f"{shares.shape[0]} region planes for {len(styles)} style(s)")
    mean, std = stats if stats is not None else weighted_mean_std(feat, shares)[:2]
    out = torch.zeros_like(feat[0])  # (C, h, w)
    for k, s in enumerate(styles):
        t = (feat[0] - mean[k]) / std[k] * s.std[0].to(feat) + s.mean[0].to(feat)  # (C, h, w)
        out += shares[k].to(feat) * t
    covered = shares.sum(0).to(feat)  # 1 where the grid cell holds any style, else 0
    return (out + (1 - covered) * feat[0])[None]


def composite_keep(image: torch.Tensor, styled: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``image x keep + styled x (1 - keep)``: (1, 3, H, W) twice (0..255) and (H, W) plane 0."""
    k = keep.to(styled)[None, None]
    return image + (styled - image) * (1 - k)


def round_u8(y: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) 0..255 float -> (H, W, 3) uint8, rounded half up once (as stylize_core.masks rounds)."""
    return torch.floor(y.clamp(0, 255) + 0.5).to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()


def as_image(y: torch.Tensor, like: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) 0..255 float -> (H, W, 3) in ``like``'s kind: :func:`round_u8` for a uint8 input,
    float32 unrounded for a float one (a 16-bit input's)."""
    if like.dtype == np.uint8:
        return round_u8(y)
    return y.clamp(0, 255)[0].permute(1, 2, 0).float().cpu().numpy()


@torch.inference_mode()
def adain_regions(stylizer: AdaINStylizer, image: np.ndarray, weights: np.ndarray | torch.Tensor,
                  styles: Sequence[str], *, as_float: bool = False) -> np.ndarray | torch.Tensor:
    """One (H, W, 3) uint8 (or float32 0..255) image with style ``styles[k - 1]`` (names of ``stylizer``'s styles or blends)
    where region k's weight is, the input where plane 0's is: one encoder pass, per-region AdaIN, one
    decoder pass, the stylizer's alpha, colour preservation and strength, then plane 0 composited.
    ``as_float``: the (1, 3, H, W) 0..255 float before rounding (for tests)."""
    planes = as_planes(weights, len(styles)).to(stylizer.device)
    h, w = image.shape[:2]
    if tuple(planes.shape[1:]) != (h, w):
        raise ValueError(f"region weights are {planes.shape[2]}x{planes.shape[1]} but the image is {w}x{h}")
    content = to_unit(image, stylizer.device)  # (1, 3, H, W) 0..1
    stylizer.content_encodes += 1
    region_styles = [stylizer.stats[s] for s in styles]
    shares = to_grid(style_shares(planes, "zero"), (-(-h // 8), -(-w // 8)))  # the relu4_1 grid (ceil_mode)
    tiled = stylizer.tiler(h, w)
    if tiled is None:
        feat = stylizer.encoder(content)  # (1, C, ceil(H/8), ceil(W/8))
        t = regional_adain(feat, shares, region_styles)
        y = stylizer.decoder(stylizer.alpha * t + (1 - stylizer.alpha) * feat)[..., :h, :w]
    else:  # tiles with each region's statistics over the whole image (stylize_core.adain_tiles)
        def target(feat: torch.Tensor, stats, rows: slice, cols: slice) -> torch.Tensor:
            t = regional_adain(feat, shares[:, rows, cols], region_styles, stats)
            return stylizer.alpha * t + (1 - stylizer.alpha) * feat

        y, = tiled(content, [target], RegionStats(shares))
    y = y.mul(255).clamp_(0, 255)  # (1, 3, H, W)
    ref = content * 255
    y = finish(y, ref, keep_color=stylizer.keep_color, strength=stylizer.strength).clamp_(0, 255)
    y = composite_keep(ref, y, planes[0])
    return y if as_float else as_image(y, image)
