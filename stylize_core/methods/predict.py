"""Style prediction (Ghiasi et al. 2017): any style image, one feed-forward pass per content image.

Styles are style images (``spec.style_images``); ``spec.mixes`` adds blends of them
(``{"new": {"a": 0.5, "b": 0.5}}``). Each style image is read, decoded and encoded by the predictor
once here; each style (or blend) becomes a plain single-style TransformerNet with its predicted
norm parameters baked in, run by the feed-forward :class:`~stylize_core.stylizer.Stylizer`, so every
backend, tiling and the metrics work as for style networks.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..builder import BuiltStylizer, Opener, SetupError, StylizerSpec, loss_network, read_style_image
from ..checkpoint import StyleModel
from ..demo_assets import demo_predictor
from ..file_errors import FileUnusable
from ..predictor_checkpoint import load_predictor
from ..predictor_identity import predictor_style_id
from ..style_mix import style_image_parts
from ..stylizer import Stylizer, StylizerConfig


def build(spec: StylizerSpec, opener: Opener, device: torch.device, checkpoints: Mapping[str, StyleModel],
          sha256: dict[str, str]) -> BuiltStylizer:
    if checkpoints:
        raise SetupError(f"--method predict takes style images, not style networks: pass --style-image NAME=URI "
                         f"instead of --style for {sorted(checkpoints)}")
    if not spec.style_images:
        raise SetupError("--method predict needs at least one --style-image NAME=URI")
    try:
        weights = load_predictor(spec.predictor or demo_predictor(), opener)
    except FileUnusable as exc:
        raise SetupError(exc.line()) from None
    model = weights.model
    images, digests, embeddings = {}, {}, {}
    with torch.inference_mode():
        for name, uri in spec.style_images.items():
            images[name], digests[name] = read_style_image(name, uri, opener, spec.max_style_pixels)
            embeddings[name] = model.embed_image(images[name])  # the one predictor pass of this image
    try:
        styles = style_image_parts(list(spec.style_images), spec.mixes)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    models: dict[str, StyleModel] = {}
    targets = {}
    for name, parts in styles.items():
        sha256[name] = predictor_style_id(weights.model_id, spec.alpha, [(digests[n], x) for n, x in parts])
        net = model.bake(model.mix([(embeddings[n], x) for n, x in parts], spec.alpha))
        single = len(parts) == 1
        targets[name] = images[parts[0][0]] if single else [(images[n], x) for n, x in parts]
        models[name] = StyleModel(net, {"style": name, "method": "predict", "alpha": spec.alpha},
                                  style_image=images[parts[0][0]] if single else None, sha256=sha256[name],
                                  source=spec.predictor or demo_predictor(), arch=model.config.net)
    config = StylizerConfig(
        device=spec.device, channels_last=spec.channels_last, bf16=spec.bf16, metrics=spec.metrics,
        metrics_short_side=spec.metrics_size, strength=spec.strength, preserve_color=spec.preserve_color,
        max_batch=spec.max_batch, backend=spec.backend,
        tile=spec.tile, max_memory=spec.max_memory, tileable=spec.tileable, tile_stats=spec.tile_stats,
    )
    stylizer = Stylizer(models, loss_network(spec, opener), config, style_images=targets)
    stylizer.style_encodes = model.style_encodes  # type: ignore[attr-defined]  # predictor passes, for tests
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return BuiltStylizer(stylizer, sha256, stylizer.loss_model, device_name, models, stylizer.backend)
