"""Style-network checkpoints: this project's format and pytorch/examples' bare state dicts.

Everything is loaded with ``torch.load(..., weights_only=True)``: a file that needs arbitrary
unpickling (code objects, custom classes) is refused and nothing in it runs.

Project format (a plain dict)::

    {"format": "stylize.style_model", "version": 1,
     "state_dict": {62 tensors, pytorch/examples keys},
     "metadata": {"style": str, "training_config": {...}, "loss_model": str, ...},
     "style_image": uint8 tensor (H, W, 3) or absent}   # lets consumers compute style losses
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .transformer_net import TransformerNet

FORMAT = "stylize.style_model"
FORMAT_VERSION = 1
# Old pytorch/examples checkpoints were saved when InstanceNorm2d tracked running stats.
_LEGACY_KEY = re.compile(r"(^|\.)in\d+\.(running_mean|running_var|num_batches_tracked)$")

Opener = Callable[[str], bytes]


class StyleModelError(ValueError):
    """A style checkpoint cannot be loaded (missing, unsafe or not a TransformerNet)."""


@dataclass
class StyleModel:
    """A loaded style network with what is known about it."""

    model: TransformerNet
    metadata: dict[str, Any] = field(default_factory=dict)
    style_image: np.ndarray | None = None  # (H, W, 3) uint8, when the checkpoint carries it
    sha256: str = ""  # of the checkpoint bytes: identifies the model in metrics and ledgers
    source: str = ""


def _read(source: str, opener: Opener | None) -> bytes:
    if opener is not None:
        return opener(source)
    try:
        with open(source, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise StyleModelError(f"style checkpoint not found: {source}") from None


def load_style_model(source: str, *, opener: Opener | None = None, data: bytes | None = None) -> StyleModel:
    """Load a style network from a path (or any URI, through ``opener(uri) -> bytes``).

    Accepts this project's checkpoints and bare pytorch/examples ``fast_neural_style`` state dicts,
    including old ones with ``inN.running_mean``/``running_var`` keys (dropped). fp16 weights are
    promoted to float32.
    """
    raw = data if data is not None else _read(source, opener)
    digest = hashlib.sha256(raw).hexdigest()
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise StyleModelError(
            f"refused to load {source}: it is not a plain tensor checkpoint and would need arbitrary "
            f"code to unpickle (torch.load weights_only=True said: {str(exc).splitlines()[0]})"
        ) from None
    except Exception as exc:
        raise StyleModelError(f"cannot read {source} as a PyTorch checkpoint: {type(exc).__name__}: {exc}") from None

    metadata: dict[str, Any] = {}
    style_image = None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if int(obj.get("version", 0)) > FORMAT_VERSION:
            raise StyleModelError(f"{source} has checkpoint format version {obj['version']}, newer than {FORMAT_VERSION}")
        state = obj["state_dict"]
        metadata = dict(obj.get("metadata") or {})
        if isinstance(obj.get("style_image"), torch.Tensor):
            style_image = obj["style_image"].to(torch.uint8).numpy()
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        raise StyleModelError(f"{source} is neither a style checkpoint nor a TransformerNet state dict")

    state = {k: v.float() for k, v in state.items() if not _LEGACY_KEY.search(k)}
    model = TransformerNet()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise StyleModelError(f"{source} does not match TransformerNet: {str(exc).splitlines()[0]}") from None
    model.eval().requires_grad_(False)
    return StyleModel(model=model, metadata=metadata, style_image=style_image, sha256=digest, source=source)


def checkpoint_bytes(
    model: TransformerNet,
    *,
    style_image: np.ndarray | None = None,
    half: bool = False,
    **metadata: Any,
) -> bytes:
    """Serialise ``model`` in this project's format; ``metadata`` must be plain data (str, numbers,
    lists, dicts) so that ``weights_only`` loading accepts it."""
    state = {k: (v.detach().half() if half else v.detach().float()).cpu().clone() for k, v in model.state_dict().items()}
    obj: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "state_dict": state, "metadata": metadata}
    if style_image is not None:
        obj["style_image"] = torch.from_numpy(np.ascontiguousarray(style_image, dtype=np.uint8))
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_style_model(
    model: TransformerNet, path: str, *, style_image: np.ndarray | None = None, half: bool = False, **metadata: Any
) -> str:
    """Write a checkpoint to a local ``path``; returns its sha256. (jobs/ writes to URIs with
    :func:`checkpoint_bytes`.)"""
    data = checkpoint_bytes(model, style_image=style_image, half=half, **metadata)
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def examples_state_dict(model: TransformerNet) -> dict[str, torch.Tensor]:
    """The bare state dict pytorch/examples ``fast_neural_style`` loads with ``strict=True``."""
    return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
