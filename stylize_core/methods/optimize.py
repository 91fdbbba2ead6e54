"""Gatys et al. image optimisation towards each style image (no network to train; slow)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..builder import BuiltStylizer, Opener, SetupError, StylizerSpec, loss_network, style_targets
from ..checkpoint import StyleModel
from ..gatys_stylizer import GatysStylizer
from ..loss_meter import LossMeter


def build(spec: StylizerSpec, opener: Opener, device: torch.device, checkpoints: Mapping[str, StyleModel],
          sha256: dict[str, str]) -> BuiltStylizer:
    targets = style_targets(spec, opener, checkpoints, sha256)
    missing = [n for n in spec.style_names if n not in targets]
    if missing:
        raise SetupError(f"--method optimize needs a style image for {missing}: pass --style-image NAME=URI")
    vgg = loss_network(spec, opener)
    meter = None if vgg is None else LossMeter(vgg, targets, short_side=spec.metrics_size, device=device,
                                               stat_ratio=spec.metrics_ratio)
    gatys = GatysStylizer(
        {n: targets[n] for n in spec.style_names}, spec.gatys, arch=spec.vgg, weights=spec.vgg_weights,
        opener=opener, device=spec.device, strength=spec.strength, meter=meter,
    )
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return BuiltStylizer(gatys, sha256, gatys.loss_model, device_name)
