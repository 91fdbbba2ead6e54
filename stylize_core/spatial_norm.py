"""Several styles in one pass of a style network: spatially varying conditional-norm parameters.

A multi-style :class:`~stylize_core.transformer_net.TransformerNet` (conditional instance norm, Dumoulin
et al. 2017) and the style predictor's baked networks (Ghiasi et al. 2017) differ between styles only
in each norm layer's scale and shift. :class:`RegionNet` runs K such styles at once: every norm layer
normalises each region with that region's own statistics and gives it that style's scale and shift:

    out(x) = sum_k w_k(x) (gamma_k (f(x) - mu_k) / sigma_k + beta_k),

with ``w_k`` the style shares (:func:`stylize_core.regions.style_shares`: the region weights
renormalised over the styles) area-averaged to that layer's grid (full, 1/2 and 1/4 resolution), and
``mu_k``, ``sigma_k`` the per-channel mean and std of the features weighted by ``w_k`` (instance norm's
biased variance, eps 1e-5). Pixels of no style (label 0, which the input covers in the end) render a
mix of the styles present but count in no region's statistics (``stat_shares``): a region beside
label 0 is normalised by its own pixels alone (its core 1.54 grey levels from the style's render of
the region's crop, 2.63 when label 0 counted, in ``tests/stylize_core/test_regions.py``). One forward
pass, whatever K. A share of 1 everywhere for one style runs
that style's network with its own arithmetic (bit for bit); styles absent from an image cost
nothing; in a feather band the shares blend the regions' renders, layer by layer.

Why per-region statistics (as AdaIN's regions, :mod:`stylize_core.regions`): with the whole image's
statistics and only the scale/shift varying, the deeper layers normalise a region by statistics that
include the other styles' features, and on the demo predictor's network (astronaut, 256 px, two
held-out styles, halves) a region's core was 11-17 grey levels (mean |difference|) from that style's
whole-image render, against 24-28 from the other style's. Per region it is 4.6-5.0 against 20-22, and
0.3-0.9 from that style's render of the region's crop alone: a region looks as if it had been
stylised by itself, which is what an editor drawing the mask expects.

Styles are given as K single-style networks of one architecture (:meth:`TransformerNet.bake_style`
of each selection or blend of a multi-style network, or :meth:`StylePredictorModel.bake` of each
embedding); :class:`RegionNet` checks that everything but the norm parameters is identical (networks
from separate checkpoints are not: blend their outputs instead, :func:`stylize_core.masks.composite_labels`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from .transformer_net import InstanceNorm, TransformerNet, _norm_stats_only


class NotOneNetwork(ValueError):
    """The networks differ in more than their norm parameters: no spatial mixing is possible."""


class _Shares:
    """The current call's (B, K, H, W) style shares, resized once per layer grid: ``mix`` weighs the
    regions' renders at each position, ``stat`` weighs the positions of each region's statistics (the
    same, except where no style has weight: label 0, whose pixels the input covers, renders a mix of
    the styles present but counts in no region's statistics)."""

    def __init__(self) -> None:
        self.mix: torch.Tensor | None = None
        self.stat: torch.Tensor | None = None
        self.cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.present: list[int] = []  # the styles whose regions hold any weight
        self.whole: int | None = None  # the style whose share is 1 everywhere, if one is

    def set(self, mix: torch.Tensor | None, stat: torch.Tensor | None = None) -> None:
        self.mix, self.stat, self.cache = mix, (mix if stat is None else stat), {}
        if mix is None:
            self.present, self.whole = [], None
            return
        self.present = [k for k in range(self.stat.shape[1]) if bool(self.stat[:, k].any())]
        one = len(self.present) == 1 and bool((self.stat[:, self.present[0]] == 1).all())
        self.whole = self.present[0] if one and bool((mix[:, self.present[0]] == 1).all()) else None

    def at(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mix is None or self.stat is None:
            raise RuntimeError("RegionNet's norm layers ran outside RegionNet.forward")
        if size not in self.cache:
            self.cache[size] = tuple(t if tuple(t.shape[-2:]) == size else nn.functional.adaptive_avg_pool2d(t, size)
                                     for t in (self.mix, self.stat))  # type: ignore[assignment]
        return self.cache[size]


class SpatialNorm(nn.Module):
    """Instance norm per region: ``gammas`` and ``betas`` are (K, C), one row per style. Each region's
    features are normalised with their own weighted mean and (biased, as instance norm's) variance,
    then scaled and shifted by that style's row; the regions are summed with their shares."""

    def __init__(self, gammas: torch.Tensor, betas: torch.Tensor, eps: float, shares: _Shares) -> None:
        super().__init__()
        self.register_buffer("gammas", gammas.detach().clone())
        self.register_buffer("betas", betas.detach().clone())
        self.eps, self.shares = eps, shares

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        if self.shares.whole is not None:  # one style everywhere: the network's own arithmetic, exactly
            k = self.shares.whole
            return _norm_stats_only(x, self.eps) * self.gammas[k].to(x.dtype)[:, None, None] \
                + self.betas[k].to(x.dtype)[:, None, None]
        mix, stat = (t.to(x.dtype) for t in self.shares.at(tuple(x.shape[-2:])))  # (B or 1, K, h, w) each
        mass = stat.sum((2, 3)).clamp_min(1e-12)  # (B, K)
        out = torch.zeros_like(x)
        for k in self.shares.present:  # styles with no weight anywhere cost nothing
            sk = stat[:, k:k + 1]  # (B, 1, h, w)
            mean = (x * sk).sum((2, 3), keepdim=True) / mass[:, k, None, None, None]  # (B, C, 1, 1)
            var = ((x - mean).pow(2) * sk).sum((2, 3), keepdim=True) / mass[:, k, None, None, None]
            y = (x - mean) * torch.rsqrt(var + self.eps)
            out += mix[:, k:k + 1] * (y * self.gammas[k].to(x.dtype)[:, None, None]
                                      + self.betas[k].to(x.dtype)[:, None, None])
        return out


def _norm_names(net: TransformerNet) -> list[str]:
    return [name for name, m in net.named_modules() if isinstance(m, InstanceNorm)]


class RegionNet(nn.Module):
    """K single-style networks that differ only in their norm parameters, run as one network whose
    norm parameters follow per-pixel style shares: ``forward(x, shares)`` with x (B, 3, H, W) 0..255 and
    shares (B or 1, K, H, W) (or (K, H, W)) summing to one per pixel."""

    def __init__(self, nets: Sequence[TransformerNet]) -> None:
        super().__init__()
        if not nets:
            raise ValueError("a RegionNet needs at least one style network")
        if any(n.arch.multi_style for n in nets):
            raise ValueError("give RegionNet single-style networks (TransformerNet.bake_style of each style)")
        names = _norm_names(nets[0])
        norm_keys = {f"{n}.{p}" for n in names for p in ("weight", "bias", "running_mean", "running_var",
                                                         "num_batches_tracked")}
        base = nets[0].state_dict()
        for i, other in enumerate(nets[1:], start=2):
            state = other.state_dict()
            if other.arch != nets[0].arch or state.keys() != base.keys() or any(
                    not torch.equal(base[k], state[k].to(base[k].device)) for k in base if k not in norm_keys):
                raise NotOneNetwork(f"style network {i} is not the same network as style network 1 with other "
                                    "norm parameters (separate checkpoints): blend their outputs instead")
        self.styles = len(nets)
        self.shares = _Shares()
        self.net = copy.deepcopy(nets[0]).eval().requires_grad_(False)
        for name in names:
            mods = [dict(n.named_modules())[name] for n in nets]
            gammas = torch.stack([m.weight.detach().float() for m in mods])  # (K, C)
            betas = torch.stack([m.bias.detach().float().to(gammas.device) for m in mods])
            parent_name, _, attr = name.rpartition(".")
            parent = self.net.get_submodule(parent_name) if parent_name else self.net
            setattr(parent, attr, SpatialNorm(gammas, betas, mods[0].eps, self.shares))

    @classmethod
    def from_multi_style(cls, net: TransformerNet, selections: Sequence[torch.Tensor | list[float]]) -> RegionNet:
        """K selections (one-hot or blend weight vectors over the S styles) of one multi-style network."""
        return cls([net.bake_style(s) for s in selections])

    def forward(self, x: torch.Tensor, shares: torch.Tensor, stat_shares: torch.Tensor | None = None) -> torch.Tensor:
        """``stat_shares`` (default ``shares``): the weights of each region's statistics, where they differ
        from the mix (:func:`stylize_core.regions.style_shares` with ``fill="zero"`` and ``"present"``)."""
        s, t = ((v if v.dim() == 4 else v[None]) if v is not None else None for v in (shares, stat_shares))
        for v in (s, t):
            if v is not None and (v.shape[1] != self.styles or tuple(v.shape[-2:]) != tuple(x.shape[-2:])):
                raise ValueError(f"shares {tuple(v.shape)} do not fit {self.styles} styles over an image "
                                 f"{tuple(x.shape[-2:])}")
        self.shares.set(s.to(x.device, torch.float32), None if t is None else t.to(x.device, torch.float32))
        try:
            return self.net(x)
        finally:
            self.shares.set(None)
