"""Feed-forward style networks (Johnson et al. 2016): single-style, and multi-style with a selection or blend."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..builder import BuiltStylizer, Opener, StylizerSpec, loss_network, style_targets
from ..checkpoint import StyleModel
from ..stylizer import Stylizer, StylizerConfig


def build(spec: StylizerSpec, opener: Opener, device: torch.device, checkpoints: Mapping[str, StyleModel],
          sha256: dict[str, str]) -> BuiltStylizer:
    targets = style_targets(spec, opener, checkpoints, sha256)
    config = StylizerConfig(
        device=spec.device, channels_last=spec.channels_last, bf16=spec.bf16, metrics=spec.metrics,
        metrics_short_side=spec.metrics_size, strength=spec.strength, preserve_color=spec.preserve_color,
        max_batch=spec.max_batch, backend=spec.backend,
        tile=spec.tile, max_memory=spec.max_memory, tileable=spec.tileable, tile_stats=spec.tile_stats,
    )
    stylizer = Stylizer(dict(checkpoints), loss_network(spec, opener), config, style_images=targets)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return BuiltStylizer(stylizer, sha256, stylizer.loss_model, device_name, dict(checkpoints), stylizer.backend)
