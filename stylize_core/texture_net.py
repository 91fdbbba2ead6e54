"""A loss network of random filters that needs no download and still measures texture.

Ustyuzhaninov et al. 2017 ("What does it take to generate natural textures?") showed that Gram
matrices of ONE layer of random convolution filters at several sizes synthesise textures about as
well as deep ImageNet VGG, while deep *random* VGG features keep little of either texture or
content. This is that network, made cheap:

* Large filters are replaced by an octave pyramid: the same small banks (3x3 and 5x5, ``channels``
  filters each) run on the image and on 2x, 4x, 8x average-pooled copies, so the largest footprint
  is 5 * 8 = 40 px at a fraction of a 40x40 filter's cost (an octave costs a quarter of the one
  above). One layer is one (bank, octave) pair, named ``o{octave}k{size}`` (``o0k3`` ... ``o3k5``).
* One colour layer, ``o0k1``: 1x1 filters (not zero-mean), whose Gram matrix is the colour
  distribution, brightness included (the banks below cannot see a grey offset).
* Bank filters are zero-mean (flat grey regions do not respond; colour and edges do) and unit-norm,
  drawn from ``torch.Generator().manual_seed(seed)`` on the CPU, so a seed gives the same network
  on every machine; each octave gets its own draw so the scales are independent statistics.
* Inputs are ImageNet-normalised (as VGG's), padded by reflection (no border edges invented).
* Each layer is multiplied by a constant so its mean square on a seeded 1/f noise image (natural
  images' spectrum) is the same for every layer: no scale dominates the summed Gram loss and the
  weights stay meaningful when banks or octaves change. ``GAIN`` sets the overall level so that
  the Gatys defaults (content 1, style 1e6) balance as they do with ImageNet VGG.

Content is measured on ``o0y3`` and ``o1y3``: 64 zero-mean 3x3 filters on the LUMINANCE of the
image and of its first octave (edges and shading at two scales, not colour, which is the style's
to change); the style on every other layer. ``docs/benchmarks_texture.md`` has the measurements
behind these choices. ``loss_model`` is ``texture/random:SEED``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .vgg import IMAGENET_MEAN, IMAGENET_STD

KERNELS = (3, 5)
OCTAVES = 4
CHANNELS = 128
# Luminance-only 3x3 banks at the two finest octaves: the content term (``y`` layers).
CONTENT_LAYERS = ("o0y3", "o1y3")
_LUMA = (0.299, 0.587, 0.114)
# Mean square of every layer's features on the calibration noise (see module docstring).
GAIN = 1.0
_CALIBRATION_SIDE = 128


def texture_layer_names(kernels: Sequence[int] = KERNELS, octaves: int = OCTAVES) -> list[str]:
    """The style layers: the colour layer ``o0k1``, then the banks, finest octave first."""
    return ["o0k1"] + [f"o{o}k{k}" for o in range(octaves) for k in kernels]


def _octave(name: str) -> int:
    return int(name[1 : name.index("k" if "k" in name else "y")])


def _pink_noise(side: int, seed: int) -> torch.Tensor:
    """(1, 3, side, side) noise with a 1/f amplitude spectrum, unit variance per channel."""
    gen = torch.Generator().manual_seed(seed)
    white = torch.randn((1, 3, side, side), generator=gen)
    fy = torch.fft.fftfreq(side).abs()[:, None]
    fx = torch.fft.rfftfreq(side)[None, :]
    amp = 1.0 / torch.sqrt(fy**2 + fx**2).clamp_min(1.0 / side)  # (side, side//2+1)
    noise = torch.fft.irfft2(torch.fft.rfft2(white) * amp, s=(side, side))
    noise = noise - noise.mean(dim=(2, 3), keepdim=True)
    return noise / noise.std(dim=(2, 3), keepdim=True)


class TextureFeatures(nn.Module):
    """Frozen multi-scale random filter bank returning ``{layer: ReLU(filters * image)}``.

    ``forward`` takes RGB images in 0..255 (B, 3, H, W) and returns ``{layer: (B, C, h, w)}`` with
    ``h, w`` = H, W halved per octave (rounded down; at least 1).
    """

    arch = "texture"

    def __init__(
        self,
        seed: int = 0,
        layers: Sequence[str] | None = None,
        *,
        kernels: Sequence[int] = KERNELS,
        octaves: int = OCTAVES,
        channels: int = CHANNELS,
    ) -> None:
        super().__init__()
        names = texture_layer_names(kernels, octaves) + list(CONTENT_LAYERS)
        wanted = names if layers is None else list(layers)
        unknown = [name for name in wanted if name not in names]
        if unknown or not wanted:
            raise ValueError(f"unknown texture layer(s) {unknown or list(wanted)}; valid: {names}")
        self.seed = int(seed)
        self.kernels = tuple(int(k) for k in kernels)
        self.layers = tuple(name for name in names if name in set(wanted))
        self.loss_model = f"texture/random:{self.seed}"
        self._octaves = max(1 + max(_octave(name) for name in self.layers), 2)
        gen = torch.Generator().manual_seed(self.seed)
        # Colour: 1x1 filters that are NOT zero-mean. Zero-mean filters are blind to a grey offset,
        # and a feed-forward network trained on them alone learnt to shift its output far below 0
        # (black once clamped); this layer's Gram pins the colour distribution, brightness included.
        w = torch.randn((channels, 3, 1, 1), generator=gen)
        self.register_buffer("w_o0k1", w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1), persistent=False)
        for o in range(self._octaves):
            for k in self.kernels:
                w = torch.randn((channels, 3, k, k), generator=gen)  # drawn even if unused: stable seeds
                w = w - w.mean(dim=(1, 2, 3), keepdim=True)
                w = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                self.register_buffer(f"w_o{o}k{k}", w, persistent=False)
        # Content: zero-mean 3x3 filters on luminance only (each RGB slice is the same filter times
        # the channel's luminance weight and ImageNet std, undoing the normalisation), so the
        # content term keeps edges and shading but leaves colour to the style.
        luma = torch.tensor(_LUMA).view(1, 3, 1, 1) * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        for name in CONTENT_LAYERS:
            w = torch.randn((channels // 2, 1, 3, 3), generator=gen)
            w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) * luma  # (C/2, 3, 3, 3)
            self.register_buffer(f"w_{name}", w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1), persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)
        self._gains = {name: 1.0 for name in names}
        with torch.no_grad():
            noise = _pink_noise(_CALIBRATION_SIDE, self.seed)
            raw = self._features((noise * self.std + self.mean), set(self.layers))
        self._gains = {name: math.sqrt(GAIN / float(f.pow(2).mean())) for name, f in raw.items()}
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> TextureFeatures:
        return super().train(False)  # always frozen, whatever a trainer calls

    def _features(self, images: torch.Tensor, wanted: set[str]) -> dict[str, torch.Tensor]:
        x = (images - self.mean) / self.std  # new tensor: callers' images stay untouched
        deepest = max(_octave(name) for name in wanted)
        out: dict[str, torch.Tensor] = {}
        for o in range(deepest + 1):
            if o:
                # floor halving; ceil_mode keeps a 1-px side alive instead of emptying it
                x = F.avg_pool2d(x, 2, ceil_mode=True)
            for name in sorted(n for n in wanted if _octave(n) == o):
                k = int(name[-1 if name[-2].isalpha() else -2:])
                pad = k // 2
                mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
                weight = getattr(self, f"w_{name}").to(x.dtype)
                y = F.conv2d(F.pad(x, (pad, pad, pad, pad), mode=mode), weight)  # (B, C, h, w)
                out[name] = F.relu(y) * self._gains[name]
        return out

    def forward(self, images: torch.Tensor, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """``layers`` (a subset of :attr:`layers`) skips the octaves deeper than the deepest asked for."""
        wanted = set(self.layers if layers is None else layers)
        if not wanted <= set(self.layers):
            raise ValueError(f"layers {sorted(wanted - set(self.layers))} were not built into this network")
        return self._features(images, wanted)
