"""The :class:`~stylize_core.stylizer.Stylizer`'s forward pass when images are too large for one pass,
a tile side is forced, or the output must tile seamlessly.

Per batch: when no image needs tiling (the usual case) the batch runs through the style network (or
its CPU backend) as before. Otherwise each image runs on its own: through
:class:`~stylize_core.tiling.TiledNetwork` when its modelled activations
(:mod:`stylize_core.tile_budget`) exceed the budget or it is larger than ``tile``, else whole.

Tiles always run the PyTorch module on the Stylizer's device (under its autocast), whatever
``backend`` runs untiled batches: shared statistics are a hook in PyTorch's norm layers, which an
ONNX graph does not have. Tiles' statistics: ``tile_stats``, one of stylize_core.tiling.STATS_MODES
or ``auto`` (exact where that costs little, else thumbnail: :meth:`TiledForward._exact_is_cheap`);
with ``exact`` or ``auto``, tiles are sized to half the budget and the other half holds their states
between layers.

``tileable``: every image runs with circular padding, whole when its sides are multiples of 4 and it
fits (exactly periodic), else in wrap-around tiles over the unpadded image (the Stylizer's own
reflection padding to a multiple of 4 would break the period).

Enhancement networks (stylize_core.enhance_net) tile by the same rules, with their own memory model
(:func:`~stylize_core.tile_budget.enhance_bytes_per_pixel`, per input pixel: x4 makes 16x the
pixels): their tiles share no statistics (they have no norm layers) and are placed at the output's
scale. ``tileable`` does not apply to them (zero padding): they tile or run whole as without it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .bucketing import crop
from .tile_budget import activation_budget, bytes_per_pixel, enhance_bytes_per_pixel, tile_side
from .tiling import TiledNetwork, axis_windows, min_tile, set_padding
from .transformer_net import SIZE_MULTIPLE, NetConfig



class TiledForward:
    """Decides, per batch and image, between one pass and tiles, for one Stylizer."""

    def __init__(self, config: Any, device: torch.device, styles: Mapping[str, Any],
                 models: Mapping[str, Callable[[torch.Tensor], torch.Tensor]]) -> None:
        """``config``: the Stylizer's StylizerConfig; ``styles``: its StyleModels (the PyTorch networks
        tiles run); ``models``: what runs one pass (the network or its CPU backend), by style."""
        self.styles, self.models = styles, models
        cfg = config
        self.tile, self.tileable, self.stats = cfg.tile, cfg.tileable, cfg.tile_stats
        self.budget = activation_budget(cfg.max_memory, device)
        self.bf16 = device.type == "cuda" and cfg.bf16
        self._circular: dict[str, nn.Module] = {}

    def _enhances(self, style: str) -> bool:
        return getattr(self.styles[style], "enhance", None) is not None

    def _wraps(self, style: str) -> bool:
        """``tileable`` for this style: enhancement networks pad with zeros and never wrap around."""
        return self.tileable and not self._enhances(style)

    def thumbnail_pixels(self, style: str, side: int = 0) -> int:
        """Pixels of the thumbnail that statistics are taken from: the largest one pass fits in the
        budget, and at least one tile of ``side``."""
        return max(side * side, 1, self.budget // self.per_pixel(style))

    def per_pixel(self, style: str) -> int:
        """Modelled activation bytes per INPUT pixel of one forward pass of this style's network."""
        if self._enhances(style):
            return enhance_bytes_per_pixel(self.styles[style].model.arch, bf16=self.bf16)
        arch = getattr(self.styles[style], "arch", None) or NetConfig()
        return bytes_per_pixel(arch, bf16=self.bf16)

    def side(self, style: str, height: int, width: int, wrap: bool = False) -> int:
        """The tile side of an image of this size (0: one pass). With exact statistics an image
        that needs tiles gets tiles of half the budget: the other half holds the tiles' intermediate
        states between norm layers (stylize_core.exact_stats), which saves recomputing them; with
        ``auto`` only where that makes exact statistics cheap (:meth:`_exact_is_cheap`)."""
        per_pixel = self.per_pixel(style)
        side = tile_side(height, width, per_pixel=per_pixel, budget=self.budget, forced=self.tile)
        if side and not self.tile and self.stats in ("exact", "auto") and not self._enhances(style):
            half = tile_side(height, width, per_pixel=per_pixel, budget=self.budget // 2)
            if self.stats == "exact" or self._exact_is_cheap(style, half, (height, width), wrap):
                side = half
        return side

    def _cache(self, style: str, side: int) -> int:
        """What one tile's activations leave of the budget: room for the tiles' states (exact)."""
        return max(0, self.budget - side * side * self.per_pixel(style))

    def _exact_is_cheap(self, style: str, side: int, size: tuple[int, int], wrap: bool) -> bool:
        """``auto``: whether every tile's states at the half- and quarter-resolution layers fit the
        cache, so exact statistics recompute only the two full-resolution layers (measured at
        0.8-1.6x thumbnail statistics' time; docs/benchmarks_large.md). The largest of those states:
        c2 = 2 c1 channels at a quarter of the pixels (or c3 = 4 c1 at a sixteenth, twice inside a
        residual block for its skip): c1 / 2 values per tile pixel, 64 bytes for the default network."""
        rows, cols = (axis_windows(n, side, wrap=wrap) for n in size)
        tile_pixels = len(rows) * len(cols) * rows[0].length * cols[0].length
        c1 = (getattr(self.styles[style], "arch", None) or NetConfig()).channels[0]
        return tile_pixels * c1 // 2 * (2 if self.bf16 else 4) <= self._cache(style, side)

    def _tiled(self, net: nn.Module, style: str, side: int, thumbnail: int, size: tuple[int, int],
               wrap: bool = False) -> TiledNetwork:
        stats = self.stats
        if stats == "auto":  # (enhancement networks share no statistics: any mode runs them alike)
            cheap = not self._enhances(style) and self._exact_is_cheap(style, side, size, wrap)
            stats = "exact" if cheap else "thumbnail"
        return TiledNetwork(net, side, stats=stats, wrap=wrap, thumbnail_pixels=max(side * side, thumbnail),
                            cache_bytes=self._cache(style, side))

    def module(self, style: str) -> nn.Module:
        """The style's PyTorch network on the device; with ``tileable`` a circularly padded copy."""
        net = self.styles[style].model
        if not self._wraps(style):
            return net
        if style not in self._circular:
            self._circular[style] = set_padding(copy.deepcopy(net), "circular")
        return self._circular[style]

    def __call__(self, style: str, x: torch.Tensor, pads: list[tuple[int, int, int, int]]
                 ) -> tuple[torch.Tensor, list[int]]:
        h, w = x.shape[-2:]
        if not self._wraps(style) and not self.side(style, h, w):
            return self.models[style](x), [1] * x.shape[0]
        outs, tiles = [], []
        for j in range(x.shape[0]):
            y, n = self._one(style, x[j : j + 1], pads[j])
            outs.append(y.float())
            tiles.append(n)
        return (outs[0] if len(outs) == 1 else torch.cat(outs)), tiles

    def _one(self, style: str, x: torch.Tensor, pad: tuple[int, int, int, int]) -> tuple[torch.Tensor, int]:
        net = self.module(style)
        thumbnail = self.thumbnail_pixels(style)
        if self._wraps(style):
            x = crop(x, pad)  # (1, 3, h, w): the image itself, its period
            h, w = x.shape[-2:]
            side = self.side(style, h, w, wrap=True)
            if not side and h % SIZE_MULTIPLE == 0 and w % SIZE_MULTIPLE == 0:
                return F.pad(net(x), pad), 1
            side = side or self._wrap_side(h, w)
            tiled = self._tiled(net, style, side, thumbnail, (h, w), wrap=True)
            return F.pad(tiled(x), pad), tiled.last_tiles
        side = self.side(style, *x.shape[-2:])
        if not side:
            return self.models[style](x), 1
        tiled = self._tiled(net, style, side, thumbnail, tuple(x.shape[-2:]))
        return tiled(x), tiled.last_tiles

    @staticmethod
    def _wrap_side(h: int, w: int) -> int:
        """One wrap-around tile covering the whole image plus the overlap it needs with itself."""
        need = max(h, w) + min_tile() // 2 + 2 * SIZE_MULTIPLE
        return max(min_tile(), -(-need // SIZE_MULTIPLE) * SIZE_MULTIPLE)
