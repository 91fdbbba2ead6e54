"""Feed-forward style networks (Johnson et al. 2016): single-style, and multi-style with a selection or blend."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..builder import BuiltStylizer, Opener, StylizerSpec, loss_network, style_targets, stylizer_config
from ..checkpoint import StyleModel
from ..stylizer import Stylizer


def build(spec: StylizerSpec, opener: Opener, device: torch.device, checkpoints: Mapping[str, StyleModel],
          sha256: dict[str, str]) -> BuiltStylizer:
    targets = style_targets(spec, opener, checkpoints, sha256)
    config = stylizer_config(spec)
    stylizer = Stylizer(dict(checkpoints), loss_network(spec, opener), config, style_images=targets)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return BuiltStylizer(stylizer, sha256, stylizer.loss_model, device_name, dict(checkpoints), stylizer.backend)
