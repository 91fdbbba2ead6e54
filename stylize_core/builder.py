"""What every method's builder shares: the spec, loading checkpoints, style images and the loss network.

A method (feed-forward networks, Gatys optimisation, ...) is one module under
:mod:`stylize_core.methods` and one entry in :mod:`stylize_core.registry`, whose
:func:`~stylize_core.registry.build_stylizer` every program calls. Storage stays outside the core:
files are read through ``opener(uri) -> bytes``.

Everything that stops a build is a :class:`SetupError` whose message is one line naming the style,
file or option to fix (the jobs turn it into exit status 2).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .checkpoint import StyleModel, StyleModelError, load_style_model
from .file_errors import FileUnusable, unusable
from .gatys import GatysConfig
from .image_io import ImageDecodeError, decode_image
from .loss_meter import LossMeter, StyleTarget
from .loss_network import LossNetwork, build_loss_network
from .style_encoding import GramTarget, StyleEncodings
from .style_mix import Selection
from .style_result import resolve_device
from .stylizer import Stylizer, StylizerConfig

if TYPE_CHECKING:
    from .adain import AdaINStylizer
    from .gatys_stylizer import GatysStylizer

Opener = Callable[[str], bytes]


class SetupError(ValueError):
    """Nothing can be stylised as configured; the message says what to fix."""


@dataclass
class StylizerSpec:
    """What to build. ``styles``: name -> checkpoint URI; ``style_images``: name -> image URI (the
    Gatys target, or the style-loss target for checkpoints without a style image)."""

    styles: Mapping[str, str]
    style_images: Mapping[str, str] = field(default_factory=dict)
    method: str = "feedforward"  # a name in stylize_core.registry.METHODS
    vgg: str = "vgg16"  # loss network: vgg16, vgg19, texture[:SEED] (stylize_core.loss_network)
    vgg_weights: str = "imagenet"
    metrics: bool = True
    metrics_size: int = 256
    metrics_ratio: bool = False  # also style_stat_ratio: the input's loss-network pass goes on to the style layers
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
    # feed-forward tiling (stylize_core.tiled_forward): forced tile side, activation budget, seamless output
    tile: int = 0
    max_memory: int = 0
    tileable: bool = False
    tile_stats: str = "auto"  # auto or one of stylize_core.tiling.STATS_MODES (stylize_core.tiled_forward)
    # AdaIN (stylize_core.methods.adain): pytorch-AdaIN's vgg_normalised.pth and decoder.pth, or our
    # one-file checkpoint as adain_decoder alone; alpha blends the AdaIN features with the content's
    adain_encoder: str = ""
    adain_decoder: str = ""
    alpha: float = 1.0  # adain and predict: style strength
    # style predictor (stylize_core.methods.predict): its one-file checkpoint ("" = the shipped demo)
    predictor: str = ""
    # adain and predict: the style images' encodings made once for the whole run (a Ray job's encoding
    # task, stylize_core.registry.encode_styles); None: the builder reads and encodes the images itself
    encodings: StyleEncodings | None = None
    # regions styles (stylize_core.region_stylizer): name -> the run's styles for labels 1, 2, ...
    regions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def style_names(self) -> list[str]:
        if self.method in ("adain", "predict"):  # styles are style images, plus interpolations of them (mixes)
            return list(self.style_images) + [n for n in self.mixes if n not in self.style_images]
        extra = [n for n in self.style_images if n not in self.styles] if self.method == "optimize" else []
        return list(self.styles) + extra


@dataclass
class BuiltStylizer:
    """The stylizer and how its results are labelled in metrics."""

    stylizer: Stylizer | "GatysStylizer" | "AdaINStylizer"
    model_sha256: dict[str, str]  # style -> sha256 of its checkpoint (of its style image, optimize-only)
    loss_model: str  # "" without metrics
    device_name: str  # "cpu" or the CUDA device's name
    models: dict[str, StyleModel] = field(default_factory=dict)
    backend: str = ""  # what runs the style networks: runtime and version, precision, device (metrics rows)
    encodings: StyleEncodings | None = None  # adain and predict: the style images' encodings it runs with
    regions: Any = None  # stylize_core.region_stylizer.RegionRenderer when the spec names regions styles

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
        except StyleModelError as exc:  # every cause, reading included (stylize_core.file_errors)
            raise SetupError(exc.line(f"style {name!r}")) from None
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


def read_style_image(name: str, uri: str, opener: Opener, max_pixels: int = 64_000_000) -> tuple[np.ndarray, str]:
    """Style ``name``'s image (H, W, 3) uint8 and the sha256 of its bytes; SetupError saying why when
    it cannot be read or decoded (training reads its style images through this too)."""
    try:
        data = opener(uri)
    except Exception as exc:  # OSErrors, and what remote filesystems raise (an HTTP 403 is no OSError)
        raise SetupError(unusable("style image", uri, exc).line(f"style {name!r}")) from None
    try:
        return decode_image(data, max_pixels=max_pixels), hashlib.sha256(data).hexdigest()
    except ImageDecodeError as exc:
        cause = "empty" if not data else "truncated" if "truncated" in str(exc) else "not an image"
        problem = FileUnusable("style image", uri, cause, f"it is not a usable image ({exc})")
        raise SetupError(problem.line(f"style {name!r}")) from None


def encode_style_images(spec: StylizerSpec, opener: Opener, method: str, model_id: str, vgg: LossNetwork | None,
                        encode: Callable[[np.ndarray], dict[str, np.ndarray]], device: torch.device) -> StyleEncodings:
    """Read, decode and encode each of ``spec``'s style images once: ``encode(image)`` gives the
    method's arrays (one encoder pass), ``vgg`` (None without metrics) the Gram and statistics targets."""
    start = time.perf_counter()
    images, digests = {}, {}
    for name, uri in spec.style_images.items():
        images[name], digests[name] = read_style_image(name, uri, opener, spec.max_style_pixels)
    with torch.inference_mode():
        codes = {name: encode(image) for name, image in images.items()}
    grams = {}
    if vgg is not None:
        meter = LossMeter(vgg, images, short_side=spec.metrics_size, device=device)
        def host(tensors: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
            return {layer: t.float().cpu().numpy() for layer, t in tensors.items()}

        grams = {name: GramTarget(host(target.grams), host(target.means), host(target.stds))
                 for name, target in meter.style_targets.items() if target is not None}
    return StyleEncodings(method, model_id, vgg.loss_model if vgg is not None else "", digests, codes, grams,
                          passes=len(images), encode_ms=(time.perf_counter() - start) * 1000)


def run_encodings(spec: StylizerSpec, opener: Opener, method: str, model_id: str, vgg: LossNetwork | None,
                  encoder: Callable[[], Callable[[np.ndarray], dict[str, np.ndarray]]],
                  device: torch.device) -> StyleEncodings:
    """``spec.encodings`` when it was made for this method and these models (SetupError otherwise), or
    without it (the local CLI) the style images encoded here by ``encoder()``'s function."""
    if spec.encodings is None:
        return encode_style_images(spec, opener, method, model_id, vgg, encoder(), device)
    try:
        spec.encodings.check(method, model_id, vgg.loss_model if vgg is not None else "")
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    missing = sorted(set(spec.style_images) - set(spec.encodings.codes))
    if missing:
        raise SetupError(f"the run's style encodings lack style images {missing}")
    return spec.encodings


def stylizer_config(spec: StylizerSpec) -> StylizerConfig:
    """The feed-forward :class:`~stylize_core.stylizer.Stylizer`'s settings that ``spec`` asks for."""
    return StylizerConfig(
        device=spec.device, channels_last=spec.channels_last, bf16=spec.bf16, metrics=spec.metrics,
        metrics_short_side=spec.metrics_size, metrics_ratio=spec.metrics_ratio, strength=spec.strength,
        preserve_color=spec.preserve_color, max_batch=spec.max_batch, backend=spec.backend,
        tile=spec.tile, max_memory=spec.max_memory, tileable=spec.tileable, tile_stats=spec.tile_stats,
    )


def loss_network(spec: StylizerSpec, opener: Opener) -> LossNetwork | None:
    """The loss network the metrics (and Gatys) use, or None without metrics."""
    if not spec.metrics:
        return None
    return build_loss_network(spec.vgg, spec.vgg_weights, opener=opener)  # with its metric layers


def style_targets(spec: StylizerSpec, opener: Opener, checkpoints: Mapping[str, StyleModel],
                  sha256: dict[str, str]) -> dict[str, StyleTarget]:
    """Each style's loss target: its --style-image, else what its checkpoint carries. Styles known
    only by an image (optimize) are identified by the image's hash in ``sha256``."""
    targets: dict[str, StyleTarget] = {}
    for name, uri in spec.style_images.items():
        targets[name], digest = read_style_image(name, uri, opener, spec.max_style_pixels)
        sha256.setdefault(name, digest)
    for name, sm in checkpoints.items():
        if style_target(sm) is not None:
            targets.setdefault(name, style_target(sm))
    return targets
