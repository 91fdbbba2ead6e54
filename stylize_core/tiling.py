"""Stylising an image in overlapping tiles that look like one pass over the whole image.

:class:`TiledNetwork` wraps a feed-forward style network (any module whose normalisation is the
instance norm of :mod:`stylize_core.transformer_net`): it takes every norm layer's statistics either
exactly, layer by layer over the tiles (``stats="exact"``, :mod:`stylize_core.exact_stats`), or from
a thumbnail of the whole image (:class:`~stylize_core.norm_stats.SharedStats`; ``"accumulate"``
refines those over the tiles in one pass), then runs overlapping tiles that normalise with them and
blends the overlaps. Memory is one tile's activations plus the full-size input and output (exact:
plus the tiles' states between layers, as far as ``cache_bytes`` allows). Networks without norm
layers (the enhancement networks of :mod:`stylize_core.enhance_net`) share nothing: their tiles run
on their own, and a super-resolution network's are placed at its output scale.

Tiles along each axis (:func:`axis_windows`):

- Windows start at multiples of :data:`~stylize_core.transformer_net.SIZE_MULTIPLE` and have sides
  that are multiples of it, so a tile's stride-2 convolutions and nearest upsampling sample the same
  grid as the whole image does: in a tile's interior the output is the whole image's output.
- Near a tile's edge the network sees its padding instead of the neighbouring pixels. The first
  ``margin`` pixels inside every edge shared with a neighbour get weight 0; the next pixels ramp up
  with a raised cosine (sin^2) over the rest of the overlap, while the neighbour ramps down (cos^2)
  over the same pixels, so the weights sum to exactly 1 everywhere (no normalisation buffer).
- ``wrap=True`` treats the image as a torus (``--tileable``): windows run off one side and in at
  the other, so the output's last column continues into its first and the result tiles seamlessly.
  Wrapped windows need not be multiples of 4 apart (the image need not be), only the tiles.

:func:`set_padding` switches the network's own padding between reflection and circular
(``--tileable`` with an image that fits in one pass: a circularly padded network on sides that are
multiples of 4 is exactly periodic). :func:`seam_ratio` and :func:`wrap_ratio` measure what the
tests and ``benchmarks/bench_large.py`` check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .exact_stats import ExactTiles, transformer_stages
from .enhance_net import output_scale
from .norm_stats import SharedStats, norm_layers
from .transformer_net import SIZE_MULTIPLE

# Pixels inside a tile's edge whose output is discarded. The default network's receptive field is
# ~100 px across, but the padding's effect fades long before it: with the whole image's statistics,
# a 32 px margin gives outputs within 0.05 of a grey level of the untiled pass (tests).
DEFAULT_MARGIN = 32
# Pixels over which neighbouring tiles cross-fade (at least; windows are spread evenly, so more).
DEFAULT_FEATHER = 32
STATS_MODES = ("thumbnail", "exact", "accumulate")


def _floor4(v: float) -> int:
    return int(v // SIZE_MULTIPLE) * SIZE_MULTIPLE


def _ceil4(v: float) -> int:
    return -(-int(math.ceil(v)) // SIZE_MULTIPLE) * SIZE_MULTIPLE


@dataclass(frozen=True)
class Window:
    """One tile's extent along one axis: ``start`` (may pass the end with ``wrap``), ``length``, the
    blend ``weight`` of each of its pixels, and the part ``[own_lo, own_hi)`` (tile coordinates) that
    it alone accounts for when statistics are accumulated."""

    start: int
    length: int
    weight: torch.Tensor  # (length,) float32
    own_lo: int
    own_hi: int

    def owned(self) -> tuple[int, int]:
        """``[own_lo, own_hi)`` cut at multiples of 4 (tiles start at multiples of 4): at every
        resolution of the network (1, 1/2, 1/4) the cut falls on a whole pixel, so neighbouring
        tiles' owned parts meet without a gap or an overlap there too."""
        return _floor4(self.own_lo), _floor4(self.own_hi)


