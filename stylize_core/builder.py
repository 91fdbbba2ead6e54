"""Builds what stylises (a :class:`Stylizer` or :class:`GatysStylizer`) from a plain spec.

The one place that turns "these checkpoints, these style images, this loss network, this device"
into loaded models: the Ray actor (``jobs.stylize_actor``) and the local CLI (``jobs.stylize_image``)
both call :func:`build_stylizer`, so they cannot drift apart. Storage stays outside the core: files
are read through ``opener(uri) -> bytes``.

Everything that stops a build is a :class:`SetupError` whose message is one line naming the style,
file or option to fix (the jobs turn it into exit status 2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from .backends import BackendError
from .checkpoint import StyleModel, StyleModelError, load_style_model
from .gatys import GatysConfig
from .gatys_stylizer import GatysStylizer
from .image_io import ImageDecodeError, decode_image
from .loss_meter import LossMeter, StyleTarget
from .loss_network import build_loss_network
from .style_mix import Selection
from .stylizer import Stylizer, StylizerConfig, resolve_device
from .vgg import VGGWeightsError

Opener = Callable[[str], bytes]


class SetupError(ValueError):
    """Nothing can be stylised as configured; the message says what to fix."""


@dataclass
class StylizerSpec:
    """What to build. ``styles``: name -> checkpoint URI; ``style_images``: name -> image URI (the
    Gatys target, or the style-loss target for checkpoints without a style image)."""

    styles: Mapping[str, str]
    style_images: Mapping[str, str] = field(default_factory=dict)
    method: str = "feedforward"  # or "optimize"
    vgg: str = "vgg16"  # loss network: vgg16, vgg19, texture[:SEED] (stylize_core.loss_network)
    vgg_weights: str = "imagenet"
    metrics: bool = True
    metrics_size: int = 256
    device: str = "auto"
    bf16: bool = True
    channels_last: bool = True
    strength: float = 1.0
    preserve_color: bool = False
    max_batch: int = 8
    backend: str = "eager"  # CPU runtime of the style networks (stylize_core.backends)
    # style -> a style (index or name) or a blend ({index or name: weight}) of a multi-style checkpoint
    mixes: Mapping[str, Selection] = field(default_factory=dict)
    gatys: GatysConfig = field(default_factory=GatysConfig)
    max_style_pixels: int = 64_000_000

    @property
    def style_names(self) -> list[str]:
        extra = [n for n in self.style_images if n not in self.styles] if self.method == "optimize" else []
        return list(self.styles) + extra


@dataclass
class BuiltStylizer:
    """The stylizer and how its results are labelled in metrics."""

    stylizer: Stylizer | GatysStylizer
    model_sha256: dict[str, str]  # style -> sha256 of its checkpoint (of its style image, optimize-only)
    loss_model: str  # "" without metrics
    device_name: str  # "cpu" or the CUDA device's name
    models: dict[str, StyleModel] = field(default_factory=dict)
    backend: str = "torch eager"  # the runtime of the style networks, with its version (metrics rows)

    def arch(self, style: str) -> str:
        """The style network's architecture as metrics rows record it ("" for Gatys optimisation)."""
        sm = self.models.get(style)
        return "" if sm is None else ",".join(f"{k}={v}" for k, v in sm.arch.to_dict().items())


