"""VGG16/VGG19 feature extractor used as the perceptual loss network.

Layers are addressed by the names of Gatys et al. (``relu1_1`` ... ``relu5_4``); the network is
trimmed after the deepest requested layer, frozen, and ImageNet normalisation happens inside the
forward pass (on a new tensor; the caller's input is never modified).

Weights (the ``weights`` spec):
  ``imagenet``       torchvision's ImageNet weights from its cache (``$TORCH_HOME/hub/checkpoints``);
                     never downloaded unless ``STYLIZE_ALLOW_DOWNLOAD=1``.
  ``random:SEED``    deterministic random init, for tests and demos only.
  a path or URI      a state dict, torchvision layout (``features.N.*``) or features-only (``N.*``).
The spec is reported by :attr:`VGGFeatures.loss_model` and travels with every loss it produces.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from .file_errors import FileUnusable, sniff_checkpoint, unusable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Convolutions per block; torchvision's `features` is conv, relu, (conv, relu)*, pool for each block.
_BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}

Opener = Callable[[str], bytes]


class VGGWeightsError(RuntimeError):
    """The requested loss-network weights cannot be loaded (with instructions to fix it)."""


def layer_names(arch: str) -> list[str]:
    """Names of every module in torchvision's ``vgg*.features``, in order."""
    if arch not in _BLOCKS:
        raise ValueError(f"unknown VGG architecture {arch!r}; choose one of {sorted(_BLOCKS)}")
    names: list[str] = []
    for block, convs in enumerate(_BLOCKS[arch], start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


_WIDTHS = (64, 128, 256, 512, 512)  # output channels of each block's convolutions


def make_trunk(arch: str) -> nn.Sequential:
    """torchvision's ``vgg*.features`` (``make_layers(cfgs[...])`` without batch norm): the same modules
    in the same order, so state dicts load unchanged and a seeded build draws the same random weights,
    without importing torchvision (seconds per actor start; the ImageNet weights file is named below)."""
    if arch not in _BLOCKS:
        raise ValueError(f"unknown VGG architecture {arch!r}; choose one of {sorted(_BLOCKS)}")
    modules: list[nn.Module] = []
    channels = 3
    for convs, width in zip(_BLOCKS[arch], _WIDTHS):
        for _ in range(convs):
            modules += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = width
        modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*modules)


# torchvision's ImageNet weights files (``VGG16_Weights.IMAGENET1K_V1.url`` and VGG19's, torchvision
# 0.29.1; tests/stylize_core/test_vgg_losses.py checks them against torchvision). Written here because
# importing torchvision to look them up (torchvision.ops imports torch._dynamo) made each stylize
# actor's start on the default path (metrics with ImageNet VGG16) about 1.3 s longer
# (benchmarks/bench_actor_start.py, docs/benchmarks.md).
IMAGENET_WEIGHTS_URL = {
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
}


