"""The one registry of stylisation methods: a method's name -> the function that builds its stylizer.

Every program (the batch job's actors, the video workers, the local CLI, the nightly catalog through
the batch job) builds what stylises through :func:`build_stylizer`, so a new method is one module
under :mod:`stylize_core.methods` and one entry in :data:`METHODS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch

from .backends import BackendError
from .builder import BuiltStylizer, Opener, SetupError, StylizerSpec, check_device, load_checkpoints
from .checkpoint import StyleModel
from .methods import adain, feedforward, optimize, predict
from .region_stylizer import RegionRenderer
from .style_encoding import StyleEncodings
from .vgg import VGGWeightsError

Build = Callable[[StylizerSpec, Opener, torch.device, Mapping[str, StyleModel], dict[str, str]], BuiltStylizer]
Encode = Callable[[StylizerSpec, Opener, torch.device], StyleEncodings]


@dataclass(frozen=True)
class Method:
    build: Build
    needs_checkpoints: bool  # styles are checkpoints (else style images only)
    summary: str
    # what the method derives from each style image, computed once per run (None: nothing to share)
    encode: Encode | None = None


METHODS: dict[str, Method] = {
    "feedforward": Method(feedforward.build, True, "style networks (Johnson et al.), single- and multi-style"),
    "optimize": Method(optimize.build, False, "per-image Gatys optimisation towards a style image"),
    "adain": Method(adain.build, False, "AdaIN (Huang & Belongie): any style image, pytorch-AdaIN's weights",
                    adain.encode),
    "predict": Method(predict.build, False, "style prediction (Ghiasi et al.): any style image, one feed-forward pass",
                      predict.encode),
}


def method(name: str) -> Method:
    """The registered method ``name``, or SetupError naming the ones there are."""
    try:
        return METHODS[name]
    except KeyError:
        raise SetupError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


def build_stylizer(spec: StylizerSpec, opener: Opener, loaded: Mapping[str, StyleModel] | None = None) -> BuiltStylizer:
    """Load every model ``spec`` names (``loaded``: style networks the caller already has) and build
    the method's stylizer; SetupError (one line saying what to fix) when anything is missing."""
    entry = method(spec.method)
    device = check_device(spec.device)
    checkpoints = dict(loaded) if loaded is not None else load_checkpoints(spec.styles, opener, spec.mixes)
    sha256 = {name: sm.model_id for name, sm in checkpoints.items()}  # a blend is a model of its own
    enhancing = [name for name, sm in checkpoints.items() if sm.enhance is not None]
    if enhancing and spec.method != "feedforward":
        name = enhancing[0]
        raise SetupError(f"style {name!r} is an enhancement network ({checkpoints[name].enhance.task}); "
                         f"--method {spec.method} cannot run it: use --method feedforward")
    with _setup_errors():
        built = entry.build(spec, opener, device, checkpoints, sha256)
        if spec.regions:  # several of the run's styles in one image, by a label mask
            built.regions = RegionRenderer(built.stylizer, spec.regions, built.model_sha256, spec.method,
                                           built.models)
            built.model_sha256.update(built.regions.model_ids)
        return built


def encode_styles(spec: StylizerSpec, opener: Opener) -> StyleEncodings | None:
    """What ``spec``'s method derives from its style images, once for a whole run (a Ray job computes
    it in one task and gives it to every actor as ``spec.encodings``); None for methods that derive
    nothing. SetupError (one line) when a model or style image is unusable."""
    entry = method(spec.method)
    if entry.encode is None:
        return None
    device = check_device(spec.device)
    with _setup_errors():
        return entry.encode(spec, opener, device)


@contextlib.contextmanager
def _setup_errors() -> Iterator[None]:
    """What stops a build, as SetupError with its one line."""
    try:
        yield
    except (VGGWeightsError, BackendError) as exc:
        raise SetupError(str(exc)) from None
    except SetupError:
        raise
    except ValueError as exc:  # an impossible Gatys setting, a VGG state dict of the wrong shape, ...
        raise SetupError(str(exc)) from None