def check_device(device: str) -> torch.device:
    """The torch device ``device`` names, or SetupError when it does not exist here."""
    try:
        dev = resolve_device(device)
    except RuntimeError as exc:
        raise SetupError(f"--device {device}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SetupError(f"--device {device}: CUDA is not available on this machine; use cpu or auto")
    return dev


def load_checkpoints(styles: Mapping[str, str], opener: Opener | None,
                     mixes: Mapping[str, Selection] | None = None) -> dict[str, StyleModel]:
    """Each style's network, read through ``opener`` (local files without one); ``mixes`` chooses a
    style or blend of multi-style checkpoints."""
    models = {}
    for name, uri in styles.items():
        try:
            models[name] = load_style_model(uri, opener=opener, style=(mixes or {}).get(name))
        except (FileNotFoundError, IsADirectoryError):
            raise SetupError(f"style {name!r}: checkpoint not found: {uri}") from None
        except StyleModelError as exc:
            raise SetupError(f"style {name!r}: {exc}") from None
        except OSError as exc:
            raise SetupError(f"style {name!r}: cannot read {uri}: {type(exc).__name__}: {exc}") from None
        if models[name].needs_selection:
            listed = ", ".join(f"{i}:{n}" for i, n in enumerate(models[name].style_names))
            raise SetupError(f"style {name!r}: {uri} is a multi-style network ({listed}); choose a style or a blend "
                             f"with --mix {name}=INDEX_OR_NAME or --mix {name}=A:WEIGHT,B:WEIGHT")
    return models


def style_target(sm: StyleModel) -> StyleTarget:
    """The style-loss target of a (selected) style network: its style image, or for a blend the
    (image, weight) pairs of the styles it mixes (None when an image is missing)."""
    if sm.weights is None or sm.style_image is not None:
        return sm.style_image
    pairs = [(sm.style_images[i], w) for i, w in enumerate(sm.weights) if w > 0]
    return None if any(image is None for image, _ in pairs) else pairs


def _style_image(name: str, uri: str, opener: Opener, max_pixels: int) -> tuple[np.ndarray, str]:
    try:
        data = opener(uri)
        return decode_image(data, max_pixels=max_pixels), hashlib.sha256(data).hexdigest()
    except FileNotFoundError:
        raise SetupError(f"style image for {name!r} not found: {uri}") from None
    except (OSError, ImageDecodeError) as exc:
        raise SetupError(f"cannot read style image {uri} for {name!r}: {type(exc).__name__}: {exc}") from None


def build_stylizer(spec: StylizerSpec, opener: Opener, loaded: Mapping[str, StyleModel] | None = None) -> BuiltStylizer:
    """Load every model ``spec`` names (``loaded``: style networks the caller already has) and build
    the stylizer; SetupError when anything is missing."""
    device = check_device(spec.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    checkpoints = dict(loaded) if loaded is not None else load_checkpoints(spec.styles, opener, spec.mixes)
    sha256 = {name: sm.model_id for name, sm in checkpoints.items()}  # a blend is a model of its own
    style_images: dict[str, StyleTarget] = {}
    for name, uri in spec.style_images.items():
        style_images[name], digest = _style_image(name, uri, opener, spec.max_style_pixels)
        sha256.setdefault(name, digest)  # optimize-only styles are identified by their image
    for name, sm in checkpoints.items():
        if style_target(sm) is not None:
            style_images.setdefault(name, style_target(sm))
    try:
        vgg = None
        if spec.metrics:
            vgg = build_loss_network(spec.vgg, spec.vgg_weights, opener=opener)  # its metric layers
        if spec.method == "optimize":
            missing = [n for n in spec.style_names if n not in style_images]
            if missing:
                raise SetupError(f"--method optimize needs a style image for {missing}: pass --style-image NAME=URI")
            meter = None
            if vgg is not None:
                meter = LossMeter(vgg, style_images, short_side=spec.metrics_size, device=device)
            gatys = GatysStylizer(
                {n: style_images[n] for n in spec.style_names}, spec.gatys, arch=spec.vgg, weights=spec.vgg_weights,
                opener=opener, device=spec.device, strength=spec.strength, meter=meter,
            )
            return BuiltStylizer(gatys, sha256, gatys.loss_model, device_name)
        config = StylizerConfig(
            device=spec.device, channels_last=spec.channels_last, bf16=spec.bf16, metrics=spec.metrics,
            metrics_short_side=spec.metrics_size, strength=spec.strength, preserve_color=spec.preserve_color,
            max_batch=spec.max_batch, backend=spec.backend,
        )
        stylizer = Stylizer(checkpoints, vgg, config, style_images=style_images)
        return BuiltStylizer(stylizer, sha256, stylizer.loss_model, device_name, checkpoints, stylizer.backend)
    except (VGGWeightsError, BackendError) as exc:
        raise SetupError(str(exc)) from None
    except SetupError:
        raise
    except ValueError as exc:  # an impossible Gatys setting, a VGG state dict of the wrong shape, ...
        raise SetupError(str(exc)) from None
