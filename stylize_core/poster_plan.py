"""A poster's tiles as plain data, and the writer's side of it: summing the tiles' weighted outputs
into the output band by band (NumPy only: the writer runs in a CPU task that never imports torch).

An image too large to stylise in one actor call (``--split-pixels``, :mod:`jobs.batch.poster`) is cut
into the overlapping tiles of :func:`stylize_core.tiling.axis_windows` on its reflection-padded copy
(sides multiples of 4, as the Stylizer pads it). Each tile's output comes back already multiplied by its
blend weights, which sum to exactly 1 over every pixel, so the output is their plain sum. The rows of
one row of tiles are final once the next row of tiles has been added (windows overlap only their
neighbours): the sum is held for one row of tiles at a time, not for the whole image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PosterPlan:
    """How one image runs as tiles: its (decoded) size, the padding that brings it to the network's
    grid (top, bottom, left, right), the tile side, and the windows (start, length) along the padded
    image's rows and columns. Tile ``t`` is row window ``t // len(cols)``, column window ``t % len(cols)``."""

    height: int
    width: int
    pads: tuple[int, int, int, int]
    side: int
    rows: tuple[tuple[int, int], ...]
    cols: tuple[tuple[int, int], ...]

    @property
    def tiles(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def padded(self) -> tuple[int, int]:
        top, bottom, left, right = self.pads
        return self.height + top + bottom, self.width + left + right

    def window(self, t: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Tile ``t``'s (row window, column window), each (start, length) on the padded image."""
        if not 0 <= t < self.tiles:
            raise IndexError(f"tile {t} of a plan of {self.tiles} tiles")
        return self.rows[t // len(self.cols)], self.cols[t % len(self.cols)]

    def tile_of(self, padded: np.ndarray, t: int) -> np.ndarray:
        """Tile ``t``'s input: a contiguous copy of its window of the padded (H, W, C) image."""
        (r0, rl), (c0, cl) = self.window(t)
        return np.ascontiguousarray(padded[r0 : r0 + rl, c0 : c0 + cl])


def assemble(plan: PosterPlan, tile_output: Callable[[int], np.ndarray],
             finish: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The output image: the sum of every tile's weighted output (``tile_output(t)``: (length, length,
    C) float32, asked for once per tile, row of tiles by row of tiles), cropped to the image and passed
    through ``finish`` (float rows -> the output's pixels: clamp, round, dtype) one band at a time.
    Holds the output plus one row of tiles' float sum."""
    top, _, left, _ = plan.pads
    height, width = plan.height, plan.width
    padded_w = plan.padded[1]
    out: np.ndarray | None = None
    band: np.ndarray | None = None  # float sum of padded rows [band_top, band_top + len(band))
    band_top = 0
    for i, (r0, rl) in enumerate(plan.rows):
        end = r0 + rl
        for j, (c0, cl) in enumerate(plan.cols):
            t = i * len(plan.cols) + j
            y = np.asarray(tile_output(t), dtype=np.float32)
            if y.shape[:2] != (rl, cl):
                raise ValueError(f"tile {t} is {y.shape[1]}x{y.shape[0]}, its window {cl}x{rl}")
            if band is None:  # the first tile fixes the channels
                band = np.zeros((0, padded_w, y.shape[2]), dtype=np.float32)
            if band.shape[0] < end - band_top:  # grow the band down to this row of tiles' end
                more = np.zeros((end - band_top - band.shape[0], padded_w, band.shape[2]), dtype=np.float32)
                band = np.concatenate([band, more])
            band[r0 - band_top : end - band_top, c0 : c0 + cl] += y
        assert band is not None
        done = plan.rows[i + 1][0] if i + 1 < len(plan.rows) else end  # rows no later tile touches
        lo, hi = max(band_top, top), min(done, top + height)  # the image's rows among them
        if hi > lo:
            rows = finish(band[lo - band_top : hi - band_top, left : left + width])
            if out is None:
                out = np.empty((height, width, *rows.shape[2:]), dtype=rows.dtype)
            out[lo - top : hi - top] = rows
        band, band_top = band[done - band_top :].copy(), done
    if out is None:
        raise ValueError("a plan without tiles")
    return out
