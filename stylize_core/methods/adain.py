"""AdaIN (Huang & Belongie 2017): any style image through one encoder/decoder pair, no training per style.

Styles are style images (``spec.style_images``); ``spec.mixes`` adds interpolations of them
(``{"new": {"a": 0.5, "b": 0.5}}``). Each style image is read, decoded and encoded once per run:
:func:`encode` in a Ray job's encoding task (``spec.encodings`` then carries the result to every
actor), or here when the spec has none (the local CLI).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from ..adain import AdaINStylizer, StyleStats, calc_mean_std, to_unit
from ..adain_checkpoint import AdaINWeights, load_adain
from ..adain_identity import adain_style_id
from ..builder import (BuiltStylizer, Opener, SetupError, StylizerSpec, encode_style_images, loss_network,
                       run_encodings)
from ..checkpoint import StyleModel
from ..demo_assets import demo_adain
from ..file_errors import FileUnusable
from ..loss_meter import LossMeter
from ..style_encoding import StyleEncodings
from ..style_mix import style_image_parts

ENCODER_ALONE = ("--method adain's --encoder needs its --decoder: pass --encoder vgg_normalised.pth --decoder "
                 "decoder.pth, --decoder with a one-file AdaIN checkpoint, or neither for the shipped demo model")


def _weights(spec: StylizerSpec, opener: Opener, checkpoints: Mapping[str, StyleModel]) -> AdaINWeights:
    if checkpoints:
        raise SetupError(f"--method adain takes style images, not style networks: pass --style-image NAME=URI "
                         f"instead of --style for {sorted(checkpoints)}")
    if spec.adain_encoder and not spec.adain_decoder:
        raise SetupError(ENCODER_ALONE)
    if not spec.style_images:
        raise SetupError("--method adain needs at least one --style-image NAME=URI")
    try:
        return load_adain(spec.adain_encoder or None, spec.adain_decoder or demo_adain(), opener)
    except FileUnusable as exc:
        raise SetupError(exc.line()) from None


def _encoder(weights: AdaINWeights, device: torch.device) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    enc = weights.encoder.to(device).eval().requires_grad_(False)

    def encode(image: np.ndarray) -> dict[str, np.ndarray]:  # relu4_1's mean and std, each (1, C, 1, 1)
        mean, std = calc_mean_std(enc(to_unit(image, device)))
        return {"mean": mean.cpu().numpy(), "std": std.cpu().numpy()}

    return encode


def encode(spec: StylizerSpec, opener: Opener, device: torch.device) -> StyleEncodings:
    """The style images' AdaIN statistics (and metrics targets), once for a whole run."""
    weights = _weights(spec, opener, {})
    return encode_style_images(spec, opener, "adain", weights.model_id, loss_network(spec, opener),
                               _encoder(weights, device), device)


def build(spec: StylizerSpec, opener: Opener, device: torch.device, checkpoints: Mapping[str, StyleModel],
          sha256: dict[str, str]) -> BuiltStylizer:
    weights = _weights(spec, opener, checkpoints)
    vgg = loss_network(spec, opener)
    encodings = run_encodings(spec, opener, "adain", weights.model_id, vgg, lambda: _encoder(weights, device), device)
    try:
        styles = style_image_parts(list(spec.style_images), spec.mixes)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    for name, parts in styles.items():
        sha256[name] = adain_style_id(weights.model_id, spec.alpha, [(encodings.digests[n], x) for n, x in parts])
    meter = None
    if vgg is not None:
        grams = encodings.grams
        targets = {name: grams[parts[0][0]] if len(parts) == 1 else [(grams[n], x) for n, x in parts]
                   for name, parts in styles.items()}
        meter = LossMeter(vgg, targets, short_side=spec.metrics_size, device=device, stat_ratio=spec.metrics_ratio)
    stats = {name: StyleStats(torch.from_numpy(code["mean"]).to(device), torch.from_numpy(code["std"]).to(device))
             for name, code in encodings.codes.items() if name in spec.style_images}
    stylizer = AdaINStylizer(weights.encoder, weights.decoder, stats, styles, alpha=spec.alpha,
                             strength=spec.strength, preserve_color=spec.preserve_color, device=str(device),
                             meter=meter, tile=spec.tile, max_memory=spec.max_memory)
    stylizer.style_encodes = encodings.passes if spec.encodings is None else 0  # passes made here, for tests
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    backend = f"torch-eager {torch.__version__} fp32 {device}"  # what metrics rows record as having run
    return BuiltStylizer(stylizer, sha256, stylizer.loss_model, device_name, backend=backend, encodings=encodings)
