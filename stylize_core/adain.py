"""AdaIN (Huang & Belongie 2017, "Arbitrary style transfer in real-time with adaptive instance
normalization"): any style image, no training per style.

The encoder and decoder keep the module layouts of pytorch-AdaIN (naoto0804/pytorch-AdaIN,
``net.py``: ``vgg`` and ``decoder``), so their ``vgg_normalised.pth`` and ``decoder.pth`` load
strictly (:mod:`stylize_core.adain_checkpoint`). The encoder is their ``vgg[:31]`` (to relu4_1).

Conventions, as their ``test.py``: inputs are 0..1 RGB (torchvision's ``ToTensor``), the decoder's
output is 0..1 (``save_image`` clamps it), statistics use :func:`calc_mean_std` with eps 1e-5.

Sizes that are not multiples of 8: the encoder's max-pooling uses ``ceil_mode``, so a side of 100
pools to 50, 25, 13 and the decoder returns 104. :class:`AdaINStylizer` crops the output's top-left
``H x W`` (the pooling windows are anchored top-left, so that crop is the part aligned with the input).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .color import finish
from .loss_meter import LossMeter
from .losses import STATS_EPS, channel_mean_std
from .style_result import StyleResult, resolve_device

EPS = STATS_EPS  # pytorch-AdaIN's calc_mean_std default (1e-5)
ENCODER_MODULES = 31  # vgg[:31]: up to relu4_1
FULL_ENCODER_MODULES = 53  # their whole normalised VGG19 (to relu5_4), as vgg_normalised.pth holds it


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(c_in, c_out, (3, 3)), nn.ReLU()]


def _pool() -> nn.Module:
    return nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True)


def _w(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def full_encoder(width: float = 1.0) -> nn.Sequential:
    """pytorch-AdaIN's ``vgg``: the 53 modules of the normalised VGG19, relu1_1 .. relu5_4.
    ``width`` scales every channel count but the RGB input (1.0: their layout exactly)."""
    layers: list[nn.Module] = [nn.Conv2d(3, 3, (1, 1))]  # the normalisation folded into a 1x1 conv
    plan = [(3, 64), (64, 64), "P", (64, 128), (128, 128), "P", (128, 256), (256, 256), (256, 256), (256, 256), "P",
            (256, 512), (512, 512), (512, 512), (512, 512), "P", (512, 512), (512, 512), (512, 512), (512, 512)]
    for step in plan:
        if step == "P":
            layers += [_pool()]
        else:
            c_in, c_out = step
            layers += _conv_block(3 if c_in == 3 else _w(c_in, width), _w(c_out, width))
    assert len(layers) == FULL_ENCODER_MODULES
    return nn.Sequential(*layers)


def encoder(width: float = 1.0) -> nn.Sequential:
    """The encoder AdaIN uses: ``vgg[:31]``, (B, 3, H, W) 0..1 -> (B, 512w, ceil(H/8), ceil(W/8)) relu4_1."""
    return nn.Sequential(*list(full_encoder(width).children())[:ENCODER_MODULES])


# The ReLU modules of ``encoder()`` whose outputs are relu1_1, relu2_1, relu3_1, relu4_1 (AdaIN's style layers).
STYLE_LAYER_ENDS = (3, 10, 17, 30)


def encoder_stages(enc: nn.Sequential) -> list[nn.Sequential]:
    """``enc`` cut after relu1_1, relu2_1, relu3_1 and relu4_1 (as pytorch-AdaIN's ``net.py`` cuts it
    for its style loss); running them in turn gives the four style layers' features."""
    mods, start, stages = list(enc.children()), 0, []
    for end in STYLE_LAYER_ENDS:
        stages.append(nn.Sequential(*mods[start:end + 1]))
        start = end + 1
    return stages


