"""Style-network checkpoints: this project's format and pytorch/examples' bare state dicts.

Everything is loaded with ``torch.load(..., weights_only=True)``: a file that needs arbitrary
unpickling (code objects, custom classes) is refused and nothing in it runs. Errors say why: the
blocked import's name, "is empty", "is a directory", "not a PyTorch checkpoint", or the first
missing/unexpected keys and mismatched shapes.

Project format (a plain dict)::

    {"format": "stylize.style_model", "version": 1 (pytorch/examples layout) or 2 (any other),
     "arch": {"width": 1.0, "blocks": 5, "depthwise": False, "num_styles": 1},  # NetConfig
     "state_dict": {tensors; the default arch has pytorch/examples' 62 keys},
     "metadata": {"style": str, "styles": [str, ...] (multi-style), "training_config": {...},
                  "loss_model": str, ...},
     "style_image": uint8 tensor (H, W, 3) or absent,            # single-style
     "style_images": [uint8 tensor (H, W, 3), ...] or absent}    # multi-style, one per style

A checkpoint without ``arch`` (version 1 of this code, or a bare state dict) is the default layout.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from .file_errors import FileUnusable, read_failure, sniff_checkpoint
from .style_mix import Selection, mix_label, model_id, normalize_weights
from .transformer_net import NetConfig, TransformerNet

FORMAT = "stylize.style_model"
FORMAT_VERSION = 2
ENHANCE_FORMAT = "stylize.enhance_model"  # stylize_core.enhance_checkpoint
# Old pytorch/examples checkpoints were saved when InstanceNorm2d tracked running stats.
_LEGACY_KEY = re.compile(r"(^|\.)in\d+\.(running_mean|running_var|num_batches_tracked)$")
# What torch's weights-only unpickler says when it meets an import it does not allow.
_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")
# Modules whose functions pickle under the platform module's name (os.system -> posix.system).
_PLATFORM_MODULES = {"posix": "os", "nt": "os", "_operator": "operator", "builtins": ""}
_SHOWN = 3  # keys listed in a mismatch message

Opener = Callable[[str], bytes]


class StyleModelError(FileUnusable):
    """A style checkpoint cannot be loaded (missing, unsafe or not a TransformerNet), or a style
    selection does not fit the checkpoint: ``cause`` classifies it (:mod:`stylize_core.file_errors`)."""

    def __init__(self, source: str, cause: str, reason: str, hint: str | None = None) -> None:
        super().__init__("checkpoint", source, cause, reason, hint)


@dataclass
class StyleModel:
    """A loaded style network with what is known about it.

    ``model`` maps (B, 3, H, W) 0..255 -> (B, 3, H, W) for the chosen style. For a multi-style
    checkpoint, :meth:`select` chooses a style or a blend; until then ``model`` is the whole
    conditional network and calling it without style weights raises (``needs_selection``).
    """

    model: nn.Module
    metadata: dict[str, Any] = field(default_factory=dict)
    style_image: np.ndarray | None = None  # (H, W, 3) uint8 of the chosen style, when known
    sha256: str = ""  # of the checkpoint bytes
    source: str = ""
    arch: NetConfig = field(default_factory=NetConfig)
    style_names: tuple[str, ...] = ()  # one per style of the network (multi-style: metadata["styles"])
    style_images: tuple[np.ndarray | None, ...] = ()  # one per style, for style losses / blended targets
    weights: tuple[float, ...] | None = None  # the selection over style_names (sums to 1), multi-style only
    network: TransformerNet | None = None  # the whole network (== model for single-style checkpoints)
    # An enhancement checkpoint's task, scale and degradation (stylize_core.enhance_checkpoint); None for styles
    enhance: Any = None

    @property
    def multi_style(self) -> bool:
        return self.arch.multi_style

    @property
    def needs_selection(self) -> bool:
        """A multi-style checkpoint with no style or blend chosen yet."""
        return self.multi_style and self.weights is None

    @property
    def model_id(self) -> str:
        """Identifies what ``model`` renders, in metrics and ledgers (rule: :mod:`stylize_core.style_mix`):
        the checkpoint sha256, or for a selection sha256 of ``"{sha256}|{canonical mix}"``."""
        return model_id(self.sha256, self.weights)

    @property
    def name(self) -> str:
        """The style's name, or for a blend ``name:weight+name:weight``."""
        if self.weights is not None:
            return mix_label(self.weights, self.style_names)
        return str(self.metadata.get("style") or "")

    def select(self, selection: Selection) -> StyleModel:
        """Style ``selection`` (index, name, or mapping of them to weights, normalised to sum to one)
        of this checkpoint, as a new StyleModel whose ``model`` is a plain single-style network."""
        try:
            weights = normalize_weights(selection, self.style_names or ("",) * self.arch.num_styles)
        except ValueError as exc:
            raise StyleModelError(self.source, "selection", str(exc),
                                  "choose one of its styles (python -m jobs.styles URI lists them)") from None
        if not self.multi_style:
            return self  # the only style there is
        network = self.network if self.network is not None else self.model
        model = network.bake_style(torch.tensor(weights)).eval().requires_grad_(False)  # type: ignore[operator]
        chosen = [i for i, w in enumerate(weights) if w > 0]
        image = self.style_images[chosen[0]] if len(chosen) == 1 and self.style_images else None
        return replace(self, model=model, weights=weights, style_image=image)


