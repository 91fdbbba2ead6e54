"""Shape buckets: which images share a forward pass, and how each is padded to its bucket's shape.

A batch needs one shape. Same-sized images batch as they are; an image of another size joins a
bucket of a slightly larger shape by reflection padding (cropped back after the network) when the
padding stays within ``max_pad_fraction`` of the bucket's pixels.

Padding is not free of effects: instance norm averages over every pixel of the padded image, so
the mirrored border shifts each channel's mean and variance a little, and the network's receptive
field sees mirrored content near the edges. ``benchmarks/bench_bucketing.py`` measures the output
difference (cropped padded run vs the unpadded run) on photographs with the demo checkpoint, as a
function of the pad fraction; :data:`DEFAULT_MAX_PAD_FRACTION` is chosen from it (see docs/benchmarks.md,
"Bucket padding"). Planning here is pure Python, so it is tested without a GPU.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .transformer_net import SIZE_MULTIPLE

# The 9x9 reflection pad of the first layer needs sides > 4, and the two stride-2 layers need a few
# pixels left; smaller images are edge-padded up to this and cropped back.
MIN_SIDE = 16

# Share of a bucket's pixels that may be padding. Measured (bench_bucketing.py, demo checkpoint,
# float32, six skimage photos, 2026-12-01), mean |output difference| in grey levels against the
# unpadded run, at short side 512 / 256 / 96: 0.98 / 1.22 / 1.92 up to 3 % padding, 1.51 / 1.77 /
# 2.50 for 3-6 %, 2.63 / 2.66 / 3.48 for 6-10 %, 4.31 / 4.69 / 5.34 for 15-25 %; writing the
# unpadded output as JPEG q90 changes it by 1.05 / 1.16 / 1.35. Up to 6 % the change stays within
# ~1.5x what the output format itself costs (worst single image: mean 2.5 / 3.3 / 4.1), while still
# joining e.g. 500x375 with 512x384 (4.4 %). Sharp-edged styles move single pixels by up to ~130
# at any limit (a tile edge shifting by a pixel), so the limit follows the mean, not the max.
DEFAULT_MAX_PAD_FRACTION = 0.06


def network_side(size: int) -> int:
    """The side the network runs an image of side ``size`` at: a multiple of SIZE_MULTIPLE, >= MIN_SIDE."""
    return max(MIN_SIDE, -(-size // SIZE_MULTIPLE) * SIZE_MULTIPLE)


def pad_fraction(shape: tuple[int, int], bucket: tuple[int, int]) -> float:
    """Share of ``bucket``'s pixels that padding ``shape`` up to it adds (0 for the same shape)."""
    return 1.0 - (shape[0] * shape[1]) / (bucket[0] * bucket[1])


@dataclass(frozen=True)
class Batch:
    """One forward pass: the images at ``indices`` (input order), all padded to ``shape`` (H, W)."""

    shape: tuple[int, int]
    indices: tuple[int, ...]


def _bucket_shapes(shapes: Sequence[tuple[int, int]], max_pad_fraction: float) -> dict[tuple[int, int], tuple[int, int]]:
    """Map each distinct network shape to its bucket shape.

    Greedy, largest first: a shape joins the bucket whose grown shape (elementwise max) keeps every
    member within ``max_pad_fraction`` and adds the fewest padded pixels; else it opens a bucket.
    """
    counts = Counter(shapes)
    buckets: list[tuple[tuple[int, int], list[tuple[int, int]]]] = []  # (bucket shape, member shapes)
    for shape in sorted(counts, key=lambda s: (s[0] * s[1], s), reverse=True):
        best, best_cost = None, None
        for i, (bshape, members) in enumerate(buckets):
            grown = (max(bshape[0], shape[0]), max(bshape[1], shape[1]))
            if any(pad_fraction(m, grown) > max_pad_fraction for m in members + [shape]):
                continue
            # padded pixels added over every image of the bucket, the newcomer included
            cost = sum(counts[m] * (grown[0] * grown[1] - m[0] * m[1]) for m in members + [shape])
            cost -= sum(counts[m] * (bshape[0] * bshape[1] - m[0] * m[1]) for m in members)
            if best_cost is None or cost < best_cost:
                best, best_cost = i, cost
        if best is None:
            buckets.append((shape, [shape]))
        else:
            bshape, members = buckets[best]
            buckets[best] = ((max(bshape[0], shape[0]), max(bshape[1], shape[1])), members + [shape])
    return {m: bshape for bshape, members in buckets for m in members}


def plan_batches(
    shapes: Sequence[tuple[int, int]], *, max_batch: int, max_pixels: int, max_pad_fraction: float
) -> list[Batch]:
    """Group images of sizes ``shapes`` ((H, W) each) into forward passes.

    Each batch holds at most ``max_batch`` images and ``max_pixels`` pixels of its padded shape
    (at least one image). ``max_pad_fraction=0`` batches only images of the same network shape.
    Every index appears in exactly one batch.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if not 0.0 <= max_pad_fraction < 1.0:
        raise ValueError(f"max_pad_fraction must be within [0, 1), got {max_pad_fraction}")
    net = [(network_side(h), network_side(w)) for h, w in shapes]
    bucket_of = _bucket_shapes(net, max_pad_fraction)
    members: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(net):
        members.setdefault(bucket_of[s], []).append(i)
    out: list[Batch] = []
    for (h, w), idx in sorted(members.items(), key=lambda kv: -len(kv[1])):
        per_batch = max(1, min(max_batch, max_pixels // (h * w)))
        # equal-sized chunks: 9 images at 8 per batch run as 5 + 4, not 8 + 1
        n_chunks = -(-len(idx) // per_batch)
        size = -(-len(idx) // n_chunks)
        out += [Batch((h, w), tuple(idx[i : i + size])) for i in range(0, len(idx), size)]
    return out


def pad_amounts(size: int, target: int) -> tuple[int, int]:
    """(before, after) padding from ``size`` to ``target``: centred, so each edge mirrors half."""
    extra = target - size
    before = extra // 2 // 4 * 4  # keep the content on the network's stride-4 grid
    return before, extra - before


def pad_to(x: torch.Tensor, shape: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad (B, C, H, W) ``x`` to (B, C, *shape) by reflection (edge replication where reflection
    cannot reach: pads as large as the side); returns the padded tensor and the pads for :func:`crop`."""
    h, w = x.shape[-2:]
    (top, bottom), (left, right) = pad_amounts(h, shape[0]), pad_amounts(w, shape[1])
    pads = (left, right, top, bottom)
    if any(pads):
        mode = "reflect" if max(top, bottom) < h and max(left, right) < w else "replicate"
        x = F.pad(x, pads, mode=mode)
    return x, pads


def crop(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo :func:`pad_to` on (B, C, H, W) ``x`` (a view)."""
    left, right, top, bottom = pads
    h, w = x.shape[-2:]
    return x[..., top : h - bottom, left : w - right]
