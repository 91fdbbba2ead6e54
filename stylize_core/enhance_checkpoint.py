"""Enhancement checkpoints: an :class:`~stylize_core.enhance_net.EnhanceNet` with the task it was trained for.

Format (a plain dict, loaded with ``torch.load(weights_only=True)`` like style checkpoints)::

    {"format": "stylize.enhance_model", "version": 1,
     "task": "sr2" | "sr4" | "denoise" | "deblock",
     "scale": 1 | 2 | 4,                                  # output size = input size x scale
     "degradation": {...},                                # stylize_core.degrade.Degradation.to_dict()
     "arch": {"scale": int, "channels": int, "blocks": int},
     "state_dict": {tensors},
     "metadata": {"training_config": {...}, ...}}

:func:`stylize_core.checkpoint.load_style_model` recognises the format, so an enhancement checkpoint
works wherever a style checkpoint does; the loaded :class:`~stylize_core.checkpoint.StyleModel`
carries an :class:`EnhanceInfo` in ``enhance`` (None for style networks).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import torch

from .degrade import Degradation
from .enhance_net import TASK_SCALES, EnhanceArch, EnhanceNet

FORMAT = "stylize.enhance_model"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class EnhanceInfo:
    """What an enhancement checkpoint was trained for."""

    task: str
    scale: int
    degradation: Degradation

    @property
    def super_resolution(self) -> bool:
        return self.scale > 1


def parse(obj: dict[str, Any], source: str, error: type) -> tuple[EnhanceNet, EnhanceInfo, dict[str, Any]]:
    """The network, its task and metadata from a loaded enhancement checkpoint dict; ``error(source,
    cause, reason)`` (StyleModelError) for anything that does not fit."""
    if int(obj.get("version", 0)) > FORMAT_VERSION:
        raise error(source, "wrong network", f"it has enhancement checkpoint version {obj['version']}, newer than "
                    f"{FORMAT_VERSION}", "update this project to load it")
    task = str(obj.get("task", ""))
    if task not in TASK_SCALES:
        raise error(source, "wrong network", f"it is an enhancement checkpoint for an unknown task {task!r} "
                    f"(known: {', '.join(TASK_SCALES)})")
    try:
        arch = EnhanceArch.from_dict(obj.get("arch"))
        degradation = Degradation.from_dict(obj.get("degradation"))
    except (TypeError, ValueError) as exc:
        raise error(source, "wrong network", f"it has an invalid enhancement record: {exc}") from None
    scale = int(obj.get("scale", arch.scale))
    if not (scale == arch.scale == TASK_SCALES[task] == degradation.scale):
        raise error(source, "wrong network", f"its task {task} (x{TASK_SCALES[task]}), scale x{scale}, network x"
                    f"{arch.scale} and degradation x1/{degradation.scale} disagree")
    state = obj.get("state_dict")
    if not isinstance(state, dict):
        raise error(source, "wrong network", "it is an enhancement checkpoint without a state dict")
    net = EnhanceNet(arch)
    expected = net.state_dict()
    state = {k: v.float() for k, v in state.items()}
    bad = sorted(set(expected) ^ set(state)) or [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        raise error(source, "wrong network", f"it does not match EnhanceNet({arch.describe()}): "
                    f"{', '.join(bad[:3])}{' (+%d more)' % (len(bad) - 3) if len(bad) > 3 else ''} differ")
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False), EnhanceInfo(task, scale, degradation), dict(obj.get("metadata") or {})


def enhance_checkpoint_bytes(net: EnhanceNet, task: str, degradation: Degradation, *, half: bool = False,
                             **metadata: Any) -> bytes:
    """Serialise ``net`` trained for ``task`` against ``degradation``; ``metadata`` must be plain data."""
    if TASK_SCALES.get(task) != net.arch.scale or degradation.scale != net.arch.scale:
        raise ValueError(f"task {task!r}, network x{net.arch.scale} and degradation x1/{degradation.scale} disagree")
    state = {k: (v.detach().half() if half else v.detach().float()).cpu().clone() for k, v in net.state_dict().items()}
    obj = {"format": FORMAT, "version": FORMAT_VERSION, "task": task, "scale": net.arch.scale,
           "degradation": degradation.to_dict(), "arch": net.arch.to_dict(), "state_dict": state,
           "metadata": metadata}
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_enhance_model(net: EnhanceNet, path: str, task: str, degradation: Degradation, *, half: bool = False,
                       **metadata: Any) -> str:
    """Write an enhancement checkpoint to a local ``path``; returns its sha256."""
    data = enhance_checkpoint_bytes(net, task, degradation, half=half, **metadata)
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()
