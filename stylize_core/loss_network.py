"""The one place that turns a loss-network name into a network: Gatys, training, the metrics
(:class:`~stylize_core.loss_meter.LossMeter`) and the builder all call :func:`build_loss_network`.

Names (the ``--vgg`` option of the jobs):
  ``vgg16``, ``vgg19``     VGG with ``weights`` (``imagenet``, a state-dict path/URI, ``random:SEED``;
                           see :mod:`stylize_core.vgg`). ImageNet is the production default.
  ``texture[:SEED]``       the random multi-scale filter bank of :mod:`stylize_core.texture_net`
                           (seed 0 when left out). Nothing to download; it transfers texture where
                           random VGG does not, so demos and perception tests use it.

``weights`` belongs to VGG: for the texture network ``imagenet`` and ``random:N`` (the jobs' VGG
defaults) do not apply and its seed is the one in its name, while a weights *file* is refused,
because ignoring a file someone passed would be a silent fallback.

Each network has its own layer names, so an empty layer list in a config means "this network's
default for this use" (:func:`default_layers`); the resolved lists are what checkpoints record.
"""

from __future__ import annotations

from collections.abc import Sequence

from .texture_net import CONTENT_LAYERS as TEXTURE_CONTENT_LAYERS
from .texture_net import TextureFeatures, texture_layer_names
from .vgg import Opener, VGGFeatures, VGGWeightsError

VGG_NAMES = ("vgg16", "vgg19")
LossNetwork = VGGFeatures | TextureFeatures

# use -> (content layers, style layers) for VGG. "gatys": Gatys et al. 2016's choice (VGG19);
# "feedforward": Johnson et al. 2016's (training and the metrics of feed-forward outputs).
_VGG_DEFAULTS = {
    "gatys": (("relu4_2",), ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")),
    "feedforward": (("relu2_2",), ("relu1_2", "relu2_2", "relu3_3", "relu4_3")),
}
USES = tuple(_VGG_DEFAULTS)


def parse_loss_network(name: str) -> tuple[str, int | None]:
    """``"vgg16"`` -> ("vgg16", None); ``"texture:7"`` -> ("texture", 7); ValueError otherwise."""
    family, sep, seed = str(name).partition(":")
    if family in VGG_NAMES and not sep:
        return family, None
    if family == "texture":
        if not sep:
            return family, 0
        if seed.isdigit():
            return family, int(seed)
    raise ValueError(f"unknown loss network {name!r}; choose vgg16, vgg19, texture or texture:SEED")


def default_layers(name: str, use: str = "feedforward") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(content layers, style layers) of loss network ``name`` for ``use`` (one of :data:`USES`)."""
    if use not in _VGG_DEFAULTS:
        raise ValueError(f"use must be one of {USES}, not {use!r}")
    family, _ = parse_loss_network(name)
    if family == "texture":  # one layer of filters: every scale is a style layer for every use
        return TEXTURE_CONTENT_LAYERS, tuple(texture_layer_names())
    return _VGG_DEFAULTS[use]


def resolve_layers(
    name: str, content_layers: Sequence[str], style_layers: Sequence[str], use: str = "feedforward"
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The given layer lists, each empty one replaced by network ``name``'s default for ``use``."""
    content, style = default_layers(name, use)
    return tuple(content_layers) or content, tuple(style_layers) or style


def build_loss_network(
    name: str,
    weights: str = "imagenet",
    layers: Sequence[str] | None = None,
    *,
    use: str = "feedforward",
    opener: Opener | None = None,
    allow_download: bool = True,
) -> LossNetwork:
    """The frozen loss network ``name`` returning ``layers`` (None: its defaults for ``use``).

    Raises :class:`VGGWeightsError` when weights cannot be loaded (the jobs exit 2 on it) and
    ValueError for an unknown name or layer.
    """
    family, seed = parse_loss_network(name)
    if layers is None:
        content, style = default_layers(name, use)
        layers = tuple(dict.fromkeys(content + style))
    if family == "texture":
        if weights not in ("imagenet", "") and not str(weights).startswith("random:"):
            raise VGGWeightsError(
                f"the texture loss network has no weights file (its filters come from its seed, "
                f"{name}); drop --vgg-weights {weights} or choose --vgg vgg16/vgg19")
        return TextureFeatures(seed or 0, layers)
    return VGGFeatures(family, layers, weights, opener=opener, allow_download=allow_download)
