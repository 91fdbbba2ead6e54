"""The :class:`~stylize_core.stylizer.Stylizer`'s forward pass when images are too large for one pass,
a tile side is forced, or the output must tile seamlessly.

Per batch: when no image needs tiling (the usual case) the batch runs through the style network (or
its CPU backend) as before. Otherwise each image runs on its own: through
:class:`~stylize_core.tiling.TiledNetwork` when its modelled activations
(:mod:`stylize_core.tile_budget`) exceed the budget or it is larger than ``tile``, else whole.

Tiles always run the PyTorch module on the Stylizer's device (under its autocast), whatever
``backend`` runs untiled batches: shared statistics are a hook in PyTorch's norm layers, which an
ONNX graph does not have.

``tileable``: every image runs with circular padding, whole when its sides are multiples of 4 and it
fits (exactly periodic), else in wrap-around tiles over the unpadded image (the Stylizer's own
reflection padding to a multiple of 4 would break the period).

Enhancement networks (stylize_core.enhance_net) always run in one pass: their outputs are 2x/4x
the input, which TiledNetwork does not place yet (docs/benchmarks_large.md, not done).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .bucketing import crop
from .tile_budget import activation_budget, bytes_per_pixel, tile_side
from .tiling import TiledNetwork, min_tile, set_padding
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

    def per_pixel(self, style: str) -> int:
        arch = getattr(self.styles[style], "arch", None) or NetConfig()
        return bytes_per_pixel(arch, bf16=self.bf16)

    def side(self, style: str, height: int, width: int) -> int:
        """The tile side of an image of this size (0: one pass)."""
        return tile_side(height, width, per_pixel=self.per_pixel(style), budget=self.budget, forced=self.tile)

    def _module(self, style: str) -> nn.Module:
        """The style's PyTorch network on the device; with ``tileable`` a circularly padded copy."""
        net = self.styles[style].model
        if not self.tileable:
            return net
        if style not in self._circular:
            self._circular[style] = set_padding(copy.deepcopy(net), "circular")
        return self._circular[style]

    def __call__(self, style: str, x: torch.Tensor, pads: list[tuple[int, int, int, int]]
                 ) -> tuple[torch.Tensor, list[int]]:
        h, w = x.shape[-2:]
        # Enhancement networks (no norm layers, outputs at x2/x4) run in one pass: not tiled yet.
        one_pass = getattr(self.styles[style], "enhance", None) is not None
        if one_pass or (not self.tileable and not self.side(style, h, w)):
            return self.models[style](x), [1] * x.shape[0]
        outs, tiles = [], []
        for j in range(x.shape[0]):
            y, n = self._one(style, x[j : j + 1], pads[j])
            outs.append(y.float())
            tiles.append(n)
        return (outs[0] if len(outs) == 1 else torch.cat(outs)), tiles

    def _one(self, style: str, x: torch.Tensor, pad: tuple[int, int, int, int]) -> tuple[torch.Tensor, int]:
        net = self._module(style)
        per_pixel = self.per_pixel(style)
        thumbnail = max(1, self.budget // per_pixel)  # the largest thumbnail that fits, at least a tile
        if self.tileable:
            x = crop(x, pad)  # (1, 3, h, w): the image itself, its period
            h, w = x.shape[-2:]
            side = self.side(style, h, w)
            if not side and h % SIZE_MULTIPLE == 0 and w % SIZE_MULTIPLE == 0:
                return F.pad(net(x), pad), 1
            side = side or self._wrap_side(h, w)
            tiled = TiledNetwork(net, side, stats=self.stats, wrap=True, thumbnail_pixels=max(side * side, thumbnail))
            return F.pad(tiled(x), pad), tiled.last_tiles
        side = self.side(style, *x.shape[-2:])
        if not side:
            return self.models[style](x), 1
        tiled = TiledNetwork(net, side, stats=self.stats, thumbnail_pixels=max(side * side, thumbnail))
        return tiled(x), tiled.last_tiles

    @staticmethod
    def _wrap_side(h: int, w: int) -> int:
        """One wrap-around tile covering the whole image plus the overlap it needs with itself."""
        need = max(h, w) + min_tile() // 2 + 2 * SIZE_MULTIPLE
        return max(min_tile(), -(-need // SIZE_MULTIPLE) * SIZE_MULTIPLE)
