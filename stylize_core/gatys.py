"""Gatys et al. (2016) style transfer: optimise the pixels of one image against a loss network.

The image is optimised in 0..255 pixel units and clamped to [0, 255] at every evaluation, so every
intermediate is a valid image. Loss scales (those of :mod:`stylize_core.losses`):

* content: per-element MSE of the content layers' features (of the ImageNet-normalised input),
  summed over layers; 0 at a "content" init.
* style: per layer, MSE between Gram matrices normalised by C·H·W, summed over layers. These raw
  values are tiny (orders of 1e-6..1e-4 with ImageNet VGG), hence ``style_weight`` 1e6 against
  ``content_weight`` 1: the same normalisation and weights as PyTorch's own Gatys tutorial.
  Equal layer weights let the shallow layers (fewer channels, larger Gram entries) dominate, as there.
  The texture network (``texture[:SEED]``, stylize_core/texture_net.py) is calibrated to balance
  with the same defaults.
* tv: mean absolute difference between neighbouring pixels in 0..255 units, summed over the two
  directions (roughly 5..30 for photographs). ``tv_weight`` 1e-3 is a light touch: the L1 gradient
  does not vanish for small differences, so it mostly removes low-amplitude high-frequency noise
  without blurring edges. Use ~1e-2 for visibly smoother results, 0 to disable.

Colour preservation returns the luminance of the result with the chrominance (YIQ) of the content
(:func:`stylize_core.color.preserve_color`); Gatys et al. 2016b's luminance matching is not implemented.

The optimisation always runs with autograd on (``inference_mode(False)`` + ``enable_grad``), because
the Ray actor calls it from inside ``torch.inference_mode()``. An ambient ``torch.autocast`` is left
as the caller set it; L-BFGS's curvature estimates want float32 gradients, so prefer not to autocast.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .color import preserve_color as _preserve_color
from .gatys_level import Extractor, LevelPlan, optimize_level
from .loss_network import LossNetwork, build_loss_network, resolve_layers
from .losses import image_to_tensor, style_grams


OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "style")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 2.0}


@dataclass
class GatysConfig:
    """Settings of one Gatys optimisation (see the module docstring for the loss scales).

    ``steps`` counts loss evaluations (one forward + backward each) per pyramid level: Adam does one
    update per evaluation; L-BFGS (strong-Wolfe line search) usually one or two evaluations per
    iteration, stopped at exactly ``steps``, or earlier when it has converged or made no progress
    in 20 iterations. Each level returns the best image it evaluated.
    ``lr`` None picks the optimiser's default: 1.0 for L-BFGS (its usual step scale), 2.0 for Adam
    (pixel units per step at the start; 5..10 converges faster and coarser).
    """

    # () = the loss network's Gatys default (VGG: relu4_2 / relu1_1..relu5_1; see loss_network)
    content_layers: tuple[str, ...] = ()
    style_layers: tuple[str, ...] = ()
    style_layer_weights: dict[str, float] | None = None
    content_weight: float = 1.0
    style_weight: float = 1e6
    tv_weight: float = 1e-3
    optimizer: str = "lbfgs"
    steps: int = 300
    lr: float | None = None
    init: str = "content"
    pyramid_levels: int = 1
    pyramid_min_side: int = 64
    style_scales: tuple[float, ...] = (1.0,)
    style_size: int | None = None
    preserve_color: bool = False
    seed: int = 0
    log_every: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on settings that cannot run."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, not {self.init!r}")
        if self.steps < 1 or self.pyramid_levels < 1 or self.pyramid_min_side < 1:
            raise ValueError("steps, pyramid_levels and pyramid_min_side must be >= 1")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, not {self.lr}")
        if not self.style_scales or any(not s > 0 for s in self.style_scales):
            raise ValueError(f"style_scales must be positive, not {self.style_scales}")
        if self.style_size is not None and self.style_size < 1:
            raise ValueError(f"style_size must be >= 1 or None, not {self.style_size}")

    def for_network(self, name: str) -> GatysConfig:
        """A copy whose empty layer lists are loss network ``name``'s Gatys defaults."""
        content, style = resolve_layers(name, self.content_layers, self.style_layers, "gatys")
        return replace(self, content_layers=content, style_layers=style)

    @property
    def layers(self) -> tuple[str, ...]:
        """Every layer the loss network must return (as given; :meth:`for_network` fills defaults)."""
        return tuple(dict.fromkeys(self.content_layers + self.style_layers))

    @property
    def learning_rate(self) -> float:
        """``lr``, or the optimiser's default when it is None."""
        return DEFAULT_LR[self.optimizer] if self.lr is None else float(self.lr)


