"""The poster phase's actor (:mod:`jobs.batch.poster`): the stylize actor's stylizer, built the same
way, answering a poster's plan, its decode and statistics (once per style), its tiles, and its
metrics (the loss network on the input's and the output's thumbnails)."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stylize_core.builder import SetupError
from stylize_core.image_formats import PixelFormat, decode_image_full, network_input
from stylize_core.image_io import ImageDecodeError, allow_pixels
from stylize_core.image_size import decoded_size
from stylize_core.masks import MaskError
from stylize_core.sampling import sampled
from stylize_core.poster import measure_poster, padded_input, plan_poster, record_stats, run_tile
from stylize_core.poster_plan import PosterPlan, metric_thumbnail_size, thumbnail
from stylize_core.tile_budget import tile_side
from stylize_core.tiled_forward import TiledForward
from stylize_core.tiling import min_tile, thumbnail_size

from jobs.batch.actor import StylizeActor
from jobs.common.masks import MASK_ERROR, MASK_ONE, read_mask
from jobs.batch.settings import JobSettings
from jobs.common.planning import ActorPlan
from jobs.common.ray_actors import actor_id
from jobs.common.storage import read_bytes, redact
from stylize_core.style_encoding import StyleEncodings


@dataclass
class PosterInput:
    """What the decoding call gives every tile and the writer (one small Ray object per poster): the
    input's pixel format, each style's statistics, whether the pixels are float (a 16-bit input), the
    input's thumbnail at the metrics size when the poster is measured (metrics on and the input in
    ``--metrics-sample``), whether it is masked, or the error that stopped it."""

    format: PixelFormat = field(default_factory=PixelFormat)
    stats: dict[str, Any] = field(default_factory=dict)
    float_pixels: bool = False
    metric_input: np.ndarray | None = None
    masked: bool = False  # every tile object is (input, mask planes): composited tile by tile
    input_bytes: int = -1
    decode_ms: float = float("nan")
    error_type: str = ""
    error: str = ""


class PosterActor(StylizeActor):
    """A stylize actor (the same construction: threads, stylizer, setup errors) taking poster calls."""

    def __init__(self, settings: JobSettings, plan: ActorPlan, encodings: StyleEncodings | None = None) -> None:
        super().__init__(settings, plan, encodings=encodings)
        self._forward = None if self.setup_error else TiledForward(
            self.stylizer.config, self.stylizer.device, self.stylizer.styles, self.stylizer.models)

    def _ready(self) -> None:
        if self.setup_error:
            raise SetupError(self.setup_error)

    def _net(self, style: str) -> torch.nn.Module:
        return self.stylizer.styles[style].model

    def plan(self, height: int, width: int, styles: list[str]) -> PosterPlan:
        """The tiles of an input whose file is height x width: --tile when given, else the smaller of
        the side --split-pixels allows and the largest that fits --max-memory for every style."""
        self._ready()
        h, w = decoded_size(height, width, self.settings.max_side)
        side = self.settings.tile
        if not side:
            side = int(math.isqrt(self.settings.split_pixels)) // 4 * 4
            for style in styles:
                fits = tile_side(h, w, per_pixel=self._forward.per_pixel(style), budget=self._forward.budget)
                side = min(side, fits) if fits else side
            side = max(side, min_tile())
        return plan_poster(h, w, side, wrap=self.settings.tileable)

    def prepare(self, uri: str, plan: PosterPlan, styles: list[str], mask_uri: str = "") -> list[Any]:
        """[PosterInput, tile 0's input, tile 1's, ...]: the input decoded once, padded and cut, and each
        style's statistics from its thumbnail (as the in-actor tiling takes them). With ``mask_uri``, the
        mask is read and feathered as the read stage does it for the stream, padded and cut the same way:
        each tile is then (its input, its mask planes). Never raises: an input that cannot be read or
        decoded, or whose mask cannot be used, gives its error in the PosterInput and no tiles."""
        start = time.perf_counter()
        meta = PosterInput()
        try:
            self._ready()
            allow_pixels(self.settings.max_pixels)
            data = read_bytes(uri, self.settings.storage_options)
            meta.input_bytes = len(data)
            decoded = decode_image_full(data, max_pixels=self.settings.max_pixels, max_side=self.settings.max_side)
            pixels = network_input(decoded.pixels, self.stylizer)  # a 16-bit input runs in float
            planes = None
            if mask_uri:  # (H, W, planes) uint16, MASK_ONE = 1; first: a mask that cannot be used ends it here
                planes = np.moveaxis(read_mask(mask_uri, self.settings, decoded.size, pixels.shape[:2]), 0, -1)
            meter = self.stylizer.meter
            if meter is not None and sampled(uri, self.settings.metrics_sample):
                size = metric_thumbnail_size(*pixels.shape[:2], meter.metric_size(*pixels.shape[:2]))
                meta.metric_input = thumbnail(pixels, size, "bilinear", band=64)
            padded = padded_input(pixels, plan)
            # the statistics' thumbnail: of what the in-actor tiling sees, the padded image, or (tileable)
            # one period of the torus, through the circularly padded network
            whole = pixels if plan.wrap else padded
            del pixels
            for style in styles:
                area = self._forward.thumbnail_pixels(style, plan.side)
                thumb = thumbnail(whole, thumbnail_size(*whole.shape[:2], area))
                meta.stats[style] = record_stats(self._forward.module(style), thumb, self.stylizer.device,
                                                 self.stylizer.memory_format)
            del whole
            tiles: list[Any] = [plan.tile_of(padded, t) for t in range(plan.tiles)]
            if planes is not None:
                planes = padded_input(planes, plan)
                tiles = [(tile, plan.tile_of(planes, t)) for t, tile in enumerate(tiles)]
            meta.format, meta.float_pixels, meta.masked = decoded.format, padded.dtype == np.float32, planes is not None
        except MaskError as exc:
            meta.error_type, meta.error, tiles = MASK_ERROR, str(exc), [None] * plan.tiles
        except ImageDecodeError as exc:
            meta.error_type, meta.error, tiles = exc.error_type, str(exc), [None] * plan.tiles
        except FileNotFoundError as exc:
            meta.error_type, meta.error = "not_found", f"input disappeared before it was read: {exc}"
            tiles = [None] * plan.tiles
        except Exception as exc:  # storage, memory, an unsupported network: the rows say why
            meta.error_type = getattr(exc, "error_type", "poster_error")
            meta.error, tiles = redact(f"{type(exc).__name__}: {exc}"), [None] * plan.tiles
        meta.decode_ms = (time.perf_counter() - start) * 1000
        return [meta, *tiles]

    def tile(self, meta: PosterInput, tile: np.ndarray | tuple[np.ndarray, np.ndarray], style: str, t: int,
             plan: PosterPlan) -> tuple[np.ndarray, dict[str, Any]]:
        """Tile ``t``'s output for ``style``, times its blend weights, and where and how long it ran
        (``tile``: its input, or its input and mask planes when ``meta.masked``)."""
        self._ready()
        start = time.perf_counter()
        mask = None
        if meta.masked:  # this style's plane: its label's in a label mask (as the stream's _masked picks it)
            tile, planes = tile
            k = self.settings.label_styles.index(style) if planes.shape[2] > 1 else 0
            mask = planes[:, :, k].astype(np.float32) / MASK_ONE
        with self.stylizer._autocast():
            out = run_tile(self._net(style), tile, meta.stats[style], plan, t, self.stylizer.device,
                           finish=self.stylizer.finish, memory_format=self.stylizer.memory_format, mask=mask,
                           unmasked=meta.metric_input is not None)
        return out, {"t": t, "style": style, "actor": actor_id(), "pid": os.getpid(),
                     "ms": (time.perf_counter() - start) * 1000}

    def measure(self, meta: PosterInput, style: str, output: np.ndarray, tv: float) -> dict[str, float]:
        """The poster's losses for ``style`` from the output's thumbnail at the metrics size and its
        full-size total variation (the writer's), against the input's thumbnail in ``meta``."""
        self._ready()
        if self.stylizer.meter is None or meta.metric_input is None:
            raise ValueError("this poster is not measured")
        return measure_poster(self.stylizer.meter, meta.metric_input, output, style, tv)
