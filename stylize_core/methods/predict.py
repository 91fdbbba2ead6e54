"""Style prediction (Ghiasi et al. 2017): any style image, one feed-forward pass per content image.

Styles are style images (``spec.style_images``); ``spec.mixes`` adds blends of them
(``{"new": {"a": 0.5, "b": 0.5}}``). Each style image is read, decoded and encoded by the predictor
once per run; each style (or blend) becomes a plain single-style TransformerNet with its predicted
norm parameters baked in, run by the feed-forward :class:`~stylize_core.stylizer.Stylizer`, so every
backend, tiling and the metrics work as for style networks. A Ray job encodes the style images once
for the run (:func:`encode`, carried to every actor as ``spec.encodings``); the local CLI here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from ..builder import (BuiltStylizer, Opener, SetupError, StylizerSpec, encode_style_images, loss_network,
                       run_encodings, stylizer_config)
from ..checkpoint import StyleModel
from ..demo_assets import demo_predictor
from ..file_errors import FileUnusable
from ..predictor import StylePredictorModel
from ..predictor_checkpoint import PredictorWeights, load_predictor
from ..predictor_identity import predictor_style_id
from ..style_encoding import StyleEncodings
from ..style_mix import style_image_parts
from ..stylizer import Stylizer


def _weights(spec: StylizerSpec, opener: Opener, checkpoints: Mapping[str, StyleModel]) -> PredictorWeights:
    if checkpoints:
        raise SetupError(f"--method predict takes style images, not style networks: pass --style-image NAME=URI "
                         f"instead of --style for {sorted(checkpoints)}")
    if not spec.style_images:
        raise SetupError("--method predict needs at least one --style-image NAME=URI")
    try:
        return load_predictor(spec.predictor or demo_predictor(), opener)
    except FileUnusable as exc:
        raise SetupError(exc.line()) from None


def _encoder(model: StylePredictorModel) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    def encode(image: np.ndarray) -> dict[str, np.ndarray]:  # the one predictor pass of this image
        return {"embedding": model.embed_image(image).cpu().numpy()}

    return encode


def encode(spec: StylizerSpec, opener: Opener, device: torch.device) -> StyleEncodings:
    """The style images' embeddings (and metrics targets), once for a whole run."""
    weights = _weights(spec, opener, {})
    return encode_style_images(spec, opener, "predict", weights.model_id, loss_network(spec, opener),
                               _encoder(weights.model.to(device)), device)


def build(spec: StylizerSpec, opener: Opener, device: torch.device, checkpoints: Mapping[str, StyleModel],
          sha256: dict[str, str]) -> BuiltStylizer:
    weights = _weights(spec, opener, checkpoints)
    model = weights.model.to(device)
    vgg = loss_network(spec, opener)
    encodings = run_encodings(spec, opener, "predict", weights.model_id, vgg, lambda: _encoder(model), device)
    try:
        styles = style_image_parts(list(spec.style_images), spec.mixes)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    embeddings = {name: torch.from_numpy(code["embedding"]).to(device) for name, code in encodings.codes.items()}
    models: dict[str, StyleModel] = {}
    targets = {}
    grams = encodings.grams
    for name, parts in styles.items():
        sha256[name] = predictor_style_id(weights.model_id, spec.alpha, [(encodings.digests[n], x) for n, x in parts])
        net = model.bake(model.mix([(embeddings[n], x) for n, x in parts], spec.alpha))
        if grams:
            targets[name] = grams[parts[0][0]] if len(parts) == 1 else [(grams[n], x) for n, x in parts]
        models[name] = StyleModel(net, {"style": name, "method": "predict", "alpha": spec.alpha}, sha256=sha256[name],
                                  source=spec.predictor or demo_predictor(), arch=model.config.net)
    config = stylizer_config(spec)
    stylizer = Stylizer(models, vgg, config, style_images=targets)
    stylizer.style_encodes = model.style_encodes  # type: ignore[attr-defined]  # predictor passes, for tests
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return BuiltStylizer(stylizer, sha256, stylizer.loss_model, device_name, models, stylizer.backend,
                         encodings=encodings)
