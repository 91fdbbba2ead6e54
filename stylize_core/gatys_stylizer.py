"""Per-image Gatys optimisation behind the same ``stylize(images, style)`` call as :class:`Stylizer`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .color import blend
from .gatys import GatysConfig, gatys_vgg, optimize_image
from .loss_meter import LossMeter
from .style_result import StyleResult, resolve_device


class GatysStylizer:
    """Optimises each image towards a style image (slow; for small, high-value sets).

    ``meter`` (optional) measures the results exactly as the feed-forward path does, so metrics rows
    from both methods are comparable. A float32 image (a 16-bit input's) gives a float32 result.
    """

    accepts_float = True  # a 16-bit input stays float (image_formats.network_input)

    def __init__(
        self,
        style_images: Mapping[str, np.ndarray],
        config: GatysConfig | None = None,
        *,
        arch: str = "vgg19",  # the loss network: vgg16, vgg19, texture[:SEED]
        weights: str = "imagenet",
        opener=None,
        device: str = "auto",
        strength: float = 1.0,
        meter: LossMeter | None = None,
    ) -> None:
        if not style_images:
            raise ValueError("Gatys optimisation needs a style image per style")
        self.config = config or GatysConfig()
        self.device = resolve_device(device)
        self.style_images = dict(style_images)
        self.vgg = gatys_vgg(arch, weights, self.config, opener=opener).to(self.device)
        self.loss_model = self.vgg.loss_model
        self.strength = strength
        self.meter = meter

    @property
    def style_names(self) -> list[str]:
        return list(self.style_images)

    def stylize_many(
        self, images: Sequence[np.ndarray], styles: Sequence[str] | None = None, *, measure: Sequence[bool] | None = None
    ) -> dict[str, list[StyleResult]]:
        """:meth:`Stylizer.stylize_many`'s contract: every style over the same images, ``measure[i]``
        False skipping image ``i``'s metrics."""
        return {s: self.stylize(images, s, measure=measure) for s in (self.style_names if styles is None else styles)}

    def stylize(self, images: Sequence[np.ndarray], style: str, *, measure: Sequence[bool] | None = None) -> list[StyleResult]:
        if style not in self.style_images:
            raise KeyError(f"unknown style {style!r}; this GatysStylizer has {self.style_names}")
        results = []
        for n, image in enumerate(images):
            start = time.perf_counter()
            out = optimize_image(image, self.style_images[style], self.vgg, self.config, device=self.device).image
            with torch.inference_mode():
                content = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
                stylized = torch.from_numpy(out).permute(2, 0, 1)[None].float()
                if self.strength != 1.0:
                    stylized = blend(stylized, content, self.strength).clamp(0, 255)
                    out = stylized if out.dtype == np.float32 else stylized.round().to(torch.uint8)
                    out = out[0].permute(1, 2, 0).numpy()
            elapsed = (time.perf_counter() - start) * 1000
            measured = self.meter is not None and (measure is None or bool(measure[n]))
            losses = self.meter.measure(content, stylized, style) if measured else {}
            results.append(StyleResult(image=out, stylize_ms=elapsed, measured=measured,
                                       **{k: v[0] for k, v in losses.items()}))
        return results
