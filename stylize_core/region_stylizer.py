"""A regions style: several styles of a run in one image, label k of a label mask -> the k-th part.

A regions style is a style of its own (like a ``--mix`` blend): a name, its parts (other styles of
the same run, in label order) and a model id derived from the parts' ids
(:func:`stylize_core.region_identity.region_style_id`). :class:`RegionRenderer` renders it for one
image and its region weights ((K + 1, H, W), :func:`stylize_core.masks.label_weights`), the best way
the method allows:

- ``adain``: AdaIN with per-region statistics, one encoder and one decoder pass
  (:func:`stylize_core.regions.adain_regions`);
- ``spatial``: the parts are one network with other norm parameters (the selections or blends of a
  multi-style checkpoint, the style predictor's styles): spatially varying conditional norm, one pass
  (:class:`stylize_core.spatial_norm.RegionNet`, run in PyTorch on the stylizer's device whatever
  ``--backend`` the plain styles use);
- ``guided``: Gatys optimisation with guided Gram losses, one optimisation per image
  (:func:`stylize_core.guided_gram.optimize_regions`);
- ``blend``: anything else (single-style networks from separate checkpoints): each part's whole-image
  output, blended with the region weights as :func:`stylize_core.masks.composite_labels` blends them.

Every kind composites label 0 over the input, so black is the input unchanged. A regions output's
losses are not measured (NaN, ``measured`` False): each region has another style target. A float32
image (a 16-bit input's, ``accepts_float``) renders in float and comes back float32, never rounded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .adain import AdaINStylizer
from .checkpoint import StyleModel
from .color import blend
from .gatys_stylizer import GatysStylizer
from .guided_gram import optimize_regions
from .region_identity import region_style_id
from .regions import adain_regions, as_image, as_planes, composite_keep, style_shares
from .spatial_norm import NotOneNetwork, RegionNet
from .style_result import StyleResult
from .stylizer import Stylizer
from .transformer_net import SIZE_MULTIPLE


@dataclass(frozen=True)
class RegionStyle:
    name: str
    parts: tuple[str, ...]  # label k renders parts[k - 1]
    kind: str  # "adain", "spatial", "guided" or "blend"
    model_id: str


class RegionRenderer:
    """The regions styles of one built stylizer: ``render(image, weights, name)``."""

    accepts_float = True  # a 16-bit input stays float (image_formats.network_input)

    def __init__(self, stylizer: object, regions: Mapping[str, Sequence[str]], model_ids: Mapping[str, str],
                 method: str, models: Mapping[str, StyleModel] | None = None) -> None:
        self.stylizer = stylizer
        self.styles: dict[str, RegionStyle] = {}
        self._nets: dict[str, RegionNet] = {}
        for name, parts in regions.items():
            parts = tuple(parts)
            missing = [p for p in parts if p not in model_ids]
            if name in model_ids:
                raise ValueError(f"--regions {name}: the name is taken by a style of the run; a regions style is "
                                 "a new style: --regions NEW=A,B")
            if not parts or missing:
                raise ValueError(f"--regions {name}: {missing or 'no parts'} name no style of this run "
                                 f"(styles: {sorted(model_ids)})")
            kind = "blend"
            if isinstance(stylizer, AdaINStylizer):
                kind = "adain"
            elif isinstance(stylizer, GatysStylizer):
                kind = "guided"
            elif isinstance(stylizer, Stylizer) and models and all(p in models for p in parts):
                try:
                    net = RegionNet([models[p].model for p in parts])  # type: ignore[list-item]
                    self._nets[name] = net.to(stylizer.device)
                    kind = "spatial"
                except (NotOneNetwork, ValueError, AttributeError):  # other networks; AttributeError: not a
                    kind = "blend"  # TransformerNet at all (an enhancement network): blending says why it cannot
            self.styles[name] = RegionStyle(name, parts, kind, region_style_id(method, [model_ids[p] for p in parts]))

    @property
    def model_ids(self) -> dict[str, str]:
        return {name: r.model_id for name, r in self.styles.items()}

    def render(self, image: np.ndarray, weights: np.ndarray, name: str) -> StyleResult:
        """``image`` (H, W, 3) uint8, or float32 in 0..255 (then so is the output), with style
        ``parts[k - 1]`` where plane k of ``weights`` ((K + 1, H, W) region weights, plane 0 the input)
        is; ValueError when the planes do not fit."""
        region = self.styles[name]
        start = time.perf_counter()
        planes = as_planes(weights, len(region.parts))
        if tuple(planes.shape[1:]) != image.shape[:2]:
            raise ValueError(f"region weights are {planes.shape[2]}x{planes.shape[1]} but the image is "
                             f"{image.shape[1]}x{image.shape[0]}")
        tiles = 1
        if region.kind == "adain":
            out = adain_regions(self.stylizer, image, planes, region.parts)  # type: ignore[arg-type]
            tiled = self.stylizer.tiler(*image.shape[:2])  # type: ignore[attr-defined]
            tiles = tiled.count(*image.shape[:2]) if tiled is not None else 1
        elif region.kind == "spatial":
            out = self._spatial(image, planes, name)
        elif region.kind == "guided":
            out = self._guided(image, planes, region.parts)
        else:
            out = self._blend(image, planes, region.parts)
        return StyleResult(image=out, stylize_ms=(time.perf_counter() - start) * 1000, tiles=tiles)

    @torch.inference_mode()
    def _spatial(self, image: np.ndarray, planes: torch.Tensor, name: str) -> np.ndarray:
        stylizer: Stylizer = self.stylizer  # type: ignore[assignment]
        device = stylizer.device
        x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
        planes = planes.to(device)
        h, w = x.shape[-2:]
        ph, pw = -h % SIZE_MULTIPLE, -w % SIZE_MULTIPLE  # the network returns multiples of 4: pad, then crop
        # label 0 renders the styles present but counts in no region's statistics
        mix, stat = (style_shares(planes, fill)[None] for fill in ("present", "zero"))  # (1, K, H, W) each
        xp = F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x
        mix, stat = (F.pad(t, (0, pw, 0, ph), mode="replicate") if ph or pw else t for t in (mix, stat))
        y = self._nets[name](xp, mix, stat)[..., :h, :w].clamp(0, 255)
        y = stylizer.finish(y, x).clamp(0, 255)
        return as_image(composite_keep(x, y, planes[0]), image)

    def _guided(self, image: np.ndarray, planes: torch.Tensor, parts: Sequence[str]) -> np.ndarray:
        gatys: GatysStylizer = self.stylizer  # type: ignore[assignment]
        config = gatys.config if gatys.config.init != "style" else replace(gatys.config, init="content")
        out = optimize_regions(image, [gatys.style_images[p] for p in parts], planes, gatys.vgg, config,
                               device=gatys.device).image
        if gatys.strength == 1.0:
            return out
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        y = blend(torch.from_numpy(out).permute(2, 0, 1)[None].float(), x, gatys.strength)
        return as_image(y, image)

    def _blend(self, image: np.ndarray, planes: torch.Tensor, parts: Sequence[str]) -> np.ndarray:
        unique = list(dict.fromkeys(parts))
        results = self.stylizer.stylize_many([image], unique, measure=[False])  # type: ignore[attr-defined]
        p = planes.cpu().numpy()
        acc = image.astype(np.float32) * p[0][..., None]
        for k, part in enumerate(parts, start=1):
            styled = results[part][0].image
            if styled.shape != image.shape:
                raise ValueError(f"style {part!r}'s output is {styled.shape[1]}x{styled.shape[0]} but the input is "
                                 f"{image.shape[1]}x{image.shape[0]}; regions need same-size outputs")
            acc += styled.astype(np.float32) * p[k][..., None]
        if image.dtype != np.uint8:
            return np.clip(acc, 0, 255).astype(np.float32)
        return np.floor(np.clip(acc, 0, 255) + 0.5).astype(np.uint8)
