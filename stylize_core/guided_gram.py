"""Gatys optimisation with guided Gram losses (Gatys et al. 2017, "Controlling perceptual factors in
neural style transfer", section on spatial control): several styles in one image by a label mask.

Region k's Gram matrix at a layer is that of the features weighted by region k's mask at the layer's
resolution (the mask area-averaged to the layer's grid), normalised by the mask's mass:

    G_k = sum_x m_k(x) f(x) f(x)^T / (C * sum_x m_k(x))

(``f(x)`` the C features at position x). For a mask of ones everywhere this is
:func:`stylize_core.losses.gram_matrix` (``F F^T / (C H W)``), so the style weights of plain
``--method optimize`` carry over, and a region's loss does not shrink with its area: a small region is
styled as strongly as a large one. (Gatys et al. multiply the features by the mask, which weighs
each position by ``m^2``; weighing by ``m`` keeps a feathered edge's share linear, as the compositing
is.) The style loss is the sum over regions and layers of the MSE between ``G_k`` and style k's
ordinary Gram target; a region with no mass at a layer contributes nothing.

Label 0 has no style loss: the content loss (and TV) alone act there, and the result is composited
with the input by plane 0's weight at the end (as every masked output: black = the input within the
rounding), so a label-0 pixel is the input exactly where its weight is 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from .color import preserve_color
from .gatys import (GatysConfig, GatysResult, _check_image, _checked_extractor, _initial_image, _module_tensors,
                    _resize, _resize_long_side, pyramid_sizes)
from .gatys_level import Extractor, LevelPlan, StyleTerm, optimize_level
from .losses import image_to_tensor, style_grams
from .regions import as_image, as_planes, to_grid


def guided_gram(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w) features and an (h, w) mask -> (1, C, C): ``sum m f f^T / (C sum m)`` in float32."""
    c = features.shape[1]
    f = features.reshape(c, -1).float()  # (C, N)
    m = mask.reshape(-1).to(f)  # (N,)
    return ((f * m) @ f.T / (c * m.sum().clamp_min(1e-12)))[None]


def guided_style_loss(features: Mapping[str, torch.Tensor], masks: torch.Tensor,
                      targets: Sequence[Mapping[str, torch.Tensor]],
                      layer_weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """Sum over regions k and the targets' layers of ``weight * MSE(G_k, targets[k][layer])``; ``masks``
    (K, H, W) at the image's size are area-averaged to each layer's grid."""
    if masks.shape[0] != len(targets):
        raise ValueError(f"{masks.shape[0]} region masks for {len(targets)} style target(s)")
    total = features[next(iter(targets[0]))].new_zeros((), dtype=torch.float32)
    for layer in targets[0]:
        feat = features[layer]
        grid = to_grid(masks.to(feat.device), tuple(feat.shape[-2:]))  # (K, h, w)
        weight = 1.0 if layer_weights is None else float(layer_weights.get(layer, 1.0))
        for k, target in enumerate(targets):
            if float(grid[k].sum()) <= 0:
                continue
            total = total + weight * (guided_gram(feat, grid[k]) - target[layer].to(feat.device)).pow(2).mean()
    return total


def region_grams(extract: Extractor, image: torch.Tensor, masks: torch.Tensor, layers: Sequence[str]
                 ) -> list[dict[str, torch.Tensor]]:
    """Each region's guided Grams of a (1, 3, H, W) 0..255 image, ``[{layer: (1, C, C)}]`` per region."""
    with torch.no_grad():
        feats = extract(image)
        out = []
        for k in range(masks.shape[0]):
            out.append({layer: guided_gram(feats[layer], to_grid(masks, tuple(feats[layer].shape[-2:]))[k])
                        for layer in layers})
        return out


def optimize_regions(content: np.ndarray, styles: Sequence[np.ndarray], weights: np.ndarray | torch.Tensor,
                     vgg: Extractor, config: GatysConfig | None = None, *, device: str | torch.device | None = None,
                     callback: Callable[[dict], None] | None = None) -> GatysResult:
    """Stylise ``content`` (H, W, 3) uint8 with ``styles[k - 1]`` in region k of ``weights`` ((K + 1, H, W)
    region weights, :func:`stylize_core.masks.label_weights`; plane 0 the input) by optimising its pixels
    against the guided Gram losses, then composite plane 0. ``config`` as for
    :func:`stylize_core.gatys.optimize_image` (``init`` content or noise)."""
    config = (config or GatysConfig()).for_network(getattr(vgg, "arch", "vgg19"))
    config.validate()
    if config.init == "style":
        raise ValueError("init 'style' needs one style image; with regions use 'content' or 'noise'")
    content_np = _check_image("content", content, floats=True)
    style_nps = [_check_image(f"style {k}", s) for k, s in enumerate(styles, start=1)]
    planes = as_planes(weights, len(styles))
    if tuple(planes.shape[1:]) != content_np.shape[:2]:
        raise ValueError(f"region weights are {planes.shape[2]}x{planes.shape[1]} but the content is "
                         f"{content_np.shape[1]}x{content_np.shape[0]}")
    extract = _checked_extractor(vgg, config.layers)
    tensors = _module_tensors(vgg)
    device = torch.device(device) if device is not None else (tensors[0].device if tensors else torch.device("cpu"))
    with torch.inference_mode(False), torch.enable_grad():
        image_t = image_to_tensor(content_np, device).contiguous()  # (1, 3, H, W)
        targets = []
        for s in style_nps:
            style = image_to_tensor(s, device)
            if config.style_size is not None:
                style = _resize_long_side(style, config.style_size)
            targets.append(style_grams(extract, style, config.style_layers, config.style_scales))
        planes = planes.to(device)
        sizes = pyramid_sizes(*image_t.shape[-2:], config.pyramid_levels, config.pyramid_min_side)
        image = _initial_image(config, image_t, image_t, sizes[0])
        trace: list[dict] = []
        plan = LevelPlan(config.steps, config.optimizer, config.learning_rate,
                         (config.content_weight, config.style_weight, config.tv_weight), config.content_layers,
                         config.style_layers, config.style_layer_weights, config.log_every)
        for level, size in enumerate(sizes):
            image = _resize(image, size).detach()
            masks = to_grid(planes[1:], size)  # (K, h, w) at this level's size

            def term(feats: Mapping[str, torch.Tensor], masks: torch.Tensor = masks) -> torch.Tensor:
                return guided_style_loss(feats, masks, targets, config.style_layer_weights)

            style_term: StyleTerm = term
            with torch.no_grad():
                feats = extract(_resize(image_t, size))
                content_targets = {layer: feats[layer].detach() for layer in config.content_layers}
            image = optimize_level(image, extract, content_targets, {}, plan, level, trace, callback, style_term)
        image = image.detach().clamp(0, 255)
        if config.preserve_color:
            image = preserve_color(image, image_t)
        out = image_t + (image - image_t) * (1 - planes[0])[None, None]
    return GatysResult(image=as_image(out, content_np), trace=trace,
                       loss_model=getattr(vgg, "loss_model", type(vgg).__name__))
