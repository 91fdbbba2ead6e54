"""A poster's tiles as plain data, and the writer's side of it: summing the tiles' weighted outputs
into the output band by band (NumPy only: the writer runs in a CPU task that never imports torch).

An image too large to stylise in one actor call (``--split-pixels``, :mod:`jobs.batch.poster`) is cut
into the overlapping tiles of :func:`stylize_core.tiling.axis_windows` on its reflection-padded copy
(sides multiples of 4, as the Stylizer pads it). Each tile's output comes back already multiplied by its
blend weights, which sum to exactly 1 over every pixel, so the output is their plain sum. The rows of
one row of tiles are final once the next row of tiles has been added (windows overlap only their
neighbours): the sum is held for one row of tiles at a time, not for the whole image.

The writer's side of the metrics too: the output's total variation over the finished bands
(:class:`TotalVariation`) and its thumbnail at the metrics size, resampled as the loss meter resizes
an image (:class:`Thumbnail`), which an actor's loss network then measures
(:func:`stylize_core.poster.measure_poster`); the statistics' thumbnail is an area average
(:func:`thumbnail`), as the in-actor tiling takes it.
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
    wrap: bool = False  # --tileable: padded with the image's own opposite edges (a torus), not reflected

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


def _area_axis(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Adaptive average along ``axis`` to ``size`` (torch's ``mode="area"``: output i averages input
    [floor(i n / size), ceil((i + 1) n / size))), in float64 through a cumulative sum."""
    n = a.shape[axis]
    i = np.arange(size)
    lo, hi = (i * n) // size, -(-((i + 1) * n) // size)
    cs = np.cumsum(a, axis=axis, dtype=np.float64)
    cs = np.concatenate([np.zeros_like(cs.take([0], axis=axis)), cs], axis=axis)
    shape = [1] * a.ndim
    shape[axis] = size
    return (cs.take(hi, axis=axis) - cs.take(lo, axis=axis)) / (hi - lo).reshape(shape)


def _bilinear_weights(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased bilinear resampling from ``n`` to ``size <= n`` samples as torch's
    ``F.interpolate(mode="bilinear", antialias=True, align_corners=False)`` does it (PIL's triangle
    filter widened by the scale): (size, taps) input indices and their normalised weights."""
    scale = n / size
    centers = scale * (np.arange(size) + 0.5)
    lo = np.maximum((centers - scale + 0.5).astype(np.int64), 0)
    hi = np.minimum((centers + scale + 0.5).astype(np.int64), n)
    j = lo[:, None] + np.arange(int((hi - lo).max()))[None, :]
    w = np.clip(1.0 - np.abs((j - centers[:, None] + 0.5) / scale), 0.0, None)
    w[j >= hi[:, None]] = 0.0
    return np.minimum(j, n - 1), w / w.sum(axis=1, keepdims=True)


def _bilinear_axis(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Antialiased bilinear resampling along ``axis`` (0 or 1 of (H, W, C)) down to ``size``, in float64."""
    if a.shape[axis] == size:
        return a.astype(np.float64)
    idx, w = _bilinear_weights(a.shape[axis], size)
    if axis == 0:
        return np.einsum("stwc,st->swc", a[idx].astype(np.float64), w)
    return np.einsum("hstc,st->hsc", a[:, idx].astype(np.float64), w)


class Thumbnail:
    """An image given as bands of rows, top to bottom, resampled to ``size``: each band across its
    columns as it comes (``chunk`` rows at a time, in float64), the rows at the end. ``"area"``:
    torch's ``mode="area"``; ``"bilinear"``: its antialiased bilinear (the metrics' resize, for
    ``size`` no larger than the image)."""

    def __init__(self, size: tuple[int, int], filter: str = "area") -> None:
        self.size = size
        self._axis = {"area": _area_axis, "bilinear": _bilinear_axis}[filter]
        self._narrow: list[np.ndarray] = []

    def add(self, rows: np.ndarray, chunk: int = 64) -> None:
        self._narrow += [self._axis(rows[r : r + chunk], 1, self.size[1]) for r in range(0, rows.shape[0], chunk)]

    def result(self) -> np.ndarray:
        """(h, w, C) float32."""
        return self._axis(np.concatenate(self._narrow), 0, self.size[0]).astype(np.float32)


def thumbnail(image: np.ndarray, size: tuple[int, int], filter: str = "area", band: int = 256) -> np.ndarray:
    """(h, w, C) float32: ``image`` resampled to ``size`` (:class:`Thumbnail`'s filters), columns first
    in bands of ``band`` rows (never the whole image in float), then rows."""
    thumb = Thumbnail(size, filter)
    thumb.add(image, band)
    return thumb.result()


def metric_thumbnail_size(height: int, width: int, metric: tuple[int, int]) -> tuple[int, int]:
    """The size a poster's metrics thumbnails are made at: the loss meter's ``metric`` size, or the
    image's own where that is larger (the meter then resizes both as it would the whole image)."""
    return metric if metric[0] <= height and metric[1] <= width else (height, width)


class TotalVariation:
    """:func:`stylize_core.losses.tv_loss` of an image given as bands of rows, top to bottom (the
    float rows :func:`assemble` finishes, before rounding): the mean absolute difference between
    vertical neighbours plus that between horizontal ones, summed in float64 across the bands, the
    pair that straddles two bands included. Holds one row."""

    def __init__(self) -> None:
        self._last: np.ndarray | None = None
        self._dy = self._dx = 0.0
        self._ny = self._nx = 0

    def add(self, rows: np.ndarray, chunk: int = 256) -> None:
        """The next band: (h, W, C) float rows of the image, in 0..255 (``chunk`` rows at a time, so
        the differences never take more than a few chunks' memory)."""
        for r in range(0, rows.shape[0], chunk):
            part = np.asarray(rows[r : r + chunk], dtype=np.float32)
            above = part if self._last is None else np.concatenate([self._last, part])
            dy = np.abs(np.diff(above, axis=0))
            dx = np.abs(np.diff(part, axis=1))
            self._dy, self._ny = self._dy + float(dy.sum(dtype=np.float64)), self._ny + dy.size
            self._dx, self._nx = self._dx + float(dx.sum(dtype=np.float64)), self._nx + dx.size
            self._last = part[-1:].copy()

    @property
    def value(self) -> float:
        """The image's TV so far (a direction with no neighbouring pairs adds 0, as tv_loss's does)."""
        return (self._dy / self._ny if self._ny else 0.0) + (self._dx / self._nx if self._nx else 0.0)