def thumbnail_size(height: int, width: int, pixels: int) -> tuple[int, int]:
    """The (height, width) of the thumbnail whose statistics tiles share: at most ``pixels``, the
    image's aspect, sides multiples of 4 of at least 16 (an image of such sides that is small enough: its own)."""
    scale = min(1.0, math.sqrt(pixels / (height * width)))
    return max(SIZE_MULTIPLE * 4, _floor4(height * scale)), max(SIZE_MULTIPLE * 4, _floor4(width * scale))


def min_tile(margin: int = DEFAULT_MARGIN, feather: int = DEFAULT_FEATHER) -> int:
    """The smallest tile side: twice the overlap of two tiles, so a tile's two cross-fades never meet."""
    return 2 * (2 * margin + feather)


def _ramp(n: int) -> torch.Tensor:
    """(n,) sin^2 ramp from ~0 to ~1 at pixel centres; ``1 - ramp`` is its mirror image."""
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.sin(t * math.pi / 2) ** 2


def axis_windows(size: int, tile: int, margin: int = DEFAULT_MARGIN, feather: int = DEFAULT_FEATHER,
                 wrap: bool = False, scale: int = 1) -> list[Window]:
    """The windows covering ``[0, size)`` with tiles of at most ``tile`` pixels (see the module doc).

    Without ``wrap``, ``size`` and ``tile`` must be multiples of 4 and a size that fits in one tile
    gets one window of weight 1. With ``wrap`` every window has neighbours on both sides (itself,
    when one window covers the whole axis), any ``size`` is allowed, and the windows sum to 1 modulo
    ``size``. ``scale``: the same windows placed on an output ``scale`` times the input's size (a
    super-resolution network's): starts, lengths, margins and owned parts times ``scale``, weights
    ramped over the output's pixels (they still sum to exactly 1).
    """
    overlap = 2 * margin + feather
    if tile % SIZE_MULTIPLE or tile < min_tile(margin, feather):
        raise ValueError(f"tile side {tile} must be a multiple of {SIZE_MULTIPLE} of at least "
                         f"{min_tile(margin, feather)} (twice the overlap: 2 x margin {margin} + feather {feather})")
    if wrap:
        n = max(1, math.ceil(size / (tile - overlap - SIZE_MULTIPLE)))
        length = min(tile, _ceil4(math.ceil(size / n) + overlap + SIZE_MULTIPLE))
        starts = [_floor4(i * size / n) for i in range(n)] + [size]  # the last: the first, one turn on
        prev = [(starts[n - 1] - size) if i == 0 else starts[i - 1] for i in range(n)]
        nxt = starts[1:]
    else:
        if size % SIZE_MULTIPLE:
            raise ValueError(f"size {size} must be a multiple of {SIZE_MULTIPLE} (or use wrap)")
        if size <= tile:
            return [Window(0, size * scale, torch.ones(size * scale), 0, size * scale)]
        n = math.ceil((size - overlap) / (tile - overlap))
        length = min(tile, _ceil4(math.ceil((size - overlap) / n) + overlap + SIZE_MULTIPLE))
        starts = [_floor4(i * (size - length) / (n - 1)) for i in range(n - 1)] + [size - length]
        prev = [None] + starts[:-1]
        nxt = starts[1:] + [None]
    if scale != 1:  # the same layout on the output's grid
        length, margin = length * scale, margin * scale
        starts = [a * scale for a in starts]
        prev = [None if p is None else p * scale for p in prev]
        nxt = [None if p is None else p * scale for p in nxt]
    windows = []
    for i in range(n):
        a = starts[i]
        w = torch.ones(length, dtype=torch.float64)
        own_lo, own_hi = 0, length
        if prev[i] is not None:  # the seam with the window before: this one ramps up
            fade = prev[i] + length - a - 2 * margin
            if fade < 1:
                raise ValueError(f"windows overlap too little ({fade + 2 * margin} px) for margin {margin}")
            w[:margin] = 0
            w[margin : margin + fade] *= _ramp(fade)
            own_lo = margin + fade // 2
        if nxt[i] is not None:  # the seam with the window after: this one ramps down over the same pixels
            lo = nxt[i] - a + margin
            fade = length - margin - lo
            if fade < 1 or lo < own_lo:
                raise ValueError(f"windows of {length} px {nxt[i] - a} px apart cannot cross-fade with margin {margin}")
            w[lo : lo + fade] *= 1 - _ramp(fade)
            w[length - margin :] = 0
            own_hi = lo + fade // 2
        windows.append(Window(a, length, w.float(), own_lo, own_hi))
    return windows