@dataclass
class GatysResult:
    """Output of :func:`optimize_image`.

    ``trace`` has one entry per loss evaluation: ``{"level", "step", "size": [h, w], "content",
    "style", "tv", "total"}``; content/style/tv are the unweighted losses (style includes the layer
    weights), total = content_weight·content + style_weight·style + tv_weight·tv. ``level`` counts
    the pyramid levels actually run (equal sizes are merged), ``step`` restarts at 0 per level.
    """

    image: np.ndarray  # (H, W, 3) uint8 (float32 0..255 for a float content), the content's size
    trace: list[dict] = field(default_factory=list)
    loss_model: str = ""


def gatys_vgg(
    arch: str = "vgg19", weights: str = "imagenet", config: GatysConfig | None = None, **kw: Any
) -> LossNetwork:
    """Loss network ``arch`` (vgg16, vgg19, texture[:SEED]; :func:`build_loss_network`) returning
    exactly the layers ``config`` needs (extra kw go to the factory)."""
    config = (config or GatysConfig()).for_network(arch)
    return build_loss_network(arch, weights, config.layers, use="gatys", **kw)


def pyramid_sizes(height: int, width: int, levels: int, min_side: int) -> list[tuple[int, int]]:
    """(h, w) per coarse-to-fine level, each level twice the previous, the last exactly (height, width).

    A level's short side is never below ``min_side`` (unless the image itself is smaller); levels that
    would come out the same size are merged, so the list may be shorter than ``levels``.
    """
    short = min(height, width)
    sizes: list[tuple[int, int]] = []
    for i in range(levels):
        factor = min(1.0, max(0.5 ** (levels - 1 - i), min_side / short))
        size = (height, width) if factor == 1.0 else (
            max(1, math.floor(height * factor + 0.5)), max(1, math.floor(width * factor + 0.5)))
        if not sizes or size != sizes[-1]:
            sizes.append(size)
    return sizes


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, 3, H, W); antialiased when shrinking so coarse levels do not alias."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _resize_long_side(images: torch.Tensor, long_side: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    scale = long_side / max(h, w)
    return _resize(images, (max(1, round(h * scale)), max(1, round(w * scale))))


def _check_image(name: str, image: np.ndarray, floats: bool = False) -> np.ndarray:
    """A writable copy of an (H, W, 3) uint8 image (or, with ``floats``, float32 in 0..255: a 16-bit input's)."""
    kinds = (np.uint8, np.float32) if floats else (np.uint8,)
    if not isinstance(image, np.ndarray) or image.dtype not in kinds or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{name} must be an (H, W, 3) {' or '.join(np.dtype(k).name for k in kinds)} RGB array, "
                         f"got {got}")
    # A copy: Ray batches are read-only and torch.from_numpy warns on those.
    return np.array(image, copy=True)


def _module_tensors(vgg: Extractor) -> list[torch.Tensor]:
    if isinstance(vgg, torch.nn.Module):
        return list(itertools.chain(vgg.parameters(), vgg.buffers()))
    return []


def _checked_extractor(vgg: Extractor, needed: Sequence[str]) -> Extractor:
    """Fail early and clearly when the loss network lacks a layer the config needs."""
    available = getattr(vgg, "layers", None)

    def missing_error(have: Sequence[str]) -> ValueError:
        missing = [layer for layer in needed if layer not in have]
        return ValueError(
            f"the loss network does not return layer(s) {missing} needed by the Gatys config "
            f"(it returns {list(have)}); build it with gatys_vgg(config=...) or include those layers"
        )

    if available is not None and any(layer not in available for layer in needed):
        raise missing_error(list(available))

    def extract(images: torch.Tensor) -> Mapping[str, torch.Tensor]:
        feats = vgg(images)
        if any(layer not in feats for layer in needed):
            raise missing_error(list(feats))
        return feats

    return extract