def random_encoder(seed: int, width: float = 1.0) -> nn.Sequential:
    """An encoder of fixed random filters, the same on every machine for a given ``seed`` and ``width``.

    Random convolution features carry texture statistics without training (Ustyuzhaninov et al. 2017),
    so the demo AdaIN model needs no ImageNet download. Filters are Gaussian, drawn on the CPU from
    ``torch.Generator().manual_seed(seed)``; biases are zero; the 1x1 input conv applies ImageNet's
    normalisation. Each conv is then rescaled (to 4 significant digits, so float summation order cannot
    change it) so that its ReLU output has mean square 1 on a seeded 1/f noise image: no layer
    vanishes or explodes with depth, and the style loss weighs every layer alike.
    """
    from .texture_net import _pink_noise  # the same calibration image as the texture loss network
    from .vgg import IMAGENET_MEAN, IMAGENET_STD

    enc = encoder(width)
    gen = torch.Generator().manual_seed(int(seed))
    convs = [m for m in enc if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        std = torch.tensor(IMAGENET_STD)
        convs[0].weight.copy_(torch.diag(1.0 / std).view(3, 3, 1, 1))
        convs[0].bias.copy_(-torch.tensor(IMAGENET_MEAN) / std)
        for conv in convs[1:]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
            conv.bias.zero_()
        noise = (_pink_noise(64, int(seed)) * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
                 + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)).clamp(0, 1)  # (1, 3, 64, 64) image-like
        x = noise
        for module in enc:
            x = module(x)
            if isinstance(module, nn.ReLU) and module is not enc[0]:
                conv = _last_conv(enc, module)
                scale = float(f"{(1.0 / float(x.pow(2).mean().clamp_min(1e-12))) ** 0.5:.4g}")
                conv.weight.mul_(scale)
                x = x * scale  # ReLU is positively homogeneous: scaling the conv scales its output
    return enc.eval().requires_grad_(False)


def _last_conv(enc: nn.Sequential, relu: nn.Module) -> nn.Conv2d:
    mods = list(enc)
    i = next(n for n, m in enumerate(mods) if m is relu)
    return next(m for m in reversed(mods[:i]) if isinstance(m, nn.Conv2d))


def decoder(width: float = 1.0) -> nn.Sequential:
    """pytorch-AdaIN's ``decoder``: (B, 512w, h, w) relu4_1 features -> (B, 3, 8h, 8w) ~0..1.
    ``width`` scales every channel count but the RGB output (1.0: their layout exactly)."""
    up = nn.Upsample(scale_factor=2, mode="nearest")  # no parameters: shared instances are fine
    c = {n: _w(n, width) for n in (512, 256, 128, 64)}
    layers: list[nn.Module] = [*_conv_block(c[512], c[256]), up, *_conv_block(c[256], c[256]),
                               *_conv_block(c[256], c[256]), *_conv_block(c[256], c[256]),
                               *_conv_block(c[256], c[128]), up, *_conv_block(c[128], c[128]),
                               *_conv_block(c[128], c[64]), up, *_conv_block(c[64], c[64]),
                               nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(c[64], 3, (3, 3))]
    return nn.Sequential(*layers)


