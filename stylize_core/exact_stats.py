"""The whole image's instance-norm statistics, computed exactly from tiles: one pass per norm layer.

Thumbnail statistics (:class:`~stylize_core.norm_stats.SharedStats` recorded on a downscaled copy)
are an estimate that misses for networks whose output changes with the scale their statistics were
taken at (docs/benchmarks_large.md). The exact statistics need every layer's activations at full
resolution, which is what tiling avoids holding. They can be had layer by layer: norm layer ``k``'s
input depends only on the statistics of layers ``< k``; once those are exact, every tile's core
activations at layer ``k`` are the whole image's (away from the tile's edges the tile saw the same
pixels), so summing them over each tile's own core (every pixel once) gives layer ``k``'s exact
statistics. Then ``k + 1``, and so on.

:func:`transformer_stages` cuts a :class:`~stylize_core.transformer_net.TransformerNet` into
stages, one per norm layer: a stage's input state ends with that layer's input (the pre-norm
tensor; inside a residual block the block's input rides along for the skip), and the stage
normalises, activates and runs the convolutions up to the next norm layer's input. Layer ``k``'s
statistics then come straight from the states entering stage ``k``, and the tiles advance one stage
per layer. :class:`ExactTiles` keeps every tile's state in memory while the states of all
tiles fit ``cache_bytes``; otherwise it keeps the last states that fitted (or none: the tiles of
the input) and recomputes from there, so memory stays within the budget and time grows instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .norm_stats import SharedStats
from .transformer_net import TransformerNet

State = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Stage:
    """``run`` maps the state entering this stage to the state entering the next; ``norm`` is the
    norm layer whose input is the state's last tensor (None for the first stage, the network's input)."""

    norm: nn.Module | None
    run: Callable[[State], State]


def transformer_stages(net: TransformerNet, style: torch.Tensor | None = None) -> list[Stage]:
    """``net`` as one stage per norm layer (see the module doc); running them all in order is
    ``net(x, style)``, the first stage taking ``(x,)`` and the last returning ``(output,)``."""
    if not isinstance(net, TransformerNet):
        raise ValueError(f"exact tile statistics need a TransformerNet, not {type(net).__name__}")
    relu = net.relu
    blocks = [getattr(net, f"res{i}") for i in range(1, net.arch.blocks + 1)]

    def enter(y: torch.Tensor, i: int) -> State:
        """The state entering residual block ``i`` (or the decoder past the last): (skip, pre-norm)."""
        return (y, blocks[i].conv1(y)) if i < len(blocks) else (net.deconv1(y),)

    stages = [
        Stage(None, lambda s: (net.conv1(s[0]),)),  # (1, c1, H, W)
        Stage(net.in1, lambda s: (net.conv2(relu(net.in1(s[0], style))),)),  # (1, c2, H/2, W/2)
        Stage(net.in2, lambda s: (net.conv3(relu(net.in2(s[0], style))),)),  # (1, c3, H/4, W/4)
        Stage(net.in3, lambda s: enter(relu(net.in3(s[0], style)), 0)),
    ]
    for i, b in enumerate(blocks):
        stages.append(Stage(b.in1, lambda s, b=b: (s[0], b.conv2(b.relu(b.in1(s[1], style))))))
        stages.append(Stage(b.in2, lambda s, b=b, i=i: enter(s[0] + b.in2(s[1], style), i + 1)))
    stages.append(Stage(net.in4, lambda s: (net.deconv2(relu(net.in4(s[0], style))),)))  # (1, c1, H, W)
    stages.append(Stage(net.in5, lambda s: (net.deconv3(relu(net.in5(s[0], style))),)))  # (1, 3, H, W)
    return stages


def _state_bytes(state: State) -> int:
    return sum(t.numel() * t.element_size() for t in state)


class _Moments:
    """Per-channel count, mean and sum of squared deviations, merged tile by tile (Chan et al.'s
    parallel update, in float64: no cancellation between the sum of squares and the squared mean)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, region: torch.Tensor) -> None:  # (1, C, h, w)
        n = region.shape[-1] * region.shape[-2]
        if n == 0:
            return
        var, mean = torch.var_mean(region.float(), dim=(2, 3), unbiased=False)  # (1, C) each
        mean, m2 = mean.double(), var.double() * n
        if self.mean is None or self.m2 is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.n * n / total)
        self.n = total

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean is None or self.m2 is None:
            raise RuntimeError("no pixels were accumulated")
        return self.mean.float(), (self.m2 / self.n).float()


class ExactTiles:
    """The tiles of one image run stage by stage: :meth:`statistics` fixes every norm layer's
    statistics over the whole image, then :meth:`output` runs each tile to the end with them.

    ``tiles[t]()`` returns tile ``t`` of the input, (1, 3, th, tw); ``owned[t]`` is the part of it
    that it alone accounts for, (top, bottom, left, right) in tile pixels, multiples of 4 (so every
    resolution of the network cuts it on whole pixels); together the owned parts cover the image
    once. ``cache_bytes``: how much the tiles' states may hold between stages (0: recompute every
    layer from the input tiles).
    """

    def __init__(self, stages: Sequence[Stage], tiles: Sequence[Callable[[], torch.Tensor]],
                 tile_shape: tuple[int, int], owned: Sequence[tuple[int, int, int, int]], cache_bytes: int) -> None:
        self.stages, self.tiles, self.owned, self.cache_bytes = list(stages), tiles, owned, cache_bytes
        self.tile_shape = tile_shape  # (th, tw): every tile's size
        # per tile: (index of the stage its kept state enters, the state); None: the input tile itself
        self.kept: list[tuple[int, State] | None] = [None] * len(tiles)
        # stage runs, over all tiles: len(stages) x tiles when every state fits (one pass), more when
        # layers are recomputed from older states (benchmarks report the ratio)
        self.stage_runs = 0

    def _advance(self, t: int, upto: int) -> State:
        at, state = self.kept[t] or (0, (self.tiles[t](),))
        for stage in self.stages[at:upto]:
            state = stage.run(state)
            self.stage_runs += 1
        return state

    def statistics(self, shared: SharedStats) -> None:
        """Fill ``shared.stats`` layer by layer; call inside ``shared.applying(net)``."""
        for k in range(1, len(self.stages)):
            moments = _Moments()
            keep = False
            for t, (top, bottom, left, right) in enumerate(self.owned):
                state = self._advance(t, k)
                if t == 0:  # every tile's state has the same shapes: the first says whether all fit
                    keep = _state_bytes(state) * len(self.tiles) <= self.cache_bytes
                if keep:
                    self.kept[t] = (k, state)  # replaces the older one: one set in memory (plus a tile)
                pre = state[-1]  # (1, C, th / f, tw / f): this layer's input
                th, tw = self.tile_shape
                ph, pw = pre.shape[-2:]
                moments.add(pre[..., top * ph // th : bottom * ph // th, left * pw // tw : right * pw // tw])
            layer = self.stages[k].norm
            assert layer is not None
            shared.stats[layer] = moments.result()

    def output(self, t: int) -> torch.Tensor:
        """Tile ``t``'s output, from its kept state on; call inside ``shared.applying(net)``."""
        state = self._advance(t, len(self.stages))
        self.kept[t] = None
        return state[0]
