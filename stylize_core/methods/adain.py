"""AdaIN (Huang & Belongie 2017): any style image through one encoder/decoder pair, no training per style.

Styles are style images (``spec.style_images``); ``spec.mixes`` adds interpolations of them
(``{"new": {"a": 0.5, "b": 0.5}}``). Each style image is read, decoded and encoded once here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..adain import AdaINStylizer
from ..adain_checkpoint import load_adain
from ..adain_identity import adain_style_id
from ..builder import BuiltStylizer, Opener, SetupError, StylizerSpec, loss_network, read_style_image
from ..checkpoint import StyleModel
from ..demo_assets import demo_adain
from ..file_errors import FileUnusable
from ..loss_meter import LossMeter
from ..style_mix import style_image_parts

ENCODER_ALONE = ("--method adain's --encoder needs its --decoder: pass --encoder vgg_normalised.pth --decoder "
                 "decoder.pth, --decoder with a one-file AdaIN checkpoint, or neither for the shipped demo model")


def build(spec: StylizerSpec, opener: Opener, device: torch.device, checkpoints: Mapping[str, StyleModel],
          sha256: dict[str, str]) -> BuiltStylizer:
    if checkpoints:
        raise SetupError(f"--method adain takes style images, not style networks: pass --style-image NAME=URI "
                         f"instead of --style for {sorted(checkpoints)}")
    if spec.adain_encoder and not spec.adain_decoder:
        raise SetupError(ENCODER_ALONE)
    if not spec.style_images:
        raise SetupError("--method adain needs at least one --style-image NAME=URI")
    try:
        weights = load_adain(spec.adain_encoder or None, spec.adain_decoder or demo_adain(), opener)
    except FileUnusable as exc:
        raise SetupError(exc.line()) from None
    images, digests = {}, {}
    for name, uri in spec.style_images.items():
        images[name], digests[name] = read_style_image(name, uri, opener, spec.max_style_pixels)
    try:
        styles = style_image_parts(list(spec.style_images), spec.mixes)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    for name, parts in styles.items():
        sha256[name] = adain_style_id(weights.model_id, spec.alpha, [(digests[n], x) for n, x in parts])
    vgg = loss_network(spec, opener)
    meter = None
    if vgg is not None:
        targets = {name: images[parts[0][0]] if len(parts) == 1 else [(images[n], x) for n, x in parts]
                   for name, parts in styles.items()}
        meter = LossMeter(vgg, targets, short_side=spec.metrics_size, device=device)
    stylizer = AdaINStylizer(weights.encoder, weights.decoder, images, styles, alpha=spec.alpha,
                             strength=spec.strength, preserve_color=spec.preserve_color, device=str(device),
                             meter=meter)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    backend = f"torch-eager {torch.__version__} fp32 {device}"  # what metrics rows record as having run
    return BuiltStylizer(stylizer, sha256, stylizer.loss_model, device_name, backend=backend)
