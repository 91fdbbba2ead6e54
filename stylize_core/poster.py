"""One image stylised as tiles that may run in different processes (``--split-pixels``,
:mod:`jobs.batch.poster`): the plan, the padded input and its thumbnail, the thumbnail's
normalisation statistics (recorded once, then shipped as arrays), and one tile's weighted output.

The same arithmetic as :class:`~stylize_core.tiling.TiledNetwork` with thumbnail statistics, cut
where processes can share it: the image is reflection-padded to the network's grid as the Stylizer
pads it, windows come from :func:`~stylize_core.tiling.axis_windows`, the thumbnail is the area
average :func:`~stylize_core.tiling.thumbnail_size` gives (computed in bands, exactly, so the full
image is never held as float), and a tile's output is multiplied by its blend weights before it
leaves, so the writer (:func:`stylize_core.poster_plan.assemble`) only sums.

Style networks only: a network without norm layers runs its tiles on their own, and one whose output
is larger than its input (super-resolution) is refused (:class:`PosterUnsupported`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .bucketing import network_side, pad_amounts
from .enhance_net import output_scale
from .loss_meter import LossMeter
from .norm_stats import SharedStats, norm_layers
from .poster_plan import PosterPlan
from .tiling import DEFAULT_MARGIN, axis_windows

Stats = list[tuple[np.ndarray, np.ndarray]] | None  # SharedStats.export(); None: a network without norm layers
# (y, x) -> y: the Stylizer's per-pixel finishing (preserve colour, strength) of output y of input x
Finish = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class PosterUnsupported(ValueError):
    """The network cannot run as a poster's tiles."""

    error_type = "poster_unsupported"


# --tileable posters: the pixels of the image's opposite edges laid around it, at least this many on each
# side. The tiles then see every output pixel's wrapped neighbourhood as a wrap-around tiling would; a
# tile's own padding only reaches its first margin's pixels, and the edges are two margins away.
WRAP_PAD = 2 * DEFAULT_MARGIN


def plan_poster(height: int, width: int, side: int, wrap: bool = False) -> PosterPlan:
    """The tiles of an image of this (decoded) size with tiles of at most ``side`` (a multiple of 4).
    ``wrap`` (``--tileable``): padded by at least :data:`WRAP_PAD` with the opposite edges' pixels."""
    extra = 2 * WRAP_PAD if wrap else 0
    padded = network_side(height + extra), network_side(width + extra)
    (top, bottom), (left, right) = pad_amounts(height, padded[0]), pad_amounts(width, padded[1])
    rows, cols = (tuple((w.start, w.length) for w in axis_windows(n, side)) for n in padded)
    return PosterPlan(height, width, (top, bottom, left, right), side, rows, cols, wrap)


def padded_input(pixels: np.ndarray, plan: PosterPlan) -> np.ndarray:
    """(H, W, C) pixels padded as :func:`stylize_core.bucketing.pad_to` pads (reflection; edge
    replication where reflection cannot reach), or with a ``wrap`` plan by the opposite edges."""
    if pixels.shape[:2] != (plan.height, plan.width):
        raise ValueError(f"pixels are {pixels.shape[1]}x{pixels.shape[0]}, the plan {plan.width}x{plan.height}")
    top, bottom, left, right = plan.pads
    if not any(plan.pads):
        return pixels
    mode = "reflect" if max(top, bottom) < plan.height and max(left, right) < plan.width else "edge"
    return np.pad(pixels, ((top, bottom), (left, right), (0, 0)), mode="wrap" if plan.wrap else mode)


def _batch(pixels: np.ndarray, device: torch.device, memory_format: torch.memory_format) -> torch.Tensor:
    """(H, W, 3) uint8 or float32 0..255 -> (1, 3, H, W) float32 on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(device).permute(2, 0, 1)[None].float()
    return x.contiguous(memory_format=memory_format)


def check_network(net: nn.Module) -> None:
    if output_scale(net) != 1:
        raise PosterUnsupported(f"a network whose output is {output_scale(net)}x its input cannot run as poster tiles")


@torch.inference_mode()
def record_stats(net: nn.Module, thumbnail: np.ndarray, device: torch.device,
                 memory_format: torch.memory_format = torch.contiguous_format) -> Stats:
    """Every norm layer's statistics of ``net`` over the (h, w, 3) thumbnail, as arrays (None: no norm layers)."""
    check_network(net)
    if not norm_layers(net):
        return None
    shared = SharedStats()
    with shared.recording(net):
        net(_batch(thumbnail, device, memory_format))
    return shared.export(net)


@torch.inference_mode()
def run_tile(net: nn.Module, tile: np.ndarray, stats: Stats, plan: PosterPlan, t: int, device: torch.device,
             finish: Finish | None = None, memory_format: torch.memory_format = torch.contiguous_format,
             mask: np.ndarray | None = None, unmasked: bool = False) -> np.ndarray:
    """Tile ``t``'s output ((length, length, 3) float32, 0..255 before clamping) times its blend weights.
    ``tile``: its input (:meth:`PosterPlan.tile_of`); ``stats``: :func:`record_stats` of the same network.
    With ``mask`` ((length, length) weights in 0..1, cut as the input was), the output is composited
    over the input (``x + (clamp(y) - x) * mask``, as :func:`stylize_core.masks.composite` does it;
    linear in the output, so the tiles' weighted sum is the composite of their sum, up to where a
    tile's output left 0..255 inside an overlap); ``unmasked`` puts the network's own output first, for
    the metrics: (length, length, 6)."""
    check_network(net)
    (r0, _), (c0, _) = plan.window(t)
    rows, cols = (axis_windows(n, plan.side) for n in plan.padded)
    rw = next(w for w in rows if w.start == r0)
    cw = next(w for w in cols if w.start == c0)
    x = _batch(tile, device, memory_format)
    if stats is None:
        y = net(x)
    else:
        with SharedStats.load(net, stats, device).applying(net):
            y = net(x)
    y = y.float()
    if finish is not None:
        y = finish(y, x)
    if mask is not None:
        m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).to(y.device)
        composite = x + (y.clamp(0, 255) - x) * m
        y = torch.cat([y, composite], dim=1) if unmasked else composite
    weight = (rw.weight[:, None] * cw.weight[None, :]).to(y.device)
    return (y[0] * weight).permute(1, 2, 0).contiguous().cpu().numpy()


def measure_poster(meter: LossMeter, content: np.ndarray, output: np.ndarray, style: str, tv: float
                   ) -> dict[str, float]:
    """A poster's metrics, the columns every measured row has (``metrics_ms`` included): ``content`` and
    ``output`` are the input's and the output's (h, w, 3) thumbnails at the meter's metric size, made
    band by band with the resize the meter applies to a whole image
    (:class:`~stylize_core.poster_plan.Thumbnail`, ``"bilinear"``), ``tv`` the full-size output's total
    variation (:class:`~stylize_core.poster_plan.TotalVariation`), which replaces the thumbnail's."""
    x, y = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None] for a in (content, output))
    measured = {name: float(values[0]) for name, values in meter.measure([x], [y], style).items()}
    measured["tv_loss"] = float(tv)
    return measured