def seam_positions(windows: Sequence[Window], size: int) -> list[int]:
    """Where neighbouring tiles' contributions meet along an axis: for every seam the first pixel of
    its cross-fade, its middle and the first pixel after it (positions in ``[1, size)``)."""
    found: set[int] = set()
    for win in windows:
        w = win.weight
        inside = (w > 0) & (w < 1)
        idx = torch.nonzero(inside).flatten().tolist()
        if not idx:
            continue
        runs, run = [], [idx[0]]
        for j in idx[1:]:
            if j == run[-1] + 1:
                run.append(j)
            else:
                runs.append(run)
                run = [j]
        runs.append(run)
        for run in runs:
            for p in (run[0], (run[0] + run[-1] + 1) // 2, run[-1] + 1):
                found.add((win.start + p) % size)
    return sorted(p for p in found if 0 < p < size)


class TiledNetwork:
    """``net`` applied to (B, 3, H, W) images tile by tile with shared instance-norm statistics.

    ``tile``: the largest tile side (a multiple of 4); images that fit in one tile (and are not
    ``wrap``) run whole. ``stats``: ``"thumbnail"`` (statistics of a downscaled copy of at most
    ``thumbnail_pixels``, default one tile's area), ``"exact"`` (the whole image's, layer by layer
    over the tiles, :mod:`stylize_core.exact_stats`; a TransformerNet only; the tiles' intermediate
    states may hold ``cache_bytes``, beyond which layers are recomputed from the input tiles) or
    ``"accumulate"`` (thumbnail statistics refined by one pass over the tiles: twice the tile work,
    not self-consistent; measured worse). ``wrap``: wrap-around tiles (seamless output).
    Called under the caller's autocast and inference mode; ``last_tiles`` is the number of tiles the
    last image ran as.
    """

    def __init__(self, net: nn.Module, tile: int, *, margin: int = DEFAULT_MARGIN, feather: int = DEFAULT_FEATHER,
                 stats: str = "thumbnail", thumbnail_pixels: int | None = None, wrap: bool = False,
                 cache_bytes: int = 0) -> None:
        if stats not in STATS_MODES:
            raise ValueError(f"unknown statistics mode {stats!r}: one of {STATS_MODES}")
        axis_windows(tile, tile, margin, feather)  # validates tile against margin and feather
        self.net, self.tile, self.margin, self.feather = net, tile, margin, feather
        self.stats_mode, self.wrap = stats, wrap
        # Enhancement networks: outputs at ``scale`` x the input, and no norm layers, so no statistics
        # to share: their tiles run on their own (a tile's interior sees what the whole image's does).
        self.scale, self.norms = output_scale(net), bool(norm_layers(net))
        self.thumbnail_pixels = thumbnail_pixels or tile * tile
        self.cache_bytes = cache_bytes
        self.last_tiles = 0
        # exact: the last image's stage runs (ExactTiles.stage_runs) and statistics
        self.last_stage_runs, self.last_stats = 0, SharedStats()

    def windows(self, height: int, width: int, scale: int = 1) -> tuple[list[Window], list[Window]]:
        """The (rows, columns) windows of an image of this size; with ``scale``, on the output's grid."""
        return (axis_windows(height, self.tile, self.margin, self.feather, self.wrap, scale),
                axis_windows(width, self.tile, self.margin, self.feather, self.wrap, scale))

    def count(self, height: int, width: int) -> int:
        """Tiles an image of this size runs as."""
        rows, cols = self.windows(height, width)
        return len(rows) * len(cols)

    def __call__(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        outs = [self._one(x[b : b + 1], style) for b in range(x.shape[0])]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _net(self, x: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        return self.net(x) if style is None else self.net(x, style)

    def thumbnail(self, x: torch.Tensor) -> torch.Tensor:
        """(1, C, h, w): ``x`` area-averaged to at most ``thumbnail_pixels``, sides multiples of 4."""
        h, w = x.shape[-2:]
        size = thumbnail_size(h, w, self.thumbnail_pixels)
        if size == (h, w):
            return x
        return F.interpolate(x.float(), size=size, mode="area").to(x.dtype)

    def _one(self, x: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        h, w = x.shape[-2:]
        rows, cols = self.windows(h, w)
        self.last_tiles = len(rows) * len(cols)
        if self.last_tiles == 1 and not self.wrap:
            return self._net(x, style)
        if not self.norms:
            return self._independent(x, rows, cols, style)
        if self.stats_mode == "exact":
            return self._exact(x, rows, cols, style)
        shared = SharedStats()
        with shared.recording(self.net):
            self._net(self.thumbnail(x), style)
        if self.stats_mode == "accumulate":
            with shared.accumulating(self.net):
                for rw in rows:
                    for cw in cols:
                        (top, bottom), (left, right) = rw.owned(), cw.owned()
                        shared.own(top / rw.length, bottom / rw.length, left / cw.length, right / cw.length)
                        self._net(self._tile(x, rw, cw), style)
            shared.finish_accumulation()
        out: torch.Tensor | None = None
        with shared.applying(self.net):
            for rw in rows:
                for cw in cols:
                    out = self._blend(out, self._net(self._tile(x, rw, cw), style), rw, cw, h, w)
        assert out is not None
        return out  # (1, C', H, W) float32

    def _independent(self, x: torch.Tensor, rows: list[Window], cols: list[Window], style: torch.Tensor | None
                     ) -> torch.Tensor:
        """Tiles of a network without norm layers, placed at its output scale."""
        h, w = x.shape[-2:]
        s = self.scale
        out_rows, out_cols = self.windows(h, w, s)
        out: torch.Tensor | None = None
        for rw, ro in zip(rows, out_rows):
            for cw, co in zip(cols, out_cols):
                out = self._blend(out, self._net(self._tile(x, rw, cw), style), ro, co, h * s, w * s)
        assert out is not None
        return out  # (1, C', sH, sW) float32

    def _exact(self, x: torch.Tensor, rows: list[Window], cols: list[Window], style: torch.Tensor | None
               ) -> torch.Tensor:
        h, w = x.shape[-2:]
        tiles = [(rw, cw) for rw in rows for cw in cols]
        # Owned parts cut at multiples of 4, so every resolution of the network (1, 1/2, 1/4) cuts
        # them on whole pixels; neighbours' cuts agree because tiles start at multiples of 4.
        owned = [(*rw.owned(), *cw.owned()) for rw, cw in tiles]
        run = ExactTiles(transformer_stages(self.net, style),  # type: ignore[arg-type]
                         [lambda rw=rw, cw=cw: self._tile(x, rw, cw) for rw, cw in tiles],
                         (rows[0].length, cols[0].length), owned, self.cache_bytes)
        shared = SharedStats()
        out: torch.Tensor | None = None
        with shared.applying(self.net):
            run.statistics(shared)
            for t, (rw, cw) in enumerate(tiles):
                out = self._blend(out, run.output(t), rw, cw, h, w)
        self.last_stage_runs, self.last_stats = run.stage_runs, shared
        assert out is not None
        return out  # (1, C', H, W) float32

    def _blend(self, out: torch.Tensor | None, y: torch.Tensor, rw: Window, cw: Window, h: int, w: int
               ) -> torch.Tensor:
        """``out`` (created at the first tile) plus tile output ``y`` (1, C', th, tw) times its weights."""
        if out is None:
            out = torch.zeros((1, y.shape[1], h, w), dtype=torch.float32, device=y.device)
        weight = rw.weight.to(y.device)[:, None] * cw.weight.to(y.device)[None, :]
        self._add(out, y.float() * weight, rw, cw)
        return out

    def _indices(self, win: Window, size: int, device: torch.device) -> torch.Tensor | slice:
        if win.start >= 0 and win.start + win.length <= size:
            return slice(win.start, win.start + win.length)
        return (torch.arange(win.start, win.start + win.length, device=device) % size)

    def _tile(self, x: torch.Tensor, rw: Window, cw: Window) -> torch.Tensor:
        h, w = x.shape[-2:]
        r, c = self._indices(rw, h, x.device), self._indices(cw, w, x.device)
        t = x[:, :, r] if isinstance(r, slice) else x.index_select(2, r)
        t = t[:, :, :, c] if isinstance(c, slice) else t.index_select(3, c)
        return t.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) else t.contiguous()

    def _add(self, out: torch.Tensor, y: torch.Tensor, rw: Window, cw: Window) -> None:
        h, w = out.shape[-2:]
        r, c = self._indices(rw, h, out.device), self._indices(cw, w, out.device)
        if isinstance(r, slice) and isinstance(c, slice):
            out[:, :, r, c] += y
            return
        rr = torch.arange(h, device=out.device)[r] if isinstance(r, slice) else r
        cc = torch.arange(w, device=out.device)[c] if isinstance(c, slice) else c
        out.index_put_((torch.arange(out.shape[0], device=out.device)[:, None, None, None],
                        torch.arange(out.shape[1], device=out.device)[None, :, None, None],
                        rr[None, None, :, None], cc[None, None, None, :]), y, accumulate=True)


# --- padding -----------------------------------------------------------------------------------------


def set_padding(net: nn.Module, mode: str) -> nn.Module:
    """Switch every reflection/circular padding layer of ``net`` to ``mode`` ("reflect" or "circular"),
    in place; returns ``net``. Circular padding makes a network's output periodic when its input is
    (sides multiples of 4)."""
    kinds = {"reflect": nn.ReflectionPad2d, "circular": nn.CircularPad2d}
    if mode not in kinds:
        raise ValueError(f"unknown padding {mode!r}: one of {sorted(kinds)}")
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, (nn.ReflectionPad2d, nn.CircularPad2d)) and not isinstance(child, kinds[mode]):
                setattr(module, name, kinds[mode](child.padding))
    return net


# --- measuring ---------------------------------------------------------------------------------------


def _mean_step(img: torch.Tensor, axis: int, at: Sequence[int]) -> float:
    """Mean absolute difference between pixel p and p - 1 along ``axis`` (0 rows, 1 columns), over ``at``."""
    idx = torch.as_tensor(list(at))
    a = img.index_select(axis, idx)
    b = img.index_select(axis, idx - 1)
    return float((a - b).abs().mean())


def seam_ratio(image, rows: Sequence[int], cols: Sequence[int], near: int = 6) -> float:
    """Mean gradient across the given seam positions / mean gradient across the rows and columns
    within ``near`` pixels of them (not seams themselves). ``image`` is (H, W[, C]), any numeric
    type. 1.0: seams are as smooth as their surroundings."""
    img = torch.as_tensor(image).double()
    ratios = []
    for axis, seams in ((0, rows), (1, cols)):
        size = img.shape[axis]
        seams = [p for p in seams if 1 <= p < size]
        if not seams:
            continue
        taken = set(seams)
        around = sorted({q for p in seams for q in range(p - near, p + near + 1) if 1 <= q < size and q not in taken})
        across, beside = _mean_step(img, axis, seams), _mean_step(img, axis, around)
        ratios.append(across / beside if beside > 0 else float("inf") if across > 0 else 1.0)
    if not ratios:
        raise ValueError("no seams inside the image to measure")
    return max(ratios)


def wrap_ratio(image) -> float:
    """How visible the seam is where copies of ``image`` (H, W[, C]) meet side by side or on top of
    each other: the mean difference between its last and first column (row) / the mean difference
    between neighbouring columns (rows) inside, the larger of the two axes."""
    img = torch.as_tensor(image).double()
    ratios = []
    for axis in (0, 1):
        n = img.shape[axis]
        first, last = img.narrow(axis, 0, 1), img.narrow(axis, n - 1, 1)
        across = float((first - last).abs().mean())
        inside = float((img.narrow(axis, 1, n - 1) - img.narrow(axis, 0, n - 1)).abs().mean())
        ratios.append(across / inside if inside > 0 else float("inf") if across > 0 else 1.0)
    return max(ratios)
