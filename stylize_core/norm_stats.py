"""Instance-norm statistics computed once and reused: how a style network runs on tiles of an image
as if it saw the whole image.

Every norm layer of :class:`~stylize_core.transformer_net.TransformerNet` (``InstanceNorm`` and the
multi-style ``ConditionalInstanceNorm``) normalises each channel by its mean and variance over the
image. A tile on its own has other statistics than the whole image, so tiles stylised independently
disagree and their borders show. :class:`SharedStats` swaps the per-call statistics for stored ones
(URST, Chen et al. 2022): :meth:`SharedStats.recording` runs the network once on a thumbnail of the
whole image and keeps every layer's per-channel mean and variance, and :meth:`SharedStats.applying`
runs it on tiles that normalise with those.

Thumbnail statistics are an estimate: a layer's statistics at 1/k scale equal the full-size ones only
for content whose statistics do not change with scale. :meth:`SharedStats.accumulating` refines them
(the other estimate issue 19 names): a pass over the tiles that normalises with the current estimate
and sums each layer's raw values over the part of the image each tile owns, so every pixel counts
once; :meth:`SharedStats.finish_accumulation` turns those sums into the new statistics. Later layers'
sums still depend on earlier layers' estimates, so one pass is an approximation that
``benchmarks/bench_large.py`` measures against the untiled output.

The hook is an attribute of the norm modules (``shared_stats``), set only inside these context
managers, so a network is never left changed; one network must not run two such contexts at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from .transformer_net import ConditionalInstanceNorm, InstanceNorm

_NORMS = (InstanceNorm, ConditionalInstanceNorm)


def norm_layers(net: nn.Module) -> list[nn.Module]:
    """The instance-norm layers of ``net`` whose statistics :class:`SharedStats` can hold, in order."""
    return [m for m in net.modules() if isinstance(m, _NORMS)]


class SharedStats:
    """Per-channel mean and variance of every norm layer of one network, for one image.

    Statistics are float32 tensors of shape (B, C) (B = 1 for one image), on the activations' device.
    """

    def __init__(self) -> None:
        self.stats: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
        self._mode = ""
        # accumulating: the region of the current tile that it owns, as fractions of the tile's sides
        # (top, bottom, left, right), and per layer the running (count, sum, sum of squares)
        self._owned = (0.0, 1.0, 0.0, 1.0)
        self._sums: dict[nn.Module, list] = {}

    def __len__(self) -> int:
        return len(self.stats)

    # --- the hook the norm layers call -----------------------------------------------------------

    def normalize(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, H, W) normalised per channel with this layer's statistics (recording: its own)."""
        xf = x.float()
        if self._mode == "record":
            var, mean = torch.var_mean(xf, dim=(2, 3), unbiased=False)  # (B, C) each
            self.stats[layer] = (mean, var)
        elif layer not in self.stats:
            raise RuntimeError("this network has a norm layer without shared statistics: record them first, "
                               "with the same network")
        mean, var = self.stats[layer]
        if self._mode == "accumulate":
            self._accumulate(layer, xf)
        eps = float(getattr(layer, "eps", 1e-5))
        y = (xf - mean[:, :, None, None]) * torch.rsqrt(var[:, :, None, None] + eps)
        return y.to(x.dtype)

    def _accumulate(self, layer: nn.Module, xf: torch.Tensor) -> None:
        h, w = xf.shape[-2:]
        top, bottom, left, right = self._owned
        region = xf[..., round(top * h) : round(bottom * h), round(left * w) : round(right * w)]
        sums = self._sums.setdefault(layer, [0, 0.0, 0.0])
        sums[0] += region.shape[-1] * region.shape[-2]
        sums[1] = sums[1] + region.sum(dim=(2, 3), dtype=torch.float64)
        sums[2] = sums[2] + region.double().square().sum(dim=(2, 3))

    # --- running a network with them ---------------------------------------------------------------

    @contextlib.contextmanager
    def _hooked(self, net: nn.Module, mode: str) -> Iterator[SharedStats]:
        layers = norm_layers(net)
        if not layers:
            raise ValueError(f"{type(net).__name__} has no instance-norm layers to share statistics between")
        busy = [m for m in layers if m.shared_stats is not None]
        if busy:
            raise RuntimeError("this network is already running with shared statistics")
        self._mode = mode
        try:
            for m in layers:
                m.shared_stats = self
            yield self
        finally:
            for m in layers:
                m.shared_stats = None
            self._mode = ""

    def recording(self, net: nn.Module) -> contextlib.AbstractContextManager[SharedStats]:
        """Inside: ``net(x)`` normalises as usual and stores every layer's statistics of ``x``."""
        self.stats.clear()
        return self._hooked(net, "record")

    def applying(self, net: nn.Module) -> contextlib.AbstractContextManager[SharedStats]:
        """Inside: ``net(tile)`` normalises with the stored statistics instead of the tile's own."""
        return self._hooked(net, "apply")

    def accumulating(self, net: nn.Module) -> contextlib.AbstractContextManager[SharedStats]:
        """Inside: as :meth:`applying`, and each ``net(tile)`` after :meth:`own` adds the owned
        region's raw values to every layer's sums; :meth:`finish_accumulation` then replaces the
        statistics by those sums' mean and variance."""
        self._sums.clear()
        return self._hooked(net, "accumulate")

    def own(self, top: float, bottom: float, left: float, right: float) -> None:
        """The region of the next tile that it alone covers, as fractions of the tile's height and
        width (each layer scales it to its own resolution)."""
        self._owned = (top, bottom, left, right)

    def finish_accumulation(self) -> None:
        """Replace every layer's statistics by the mean and variance accumulated over the tiles."""
        if set(self._sums) != set(self.stats):
            raise RuntimeError("accumulation did not reach every norm layer: run the tiles inside accumulating()")
        for layer, (n, total, squares) in self._sums.items():
            mean = total / n
            var = (squares / n - mean.square()).clamp_min(0)
            old_mean, _ = self.stats[layer]
            self.stats[layer] = (mean.to(old_mean), var.to(old_mean))
        self._sums.clear()

    # --- between processes -----------------------------------------------------------------------

    def export(self, net: nn.Module) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every norm layer's (mean, var) in :func:`norm_layers` order, as float32 NumPy arrays: what
        another process holding the same network :meth:`load`\ s (the layers themselves do not travel)."""
        layers = norm_layers(net)
        if set(layers) != set(self.stats):
            raise RuntimeError("these statistics are not this network's: record them with it first")
        return [tuple(t.detach().float().cpu().numpy() for t in self.stats[m]) for m in layers]  # type: ignore[misc]

    @classmethod
    def load(cls, net: nn.Module, arrays: list[tuple[np.ndarray, np.ndarray]], device: torch.device | str = "cpu"
             ) -> SharedStats:
        """Statistics :meth:`export` made from the same network (in another process), for ``net``."""
        layers = norm_layers(net)
        if len(layers) != len(arrays):
            raise ValueError(f"{len(arrays)} layers of statistics for a network with {len(layers)} norm layers")
        shared = cls()
        for m, (mean, var) in zip(layers, arrays):
            shared.stats[m] = (torch.as_tensor(mean, device=device), torch.as_tensor(var, device=device))
        return shared