# --- reading -----------------------------------------------------------------------------------------


def _read(source: str, opener: Opener | None) -> bytes:
    try:
        if opener is not None:
            return opener(source)
        with open(source, "rb") as f:
            return f.read()
    except Exception as exc:  # OSErrors, and what remote filesystems raise (an HTTP 403 is no OSError)
        raise StyleModelError(source, *read_failure(exc)) from None


def _public_name(module: str, name: str) -> str:
    module = _PLATFORM_MODULES.get(module, module)
    return f"{module}.{name}" if module else name


def _pickle_globals(raw: bytes) -> list[str]:
    """Imports a pickle would perform (GLOBAL / STACK_GLOBAL), found by reading its opcodes, never
    running them. For a torch zip checkpoint the pickle is its ``data.pkl``."""
    if raw.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                raw = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
        except (zipfile.BadZipFile, StopIteration, KeyError):
            return []
    found, strings = [], []
    try:
        for opcode, arg, _ in pickletools.genops(raw):
            if opcode.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                found.append(_public_name(module, name))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(_public_name(strings[-2], strings[-1]))
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a truncated or odd pickle: report what was found before it
        pass
    return found


def _blocked_global(raw: bytes, message: str) -> str | None:
    match = _GLOBAL_IN_MESSAGE.search(message)
    if match:
        module, _, name = match.group(1).rpartition(".")
        return _public_name(module, name)
    allowed = ("torch.", "collections.OrderedDict", "_codecs.encode", "numpy.")
    return next((g for g in _pickle_globals(raw) if not g.startswith(allowed)), None)


def _torch_load(raw: bytes, source: str) -> Any:
    # Empty, an HTML page, a cut-short archive: torch would fail with a bare KeyError or EOFError.
    if problem := sniff_checkpoint(raw):
        raise StyleModelError(source, *problem)
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        culprit = _blocked_global(raw, str(exc))
        if culprit:
            raise StyleModelError(source, "unsafe",
                                  f"refused to load it: it would import {culprit}, which a tensor checkpoint never "
                                  "needs (loaded with torch.load weights_only=True; nothing in it ran)") from None
        raise StyleModelError(source, "unsafe", "refused to load it: it is not a plain tensor checkpoint "
                              f"(torch.load weights_only=True said: {_first_line(exc)})") from None
    except Exception as exc:  # a damaged archive or pickle: cut short, or bytes changed in transit
        raise StyleModelError(source, "truncated", "it is damaged or truncated (torch.load said: "
                              f"{type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    informative = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Check the documentation"))]
    return (informative or lines or [type(exc).__name__])[0][:300]


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _listed(items: Sequence[str]) -> str:
    more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _build(state: dict[str, torch.Tensor], arch: NetConfig, source: str) -> TransformerNet:
    """A TransformerNet of ``arch`` with ``state`` loaded strictly, or an error naming what differs."""
    model = TransformerNet(arch)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {_shape(state[k])} (expected {_shape(v)})" for k, v in expected.items()
              if k in state and _shape(state[k]) != _shape(v)]
    if missing or unexpected or shapes:
        parts = [f"missing keys: {_listed(missing)}" if missing else "",
                 f"unexpected keys: {_listed(unexpected)}" if unexpected else "",
                 f"shape mismatches: {_listed(shapes)}" if shapes else ""]
        raise StyleModelError(source, "wrong network",
                              f"it does not match TransformerNet({arch.describe()}): {', '.join(p for p in parts if p)}")
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


def _image(value: Any) -> np.ndarray | None:
    return value.to(torch.uint8).numpy() if isinstance(value, torch.Tensor) else None


