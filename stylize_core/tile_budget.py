"""When to tile, and how large the tiles are: a model of a network's activation memory and a budget.

The model (:func:`bytes_per_pixel`). A :class:`~stylize_core.transformer_net.TransformerNet`'s peak
activation memory grows with the pixels of its input, and the full-resolution layers dominate it:
``c1`` channels (32 in the default network) at full size, against ``c2 = 2 c1`` at 1/4 of the
pixels and ``c3 = 4 c1`` at 1/16. At the peak (the last upsampling conv and its norm and ReLU) a few
such tensors are alive at once, plus the padded copies the convolutions read. Measured on CPU, fp32,
channels_last, as the growth of the process's peak RSS (``ru_maxrss``) between a 64x64 warm-up and
one forward pass of a 512x512 and a 1024x1024 input (:data:`MEASURED`): 770 B/px for the default
network (c1 = 32) at both sizes, 220-241 B/px for the slim one (c1 = 8). The model is
:data:`BYTES_PER_C1_CHANNEL` bytes per full-resolution channel per pixel plus
:data:`FIXED_BYTES_PER_PIXEL` for the input and output: 772 and 220 B/px for those two; bf16 autocast
(CUDA) halves the activations.

Enhancement networks (:func:`enhance_bytes_per_pixel`) have their own model, per INPUT pixel: a
super-resolution network's sub-pixel stages and outputs are 4x or 16x the input's pixels, so x4
costs ~3.3 KB per input pixel where a same-size restoration network costs ~170 B.

The budget (:func:`activation_budget`): ``--max-memory`` when given; else on CUDA half the device's
free memory when the stylizer starts (the rest is for batches, the loss network and the allocator's
slack); else on CPU :data:`CPU_DEFAULT_BUDGET`, so that one image's activations stay well under a
worker's memory whatever the input's size. An image whose activations exceed the budget runs in
tiles (:mod:`stylize_core.tiling`) of the largest side that fits it; ``--tile N`` forces a side.
"""

from __future__ import annotations

import math

import torch

from .enhance_net import EnhanceArch
from .tiling import min_tile
from .transformer_net import SIZE_MULTIPLE, NetConfig

# Bytes per pixel per full-resolution channel (c1) of peak activation memory, fp32 (see module doc).
BYTES_PER_C1_CHANNEL = 23
# Input and output (3 channels each, fp32) and the padded input of the first 9x9 conv.
FIXED_BYTES_PER_PIXEL = 3 * 4 * 3
# What the model was fitted to (CPU, fp32, channels_last, 2026-12-06; peak-RSS growth of one forward
# pass after a 64x64 warm-up, 512x512 and 1024x1024 random inputs): network -> B/px.
MEASURED = {"width=1,blocks=5": 770, "width=0.25,blocks=5": 230}
# Enhancement networks (enhance_bytes_per_pixel): bytes per trunk channel per input pixel, by scale,
# and per output pixel for the RGB fp32 tensors there (the tail's output, it times 255, the bicubic
# upscale, their sum). Fitted to the peak-RSS growth of one CPU fp32 forward pass of the shipped
# demos (16 channels, 3 blocks; 2026-12-07, `python benchmarks/bench_large.py --only enhance-memory`),
# each a little above what was measured (ENHANCE_MEASURED). Only 16 channels were measured: scaling
# with the channels is the assumption that the trunk's c-channel tensors dominate.
ENHANCE_BYTES_PER_CHANNEL = {1: 30, 2: 50, 4: 160}
ENHANCE_FIXED_PER_OUTPUT_PIXEL = 4 * 3 * 4
# task -> measured B/px at two input sides (sr4: 192 and 384, the others 256 and 512); model in comments
ENHANCE_MEASURED = {"sr2": (882, 966),  # model 992
                    "sr4": (3046, 3249),  # model 3328
                    "denoise": (139, 157),  # unshuffle 2; model 168
                    "deblock": (100, 149)}  # unshuffle 2; model 168
CPU_DEFAULT_BUDGET = 512 * 2**20
CUDA_FREE_SHARE = 0.5
# The smallest tile a budget may ask for: below this the overlap costs more than the tile.
MIN_TILE = 256



def bytes_per_pixel(arch: NetConfig | None = None, *, bf16: bool = False) -> int:
    """Modelled peak activation bytes per input pixel of one forward pass of a network of ``arch``."""
    c1 = (arch or NetConfig()).channels[0]
    per_pixel = BYTES_PER_C1_CHANNEL * c1 + FIXED_BYTES_PER_PIXEL
    return per_pixel // 2 if bf16 else per_pixel


def enhance_bytes_per_pixel(arch: EnhanceArch, *, bf16: bool = False) -> int:
    """Modelled peak activation bytes per INPUT pixel of one forward pass of an enhancement network
    (:mod:`stylize_core.enhance_net`): its trunk channels times a factor per scale (x4's second
    sub-pixel stage runs at twice the input's sides), the trunk's positions divided by the
    unshuffle's (restoration), plus the RGB tensors at the output's size (see ENHANCE_MEASURED)."""
    per_pixel = (ENHANCE_BYTES_PER_CHANNEL[arch.scale] * arch.channels // arch.unshuffle**2
                 + ENHANCE_FIXED_PER_OUTPUT_PIXEL * arch.scale**2)
    return per_pixel // 2 if bf16 else per_pixel


def activation_budget(max_memory: int = 0, device: torch.device | None = None) -> int:
    """Bytes one forward pass's activations may take: ``max_memory`` if set, else per device (module doc)."""
    if max_memory:
        return max_memory
    if device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_SHARE)
    return CPU_DEFAULT_BUDGET


def tile_side(height: int, width: int, *, per_pixel: int, budget: int, forced: int = 0,
              multiple: int = SIZE_MULTIPLE, smallest: int = 0) -> int:
    """The tile side an image of this size runs with, or 0 for one untiled pass.

    ``forced`` (``--tile``) tiles any image with a side above it, at that side rounded down to a
    ``multiple`` (4: the style networks' grid); otherwise the image is tiled when its activations
    exceed ``budget``, with the largest tile whose activations fit (at least :data:`MIN_TILE` and
    ``smallest``). A forced side below the smallest tile the blending allows (``smallest``, by default
    :func:`~stylize_core.tiling.min_tile`) is an error.
    """
    smallest = smallest or min_tile()
    if forced:
        side = forced - forced % multiple
        if side < smallest:
            raise ValueError(f"--tile {forced}: tiles must be at least {smallest} pixels")
        return side if max(height, width) > side else 0
    if height * width * per_pixel <= budget:
        return 0
    side = int(math.sqrt(budget / per_pixel))
    return max(MIN_TILE, smallest, side - side % multiple)
