"""Enhancement networks: super-resolution (x2, x4) and same-size restoration (denoising, JPEG clean-up).

The second half of Johnson et al. (2016): the same kind of feed-forward residual network, trained
to restore instead of to stylise. Both networks here are residual learners:

* :class:`EnhanceNet` with ``scale`` 2 or 4 (super-resolution, the SRResNet/EDSR family): a 3x3 head
  convolution, ``blocks`` residual blocks (conv-ReLU-conv, no normalisation: instance norm would
  throw away the brightness a restoration must keep) at the INPUT resolution, where they are
  cheapest, a convolution closing the trunk with a skip from the head, then one sub-pixel
  convolution stage per factor of two (conv to 4x channels + PixelShuffle(2), Shi et al. 2016) and
  a 3x3 tail to RGB. The tail's output is ADDED to a bicubic upscale of the input (the global
  skip), so the network only learns the detail bicubic interpolation misses.
* :class:`EnhanceNet` with ``scale`` 1 (denoising, deblocking): the same trunk at full resolution;
  the output is the input plus the predicted correction.

The tail starts at zero, so an untrained network is exactly the bicubic upscale (or the identity),
and training moves it from the classical baseline, never from noise.

Input and output are RGB in 0..255 (B, 3, H, W) float32; the output is (B, 3, H*scale, W*scale) and
not clamped, like the style networks'. Any input size works (no size multiple).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .image_errors import DecompressionBombError

SCALES = (1, 2, 4)
# task -> output scale; the degradation a task is trained against is in stylize_core.degrade.
TASK_SCALES = {"sr2": 2, "sr4": 4, "denoise": 1, "deblock": 1}


@dataclass(frozen=True)
class EnhanceArch:
    """The architecture of an :class:`EnhanceNet`; saved in every enhancement checkpoint.

    ``channels``: width of the trunk; ``blocks``: residual blocks; ``scale``: 1 (restoration), 2 or 4.
    """

    scale: int = 2
    channels: int = 32
    blocks: int = 6
    # Restoration only: run the trunk on 2x2 pixel-unshuffled input (FFDNet, Zhang et al. 2018):
    # a quarter of the positions, four times the receptive field, for the same channels.
    unshuffle: int = 1

    def __post_init__(self) -> None:
        if self.scale not in SCALES or self.channels < 1 or self.blocks < 0:
            raise ValueError(f"invalid enhancement network {self}: scale in {SCALES}, channels >= 1, blocks >= 0")
        if self.unshuffle not in (1, 2) or (self.unshuffle > 1 and self.scale > 1):
            raise ValueError(f"invalid enhancement network {self}: unshuffle is 1, or 2 for restoration (scale 1)")

    # What StyleModel / BuiltStylizer ask of an architecture record (duck-typed with NetConfig).
    multi_style = False
    num_styles = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> EnhanceArch:
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown enhancement network keys: {unknown}")
        return cls(**data)

    def describe(self) -> str:
        extra = f",unshuffle={self.unshuffle}" if self.unshuffle > 1 else ""
        return f"scale={self.scale},channels={self.channels},blocks={self.blocks}{extra}"


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class EnhanceNet(nn.Module):
    """Super-resolution (``arch.scale`` 2 or 4) or restoration (scale 1) network; see the module docstring."""

    def __init__(self, arch: EnhanceArch | None = None) -> None:
        super().__init__()
        self.arch = arch or EnhanceArch()
        c = self.arch.channels
        self.scale = self.arch.scale
        u = self.arch.unshuffle
        self.head = nn.Conv2d(3 * u * u, c, 3, padding=1)
        self.body = nn.Sequential(*[_ResBlock(c) for _ in range(self.arch.blocks)])
        self.body_end = nn.Conv2d(c, c, 3, padding=1)
        ups: list[nn.Module] = []
        for _ in range({1: 0, 2: 1, 4: 2}[self.scale]):
            ups += [nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(inplace=True)]
        self.upsample = nn.Sequential(*ups)
        self.tail = nn.Conv2d(c, 3 * u * u, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # untrained = the baseline (bicubic or identity)
        nn.init.zeros_(self.tail.bias)

    def base(self, x: torch.Tensor) -> torch.Tensor:
        """What the network corrects: the bicubic upscale of ``x`` (SR) or ``x`` itself."""
        if self.scale == 1:
            return x
        return F.interpolate(x, scale_factor=float(self.scale), mode="bicubic", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) 0..255 -> (B, 3, sH, sW)
        u = self.arch.unshuffle
        h = x * (1.0 / 255.0) - 0.5
        if u > 1:  # replicate odd sides to even, unshuffle; cropped back below
            h = F.pixel_unshuffle(F.pad(h, (0, x.shape[-1] % u, 0, x.shape[-2] % u), mode="replicate"), u)
        f = self.head(h)
        f = f + self.body_end(self.body(f))
        y = self.tail(self.upsample(f)) * 255.0
        if u > 1:
            y = F.pixel_shuffle(y, u)[..., : x.shape[-2], : x.shape[-1]]
        return self.base(x) + y


def output_scale(model: nn.Module) -> int:
    """How many times larger than its input a network's output is (1 for style networks)."""
    return int(getattr(model, "scale", 1) or 1)


def output_size(height: int, width: int, scale: int) -> tuple[int, int]:
    return height * scale, width * scale


class OutputTooLarge(DecompressionBombError):
    """An input whose super-resolved output would exceed the pixel limit (error_type ``too_large``)."""


def check_output_pixels(height: int, width: int, scale: int, max_pixels: int) -> None:
    """OutputTooLarge when an (height, width) input's output at ``scale`` has more than ``max_pixels``
    pixels: the guard against huge allocations counts what is MADE, and x4 makes 16x the pixels."""
    oh, ow = output_size(height, width, scale)
    if scale > 1 and oh * ow > max_pixels:
        raise OutputTooLarge(f"x{scale} output of this {width}x{height} input would have {ow}x{oh} = {ow * oh} "
                             f"pixels, more than the limit of {max_pixels}")