def calc_mean_std(feat: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over H*W of (B, C, H, W) features, each (B, C, 1, 1); the std is
    sqrt(unbiased variance + eps), as pytorch-AdaIN computes it."""
    b, c = feat.shape[:2]
    mean, std = channel_mean_std(feat, eps)
    return mean.view(b, c, 1, 1), std.view(b, c, 1, 1)


def adaptive_instance_normalization(content_feat: torch.Tensor, style_mean: torch.Tensor,
                                    style_std: torch.Tensor) -> torch.Tensor:
    """Content features (B, C, H, W) renormalised to the style's per-channel mean and std (B or 1, C, 1, 1)."""
    mean, std = calc_mean_std(content_feat)
    return (content_feat - mean) / std * style_std + style_mean


@dataclass(frozen=True)
class StyleStats:
    """What AdaIN needs of a style image: relu4_1's per-channel mean and std, each (1, 512, 1, 1)."""

    mean: torch.Tensor
    std: torch.Tensor


def mix_stats(parts: Sequence[tuple[StyleStats, float]]) -> StyleStats:
    """The statistics of a weighted interpolation of styles (weights summing to one).

    pytorch-AdaIN interpolates by sum_i w_i * AdaIN(c, s_i); AdaIN is affine in the style's mean and
    std for a fixed content, so that equals AdaIN(c) with mean sum_i w_i mean_i and std sum_i w_i std_i.
    """
    mean = sum(w * s.mean for s, w in parts)
    std = sum(w * s.std for s, w in parts)
    return StyleStats(mean, std)  # type: ignore[arg-type]


def to_unit(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 (or float32 in 0..255: a 16-bit input's) -> (1, 3, H, W) float 0..1
    (torchvision's ToTensor)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    return x.permute(2, 0, 1)[None].float().div_(255)


class AdaINStylizer:
    """Stylises (H, W, 3) images with AdaIN, behind :class:`~stylize_core.stylizer.Stylizer`'s
    ``stylize_many(images, styles, measure=...)`` call: uint8 images give uint8 outputs, float32 ones
    in 0..255 (a 16-bit input's, :func:`~stylize_core.image_formats.network_input`) float32 outputs,
    never rounded to 8 bits.

    ``styles``: name -> [(style image name, weight)], one pair for a plain style, several (weights
    summing to one) for an interpolation. Each style image is encoded once, here, and its mean/std
    kept (or its :class:`StyleStats` are given, computed once per run before); ``style_encodes`` counts those encoder passes, ``content_encodes`` the content ones (one
    per input image per call, shared by every style).
    """

    accepts_float = True  # a 16-bit input stays float (image_formats.network_input)

    def __init__(
        self,
        enc: nn.Module,
        dec: nn.Module,
        style_images: Mapping[str, np.ndarray | StyleStats],
        styles: Mapping[str, Sequence[tuple[str, float]]],
        *,
        alpha: float = 1.0,
        strength: float = 1.0,
        preserve_color: bool = False,
        device: str = "auto",
        meter: LossMeter | None = None,
        tile: int = 0,
        max_memory: int = 0,
    ) -> None:
        if not styles:
            raise ValueError("an AdaINStylizer needs at least one style")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be within [0, 1], got {alpha}")
        self.device = resolve_device(device)
        self.encoder = enc.to(self.device).eval().requires_grad_(False)
        self.decoder = dec.to(self.device).eval().requires_grad_(False)
        self.alpha, self.strength, self.keep_color = alpha, strength, preserve_color
        self.meter = meter
        self.loss_model = meter.loss_model if meter is not None else ""
        self.style_encodes = 0
        self.content_encodes = 0
        self.tile, self.max_memory = tile, max_memory  # stylize_core.adain_tiles: --tile, --max-memory
        with torch.inference_mode():  # statistics computed before (once per run) are taken as they are
            per_image = {name: image if isinstance(image, StyleStats) else self._style_stats(image)
                         for name, image in style_images.items()}
        self.stats = {name: mix_stats([(per_image[n], w) for n, w in parts]) for name, parts in styles.items()}

    @property
    def style_names(self) -> list[str]:
        return list(self.stats)

    def _style_stats(self, image: np.ndarray) -> StyleStats:
        self.style_encodes += 1
        return StyleStats(*calc_mean_std(self.encoder(to_unit(image, self.device))))

    def _target(self, style: str):
        """A tile's features and the whole image's (content mean, std) -> the features to decode:
        AdaIN, then alpha (stylize_core.adain_tiles.Target)."""
        s = self.stats[style]

        def target(feat: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor], rows: slice, cols: slice
                   ) -> torch.Tensor:
            mean, std = stats
            return self.alpha * ((feat - mean) / std * s.std + s.mean) + (1 - self.alpha) * feat

        return target

    def tiler(self, height: int, width: int):
        """A :class:`~stylize_core.adain_tiles.TiledAdaIN` when an image of this size exceeds the
        activation budget or ``tile``, else None (one pass)."""
        from .adain_tiles import TiledAdaIN, adain_bytes_per_pixel, adain_tile_side
        from .tile_budget import activation_budget

        budget = activation_budget(self.max_memory, self.device)
        side = adain_tile_side(height, width, per_pixel=adain_bytes_per_pixel(self.encoder), budget=budget,
                               forced=self.tile)
        return TiledAdaIN(self.encoder, self.decoder, side, keep_bytes=budget) if side else None

    def _outputs(self, content: torch.Tensor, styles: list[str]) -> tuple[list[torch.Tensor], int]:
        """Each style's (1, 3, H, W) 0..1 unclamped output of ``content``, and the tiles it ran as: one
        pass, or tiles sharing the whole image's statistics (:meth:`tiler`)."""
        h, w = content.shape[-2:]
        tiled = self.tiler(h, w)
        self.content_encodes += 1
        if tiled is None:
            feat = self.encoder(content)  # (1, 512, ceil(H/8), ceil(W/8)), shared by every style
            return [self.forward(content, style, feat) for style in styles], 1
        return tiled(content, [self._target(style) for style in styles]), tiled.count(h, w)

    def forward(self, content: torch.Tensor, style: str, content_feat: torch.Tensor | None = None) -> torch.Tensor:
        """(1, 3, H, W) 0..1 content -> (1, 3, H, W) 0..1 (unclamped) output, cropped to the input size."""
        if content_feat is None:
            content_feat = self.encoder(content)
        s = self.stats[style]
        t = adaptive_instance_normalization(content_feat, s.mean, s.std)
        t = self.alpha * t + (1 - self.alpha) * content_feat
        h, w = content.shape[-2:]
        return self.decoder(t)[..., :h, :w]  # ceil_mode pooling: the decoder returns multiples of 8

    @torch.inference_mode()
    def stylize_many(self, images: Sequence[np.ndarray], styles: Sequence[str] | None = None, *,
                     measure: Sequence[bool] | None = None) -> dict[str, list[StyleResult]]:
        """Every style in ``styles`` (default: all) over the same images: ``{style: [result per image]}``;
        each image is encoded once for all styles. ``measure[i]`` False skips image ``i``'s metrics."""
        styles = self.style_names if styles is None else list(styles)
        for style in styles:
            if style not in self.stats:
                raise KeyError(f"unknown style {style!r}; this AdaINStylizer has {self.style_names}")
        out: dict[str, list[StyleResult]] = {s: [] for s in styles}
        for n, image in enumerate(images):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype not in (np.uint8, np.float32) or 0 in image.shape:
                raise ValueError(f"expected a non-empty (H, W, 3) uint8 or float32 image, got {image.dtype} {image.shape}")
            start = time.perf_counter()
            content = to_unit(image, self.device)  # (1, 3, H, W)
            ys, tiles = self._outputs(content, styles)
            shared_ms = (time.perf_counter() - start) * 1000 / len(styles)
            for style, y in zip(styles, ys):
                began = time.perf_counter()
                y = y.mul(255).clamp_(0, 255)  # (1, 3, H, W) 0..255
                ref = content * 255
                y = finish(y, ref, keep_color=self.keep_color, strength=self.strength).clamp_(0, 255)
                result = (y if image.dtype == np.float32 else y.round().to(torch.uint8))[0].permute(1, 2, 0).cpu().numpy()
                ms = shared_ms + (time.perf_counter() - began) * 1000
                measured = self.meter is not None and (measure is None or bool(measure[n]))
                losses = self.meter.measure(ref, y, style) if measured else {}
                out[style].append(StyleResult(image=result, stylize_ms=ms, measured=measured, tiles=tiles,
                                              **{k: v[0] for k, v in losses.items()}))
        return out

    def stylize(self, images: Sequence[np.ndarray], style: str) -> list[StyleResult]:
        """Stylise ``images`` with one style; results are in input order."""
        return self.stylize_many(images, [style])[style]