def _initial_image(
    config: GatysConfig, content: torch.Tensor, style: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Level-0 starting image (1, 3, h, w) in 0..255."""
    if config.init == "content":
        return _resize(content, size).clone()
    if config.init == "style":
        return _resize(style, size).clone()
    # Drawn on the CPU so a seed gives the same start on every device.
    gen = torch.Generator().manual_seed(config.seed)
    return (torch.rand((1, 3, *size), generator=gen) * 255.0).to(content.device)


def optimize_image(
    content: np.ndarray,
    style: np.ndarray,
    vgg: LossNetwork | Extractor,
    config: GatysConfig | None = None,
    *,
    device: str | torch.device | None = None,
    callback: Callable[[dict], None] | None = None,
) -> GatysResult:
    """Stylise ``content`` (H, W, 3) uint8, or float32 in 0..255 (a 16-bit input's; the result is then
    float32 too, not rounded to 8 bits), towards ``style`` (h, w, 3) uint8 by optimising its pixels.

    ``vgg`` is any module mapping (B, 3, H, W) 0..255 images to ``{layer: features}`` holding every
    layer of ``config.layers`` (a ValueError says which are missing). ``device`` defaults to the
    loss network's. ``callback`` receives each trace entry as it is produced. Raises
    FloatingPointError when the loss becomes non-finite.
    """
    # the network's own defaults for empty layer lists (an extractor without `arch`: VGG's)
    config = (config or GatysConfig()).for_network(getattr(vgg, "arch", "vgg19"))
    config.validate()
    content_np = _check_image("content", content, floats=True)
    style_np = _check_image("style", style)
    extract = _checked_extractor(vgg, config.layers)

    tensors = _module_tensors(vgg)
    if any(t.is_inference() for t in tensors):
        raise ValueError("the loss network was built inside torch.inference_mode(); its weights cannot take part "
                         "in autograd: build it outside inference mode")
    if device is None:
        device = tensors[0].device if tensors else torch.device("cpu")
    device = torch.device(device)
    if any(t.device.type != device.type for t in tensors):
        raise ValueError(f"the loss network is on {tensors[0].device}, not {device}: move it with .to(device)")

    with torch.inference_mode(False), torch.enable_grad():
        return _run(content_np, style_np, extract, config, device, callback,
                    getattr(vgg, "loss_model", type(vgg).__name__))


def _run(
    content_np: np.ndarray,
    style_np: np.ndarray,
    extract: Extractor,
    config: GatysConfig,
    device: torch.device,
    callback: Callable[[dict], None] | None,
    loss_model: str,
) -> GatysResult:
    content = image_to_tensor(content_np, device).contiguous()  # (1, 3, H, W)
    style = image_to_tensor(style_np, device).contiguous()  # (1, 3, h, w)
    if config.style_size is not None:
        style = _resize_long_side(style, config.style_size)
    # Gram matrices are size-normalised, so one set of style targets serves every pyramid level.
    style_targets = style_grams(extract, style, config.style_layers, config.style_scales)

    height, width = content.shape[-2:]
    sizes = pyramid_sizes(height, width, config.pyramid_levels, config.pyramid_min_side)
    image = _initial_image(config, content, style, sizes[0])
    del style
    trace: list[dict] = []
    plan = LevelPlan(config.steps, config.optimizer, config.learning_rate,
                     (config.content_weight, config.style_weight, config.tv_weight), config.content_layers,
                     config.style_layers, config.style_layer_weights, config.log_every)
    for level, size in enumerate(sizes):
        image = _resize(image, size).detach()  # upsample the previous level's result
        with torch.no_grad():
            feats = extract(_resize(content, size))
            content_targets = {layer: feats[layer].detach() for layer in config.content_layers}
            del feats
        image = optimize_level(image, extract, content_targets, style_targets, plan, level, trace, callback)
        del content_targets

    if config.preserve_color:
        image = _preserve_color(image, content)
    out = image[0].permute(1, 2, 0).clamp(0, 255)  # (H, W, 3); a float content's result is not rounded
    out = (out if content_np.dtype == np.float32 else out.round().to(torch.uint8)).cpu().numpy()
    return GatysResult(image=out, trace=trace, loss_model=loss_model)