def imagenet_weights_path(arch: str) -> str:
    """Where torchvision's cache keeps (or would keep) the ImageNet weights file for ``arch``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(IMAGENET_WEIGHTS_URL[arch]))


def downloads_allowed() -> bool:
    """torchvision's weights are read from its cache; fetched only when STYLIZE_ALLOW_DOWNLOAD=1 asks for it
    (a batch job must not start a download per actor, and air-gapped clusters fail fast with the hint)."""
    return os.environ.get("STYLIZE_ALLOW_DOWNLOAD", "").lower() in ("1", "true", "yes")


def _load_imagenet_state(arch: str, allow_download: bool) -> dict[str, torch.Tensor]:
    path = imagenet_weights_path(arch)
    if not os.path.exists(path):
        url = IMAGENET_WEIGHTS_URL[arch]
        hint = (
            f"ImageNet {arch.upper()} weights are not in torchvision's cache: stage the file "
            f"{os.path.basename(url)} (from {url}) at {path} (set TORCH_HOME to choose the cache "
            f"directory; STYLIZE_ALLOW_DOWNLOAD=1 fetches it there), or pass --vgg-weights PATH_OR_URI to a "
            f"state dict, or random:SEED for a demo."
        )
        if not allow_download:
            raise VGGWeightsError(hint)
        try:
            torch.hub.download_url_to_file(url, path, progress=False)
        except Exception as exc:  # no network, proxy, disk...: the staging hint is what the user needs
            raise VGGWeightsError(f"{hint} (download failed: {type(exc).__name__}: {exc})") from None
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_state_from(spec: str, opener: Opener | None) -> tuple[dict[str, torch.Tensor], str]:
    try:
        if opener is not None:
            data = opener(spec)
        else:
            with open(spec, "rb") as f:
                data = f.read()
    except Exception as exc:  # OSErrors, and what remote filesystems raise (an HTTP 403 is no OSError)
        raise VGGWeightsError(unusable("VGG weights", spec, exc).line()) from None
    digest = hashlib.sha256(data).hexdigest()
    if problem := sniff_checkpoint(data):
        raise VGGWeightsError(FileUnusable("VGG weights", spec, *problem).line())
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = f"it cannot be loaded as a plain state dict (torch.load weights_only=True said: {exc})"
        raise VGGWeightsError(FileUnusable("VGG weights", spec, "wrong weights", reason.splitlines()[0]).line()) from None
    if not isinstance(state, dict):
        raise VGGWeightsError(FileUnusable("VGG weights", spec, "wrong weights", "it is not a state dict").line())
    return state, digest


def _features_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept a full torchvision VGG state dict or a features-only one; return features-only keys."""
    if any(k.startswith("features.") for k in state):
        return {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    return dict(state)


class VGGFeatures(nn.Module):
    """Frozen VGG feature extractor returning the requested layers by name.

    ``forward`` takes RGB images in 0..255 (B, 3, H, W) and returns ``{layer: (B, C, h, w)}``
    in network order.
    """

    def __init__(
        self,
        arch: str = "vgg16",
        layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
        weights: str = "imagenet",
        *,
        opener: Opener | None = None,
        allow_download: bool | None = None,  # None: as STYLIZE_ALLOW_DOWNLOAD says (default: no)
    ) -> None:
        super().__init__()
        names = layer_names(arch)
        unknown = [name for name in layers if name not in names]
        if unknown or not layers:
            raise ValueError(f"unknown {arch} layer(s) {unknown or list(layers)}; valid: {names}")
        self.arch = arch
        self.layers = tuple(sorted(set(layers), key=names.index))
        depth = max(names.index(name) for name in self.layers) + 1
        self._names = names[:depth]

        # Only the convolutional trunk: building the full classifier (120M parameters) just to drop
        # it would cost seconds per actor start.
        if weights.startswith("random:"):
            seed = int(weights.split(":", 1)[1])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                features = make_trunk(arch)
                for module in features.modules():
                    if isinstance(module, nn.Conv2d):  # torchvision's own VGG init
                        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                        nn.init.zeros_(module.bias)
            self.loss_model = f"{arch}/random:{seed}"
        else:
            features = make_trunk(arch)
            if weights == "imagenet":
                state = _features_state(_load_imagenet_state(
                    arch, downloads_allowed() if allow_download is None else allow_download))
                self.loss_model = f"{arch}/imagenet"
            else:
                raw, digest = _load_state_from(weights, opener)
                state = _features_state(raw)
                self.loss_model = f"{arch}/sha256:{digest[:16]}"
            try:
                features.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                reason = f"it is not a {arch} state dict ({str(exc).splitlines()[0][:300]})"
                raise VGGWeightsError(FileUnusable("VGG weights", weights, "wrong weights", reason).line()) from None

        modules = list(features.children())[:depth]
        for module in modules:
            if isinstance(module, nn.ReLU):
                module.inplace = False  # collected activations must not be overwritten downstream
        self.features = nn.Sequential(*modules)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        # Always frozen: no dropout/batch-norm here, but keep eval() semantics whatever a trainer calls.
        return super().train(False)

    def forward(self, images: torch.Tensor, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """``layers`` (a subset of :attr:`layers`) stops the pass at the deepest one asked for."""
        wanted = set(self.layers if layers is None else layers)
        if not wanted <= set(self.layers):
            raise ValueError(f"layers {sorted(wanted - set(self.layers))} were not built into this network")
        x = (images - self.mean) / self.std  # new tensor: callers' images stay untouched
        out: dict[str, torch.Tensor] = {}
        for name, module in zip(self._names, self.features):
            x = module(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out
