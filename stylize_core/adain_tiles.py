"""AdaIN on images too large for one pass: overlapping tiles with the whole image's content statistics.

AdaIN normalises the relu4_1 features of the whole image by their per-channel mean and std. Its
encoder and decoder (:mod:`stylize_core.adain`) have no normalisation layers, so away from a tile's
edge a tile's features and decoded pixels are the whole image's; only that one statistic is global.
:class:`TiledAdaIN` therefore computes it exactly, not from a thumbnail:

1. every tile is encoded, and the features each tile owns (its window's ``own_lo``..``own_hi``, cut
   on the encoder's 8-pixel grid so that neighbours' parts meet without a gap or an overlap) are summed per
   channel: mean and unbiased variance over the whole feature map, as
   :func:`~stylize_core.adain.calc_mean_std` computes them on one pass (float64 sums);
2. every tile's features are renormalised with those statistics and the style's, blended with
   ``alpha``, decoded, and the tiles' outputs cross-faded (:func:`~stylize_core.tiling.axis_windows`'s
   weights, which sum to one).

Windows start at multiples of 8 (the encoder's three ``ceil_mode`` poolings): they are the tiling
module's windows laid out in units of 2 pixels and placed at twice that scale. The encoder's
receptive field at relu4_1 and the decoder's are each ~70 px across, so the margin a tile's edge
discards is :data:`MARGIN` = 64 px (the feed-forward networks' default is 32). The image is padded
by reflection to a multiple of 8 before tiling and the output cropped back; untiled, the pooling's
``ceil_mode`` pads instead, so such an image's output differs from one pass: most within ~48 px of
the bottom and right edges, slightly everywhere through the statistics (tests/stylize_core/test_adain_tiles.py).

:class:`ChannelStats` is plain AdaIN's statistic; a regions style passes its own accumulator
(:class:`stylize_core.regions.RegionStats`: each region's weighted statistics) and tile targets.

Memory: one tile's activations, the full-size input and output, and the tiles' relu4_1 features
when they fit in the budget (else each tile is encoded again for the second step).
:func:`adain_bytes_per_pixel` is the model of one pass's peak activation memory the tile side is
chosen with (:func:`~stylize_core.tile_budget.tile_side`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .losses import STATS_EPS as EPS  # calc_mean_std's eps (stylize_core.adain.EPS)
from .tile_budget import tile_side
from .tiling import DEFAULT_FEATHER, Window, axis_windows, min_tile

GRID = 8  # the encoder's downsampling: tiles start and end on it
MARGIN = 64  # px discarded inside a tile's shared edges (the module doc)
# Peak activation bytes of one encoder + decoder pass per input pixel, fp32 on CPU: per channel of
# the full-resolution layers (64 x width) plus a fixed part. Fitted above what was measured as the
# growth of the process's peak RSS over a 64x64 warm-up (2026-12-07, 2-core AMD EPYC, torch 2.14.1,
# random weights, inference mode): width 0.25 (the demo) 288 / 313 B/px at 512 / 1024 px square, width
# 1.0 (pytorch-AdaIN's) 799 / 783 B/px; the model gives 326 and 854.
BYTES_PER_C1_CHANNEL = 11
FIXED_BYTES_PER_PIXEL = 150


def adain_bytes_per_pixel(enc: nn.Module) -> int:
    """Modelled peak activation bytes per input pixel of one AdaIN pass with encoder ``enc``."""
    c1 = next(m.out_channels for m in enc.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    return BYTES_PER_C1_CHANNEL * c1 + FIXED_BYTES_PER_PIXEL


def smallest_tile() -> int:
    """The smallest tile side (a multiple of 8): twice the overlap of two tiles."""
    side = min_tile(MARGIN, DEFAULT_FEATHER)
    return -(-side // GRID) * GRID


def grid_windows(size: int, tile: int) -> list[Window]:
    """Windows over ``[0, size)`` (a multiple of 8) starting at multiples of 8, tiles of at most ``tile``."""
    return axis_windows(size // 2, tile // 2, MARGIN // 2, DEFAULT_FEATHER // 2, scale=2)


def _owned(win: Window) -> slice:
    """The window's owned part on the feature grid (1/8 of the pixels), in tile coordinates."""
    lo, hi = win.own_lo - win.own_lo % GRID, win.own_hi - win.own_hi % GRID
    return slice(lo // GRID, hi // GRID)


def _shift(part: slice, win: Window) -> slice:
    """A slice of a tile's feature grid as a slice of the whole image's."""
    return slice(part.start + win.start // GRID, part.stop + win.start // GRID)


class ChannelStats:
    """Plain AdaIN's content statistics: per channel, the mean and unbiased std (plus eps) of the whole
    feature map, as :func:`~stylize_core.adain.calc_mean_std` computes them in one pass (float64 sums)."""

    def __init__(self) -> None:
        self.total: torch.Tensor | Any = 0.0
        self.squares: torch.Tensor | Any = 0.0
        self.n = 0

    def add(self, core: torch.Tensor, rows: slice, cols: slice) -> None:
        """``core``: (1, C, h, w) features a tile owns, at ``rows``/``cols`` of the whole feature grid."""
        core = core.double()
        self.total = self.total + core.sum(dim=(2, 3))
        self.squares = self.squares + core.square().sum(dim=(2, 3))
        self.n += core.shape[2] * core.shape[3]

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each (1, C, 1, 1) float32."""
        mean = self.total / self.n
        var = (self.squares - self.n * mean.square()) / max(1, self.n - 1)  # unbiased, as torch.var
        c = mean.shape[1]
        return mean.view(1, c, 1, 1).float(), (var.clamp_min(0) + EPS).sqrt().view(1, c, 1, 1).float()


# (tile features, the accumulator's result, the tile's rows and columns of the whole feature grid)
#   -> the features to decode
Target = Callable[[torch.Tensor, Any, slice, slice], torch.Tensor]


class TiledAdaIN:
    """Encode, renormalise and decode a (1, 3, H, W) 0..1 image tile by tile (the module doc).

    ``tile``: the tile side, a multiple of 8 of at least :func:`smallest_tile`; ``keep_bytes``: how
    many bytes of tile features may be kept between the two steps (more: each tile is encoded twice).
    """

    def __init__(self, enc: nn.Module, dec: nn.Module, tile: int, keep_bytes: int) -> None:
        if tile % GRID or tile < smallest_tile():
            raise ValueError(f"AdaIN tiles must be a multiple of {GRID} of at least {smallest_tile()} px, got {tile}")
        self.encoder, self.decoder, self.tile, self.keep_bytes = enc, dec, tile, keep_bytes
        self.encodes = 0  # tile encoder passes (tests count them)

    def count(self, height: int, width: int) -> int:
        """How many tiles an image of this size (padded to multiples of 8) runs in."""
        return len(grid_windows(_up8(height), self.tile)) * len(grid_windows(_up8(width), self.tile))

    def __call__(self, content: torch.Tensor, targets: list[Target], stats: Any = None) -> list[torch.Tensor]:
        """``content`` (1, 3, H, W) 0..1 -> one (1, 3, H, W) unclamped output per target. ``stats``
        accumulates the content statistics over the tiles' owned features (``add``, then ``result``;
        default :class:`ChannelStats`); a target maps a tile's features, that result and the tile's
        place on the feature grid to the features to decode (AdaIN and alpha)."""
        h, w = content.shape[-2:]
        x = _pad8(content)
        rows, cols = grid_windows(x.shape[-2], self.tile), grid_windows(x.shape[-1], self.tile)
        tiles = [(rw, cw) for rw in rows for cw in cols]
        stats = ChannelStats() if stats is None else stats
        feats = self._statistics(x, tiles, stats)
        result = stats.result()
        outs = []
        for target in targets:
            out = torch.zeros_like(x)
            for k, (rw, cw) in enumerate(tiles):
                f = feats[k] if feats is not None else self._encode(x, rw, cw)
                grid_rows = slice(rw.start // GRID, (rw.start + rw.length) // GRID)
                grid_cols = slice(cw.start // GRID, (cw.start + cw.length) // GRID)
                y = self.decoder(target(f, result, grid_rows, grid_cols))
                weight = rw.weight.to(y)[:, None] * cw.weight.to(y)[None, :]
                out[..., rw.start:rw.start + rw.length, cw.start:cw.start + cw.length] += y * weight
            outs.append(out[..., :h, :w])
        return outs

    def _encode(self, x: torch.Tensor, rw: Window, cw: Window) -> torch.Tensor:
        self.encodes += 1
        return self.encoder(x[..., rw.start:rw.start + rw.length, cw.start:cw.start + cw.length])

    def _statistics(self, x: torch.Tensor, tiles: list[tuple[Window, Window]], stats: Any) -> list[torch.Tensor] | None:
        """Every tile encoded once, its owned features added to ``stats``; returns the tiles' features
        when they fit in ``keep_bytes``."""
        kept: list[torch.Tensor] | None = []
        held = 0  # bytes of the features in ``kept``
        for rw, cw in tiles:
            f = self._encode(x, rw, cw)
            rows, cols = _owned(rw), _owned(cw)
            stats.add(f[..., rows, cols], _shift(rows, rw), _shift(cols, cw))
            if kept is not None:
                kept.append(f)
                held += f.numel() * f.element_size()
                if held > self.keep_bytes:
                    kept = None  # encode again in the second step rather than hold them all
        return kept


def _up8(v: int) -> int:
    return -(-v // GRID) * GRID


def _pad8(x: torch.Tensor) -> torch.Tensor:
    """``x`` padded by reflection at the bottom and right to sides that are multiples of 8."""
    h, w = x.shape[-2:]
    ph, pw = _up8(h) - h, _up8(w) - w
    if not ph and not pw:
        return x
    if ph < h and pw < w:
        return F.pad(x, (0, pw, 0, ph), mode="reflect")
    return F.pad(x, (0, pw, 0, ph), mode="replicate")  # a side too short to reflect


def adain_tile_side(height: int, width: int, *, per_pixel: int, budget: int, forced: int = 0) -> int:
    """The tile side an image of this size runs AdaIN with, or 0 for one pass: the style networks' rule
    (:func:`~stylize_core.tile_budget.tile_side`) on the encoder's 8-pixel grid, tiles of at least
    :func:`smallest_tile`."""
    return tile_side(height, width, per_pixel=per_pixel, budget=budget, forced=forced, multiple=GRID,
                     smallest=smallest_tile())