def load_style_model(
    source: str, *, opener: Opener | None = None, data: bytes | None = None, style: Selection | None = None
) -> StyleModel:
    """Load a style network from a path (or any URI, through ``opener(uri) -> bytes``).

    Accepts this project's checkpoints (any :class:`NetConfig`) and bare pytorch/examples
    ``fast_neural_style`` state dicts (the default layout), including old ones with
    ``inN.running_mean``/``running_var`` keys (dropped). fp16 weights are promoted to float32.
    ``style`` selects a style or blend of a multi-style checkpoint (:meth:`StyleModel.select`).
    """
    if data is None and opener is None and os.path.isdir(source):
        raise StyleModelError(source, "directory", "it is a directory")
    raw = data if data is not None else _read(source, opener)
    digest = hashlib.sha256(raw).hexdigest()
    obj = _torch_load(raw, source)

    metadata: dict[str, Any] = {}
    images: list[np.ndarray | None] = []
    arch = NetConfig()
    if isinstance(obj, dict) and obj.get("format") == ENHANCE_FORMAT:
        return _enhance_model(obj, source, digest)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if int(obj.get("version", 0)) > FORMAT_VERSION:
            raise StyleModelError(source, "wrong network", f"it has checkpoint format version {obj['version']}, "
                                  f"newer than {FORMAT_VERSION}", "update this project to load it")
        try:
            arch = NetConfig.from_dict(obj.get("arch"))
        except (TypeError, ValueError) as exc:
            raise StyleModelError(source, "wrong network", f"it has an invalid architecture record: {exc}") from None
        state = obj.get("state_dict")
        if not isinstance(state, dict):
            raise StyleModelError(source, "wrong network", "it is a style checkpoint without a state dict")
        metadata = dict(obj.get("metadata") or {})
        if arch.multi_style:
            images = [_image(v) for v in obj.get("style_images") or []] or [None] * arch.num_styles
        else:
            images = [_image(obj.get("style_image"))]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
        images = [None]
    else:
        raise StyleModelError(source, "wrong network", "it is neither a style checkpoint nor a TransformerNet state dict")

    state = {k: v.float() for k, v in state.items() if not _LEGACY_KEY.search(k)}
    model = _build(state, arch, source)
    if arch.multi_style:
        names = tuple(str(n) for n in metadata.get("styles") or [f"style{i}" for i in range(arch.num_styles)])
        if len(names) != arch.num_styles or len(images) != arch.num_styles:
            raise StyleModelError(source, "wrong network", f"it lists {len(names)} style names and {len(images)} "
                                  f"style images for a network of {arch.num_styles} styles")
    else:
        names = (str(metadata.get("style") or ""),)
    loaded = StyleModel(model=model, metadata=metadata, style_image=images[0] if not arch.multi_style else None,
                        sha256=digest, source=source, arch=arch, style_names=names, style_images=tuple(images),
                        network=model)
    return loaded.select(style) if style is not None else loaded


def _enhance_model(obj: dict[str, Any], source: str, digest: str) -> StyleModel:
    """An enhancement checkpoint as a StyleModel (no style image; ``enhance`` says what it restores)."""
    from .enhance_checkpoint import parse

    net, info, metadata = parse(obj, source, StyleModelError)
    metadata.setdefault("style", info.task)
    return StyleModel(model=net, metadata=metadata, sha256=digest, source=source, arch=net.arch,  # type: ignore[arg-type]
                      style_names=(info.task,), style_images=(None,), network=None, enhance=info)


# --- writing -----------------------------------------------------------------------------------------


def _uint8_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.uint8))


def checkpoint_bytes(
    model: TransformerNet,
    *,
    style_image: np.ndarray | None = None,
    style_images: Sequence[np.ndarray] | None = None,
    half: bool = False,
    **metadata: Any,
) -> bytes:
    """Serialise ``model`` in this project's format; ``metadata`` must be plain data (str, numbers,
    lists, dicts) so that ``weights_only`` loading accepts it. A multi-style network takes
    ``style_images`` (one per style) and ``styles=[names]`` in ``metadata``."""
    arch = getattr(model, "arch", NetConfig())
    state = {k: (v.detach().half() if half else v.detach().float()).cpu().clone() for k, v in model.state_dict().items()}
    # Version 1 for pytorch/examples' layout: code from before architectures existed still loads it.
    version = 1 if arch.is_examples_layout else FORMAT_VERSION
    obj: dict[str, Any] = {"format": FORMAT, "version": version, "arch": arch.to_dict(), "state_dict": state,
                           "metadata": metadata}
    if arch.multi_style:
        names = metadata.get("styles")
        if names is None or len(names) != arch.num_styles:
            raise ValueError(f"a network of {arch.num_styles} styles needs styles=[{arch.num_styles} names] in metadata")
        if style_images is not None:
            if len(style_images) != arch.num_styles:
                raise ValueError(f"{len(style_images)} style images for a network of {arch.num_styles} styles")
            obj["style_images"] = [_uint8_tensor(img) for img in style_images]
    elif style_image is not None:
        obj["style_image"] = _uint8_tensor(style_image)
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_style_model(
    model: TransformerNet,
    path: str,
    *,
    style_image: np.ndarray | None = None,
    style_images: Sequence[np.ndarray] | None = None,
    half: bool = False,
    **metadata: Any,
) -> str:
    """Write a checkpoint to a local ``path``; returns its sha256. (jobs/ writes to URIs with
    :func:`checkpoint_bytes`.)"""
    data = checkpoint_bytes(model, style_image=style_image, style_images=style_images, half=half, **metadata)
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def examples_state_dict(model: TransformerNet) -> dict[str, torch.Tensor]:
    """The bare state dict pytorch/examples ``fast_neural_style`` loads with ``strict=True``; only its
    own layout (the default :class:`NetConfig`) exists there."""
    arch = getattr(model, "arch", NetConfig())
    if not arch.is_examples_layout:
        raise ValueError(f"pytorch/examples has only the default layout, not {arch.describe()}")
    return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
