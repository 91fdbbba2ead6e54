"""The one place a program's settings become a :class:`~stylize_core.builder.StylizerSpec`.

The batch job's actors, the video workers and the local CLI all call :func:`stylizer_spec`, so an
option that reaches the stylizer is a field of the settings model plus one line here. Imports torch:
actors and the local CLI only, never the driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from jobs.common.run_settings import RunSettings
from stylize_core.builder import StylizerSpec
from stylize_core.gatys import GatysConfig
from stylize_core.style_encoding import StyleEncodings
from stylize_core.style_mix import Selection


class StylizerSettings(Protocol):
    """What a settings model provides to build a stylizer (RunSettings and the local CLI's ImageSettings)."""

    method: str
    vgg: str | None
    vgg_weights: str | None
    metrics: bool
    metrics_size: int
    metrics_ratio: bool
    device: str
    bf16: bool
    channels_last: bool
    strength: float
    preserve_color: bool
    backend: str
    max_pixels: int
    tile: int
    max_memory: int
    tileable: bool
    tile_stats: str
    encoder: str | None
    decoder: str | None
    alpha: float
    predictor: str | None

    def gatys_options(self) -> dict[str, Any]: ...


def stylizer_spec(settings: StylizerSettings, *, styles: Mapping[str, str], style_images: Mapping[str, str],
                  mixes: Mapping[str, Selection], max_batch: int) -> StylizerSpec:
    """The stylizer ``settings`` ask for, over these styles (checkpoint URIs), style images and selections."""
    return StylizerSpec(
        styles=styles, style_images=style_images, mixes=mixes, method=settings.method,
        vgg=settings.vgg or ("vgg19" if settings.method == "optimize" else "vgg16"),
        vgg_weights=settings.vgg_weights or "imagenet", metrics=settings.metrics, metrics_size=settings.metrics_size,
        metrics_ratio=settings.metrics_ratio,
        device=settings.device, bf16=settings.bf16, channels_last=settings.channels_last,
        strength=settings.strength, preserve_color=settings.preserve_color, max_batch=max_batch,
        backend=settings.backend, gatys=GatysConfig(**settings.gatys_options()), max_style_pixels=settings.max_pixels,
        tile=settings.tile, max_memory=settings.max_memory, tileable=settings.tileable, tile_stats=settings.tile_stats,
        adain_encoder=settings.encoder or "", adain_decoder=settings.decoder or "", alpha=settings.alpha,
        predictor=settings.predictor or "",
    )


def run_stylizer_spec(settings: RunSettings, max_batch: int, encodings: StyleEncodings | None = None) -> StylizerSpec:
    """The stylizer of a Ray job's run (batch or video): every style, style image and selection it names;
    ``encodings``: the style images' encodings the run made once (jobs.common.checkpoints.encode_style_images)."""
    spec = stylizer_spec(settings, styles=settings.styles, style_images=settings.style_images, mixes=settings.mixes,
                         max_batch=max_batch)
    spec.encodings = encodings
    # the batch job's regions styles (jobs.batch.settings; the video job has none), those rendered
    spec.regions = {name: tuple(settings.regions[name]) for name in settings.style_names
                    if name in getattr(settings, "regions", {})}
    return spec
