"""The object a Ray actor holds: style networks + loss network, built once, applied to batches.

Per call, the images are planned into shape buckets (:mod:`stylize_core.bucketing`), each batch
is uploaded once and run through every requested style, and the metrics of the whole call run
after the forward passes, batched by metric size across forward batches, with the inputs' content
features computed once for all styles. A call holds its window's inputs and outputs on the device
until then: callers pass windows of tens of images, not whole catalogs. On CUDA the host never waits inside a call: inputs go
through pinned memory with non-blocking copies, outputs come back the same way, timing uses CUDA
events, and the one sync is at the end of the call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .bucketing import DEFAULT_MAX_PAD_FRACTION, MIN_SIDE, Batch, crop, pad_to, plan_batches  # noqa: F401
from .checkpoint import StyleModel
from .color import finish
from .enhance_net import output_scale
from .loss_meter import LossMeter, PendingLosses
from .loss_network import LossNetwork
from .run_stats import DeviceClock, ForwardStats
from .style_result import StyleResult, resolve_device  # noqa: F401  (importable from here, as before)


@dataclass
class StylizerConfig:
    """How a :class:`Stylizer` runs. ``device="auto"`` picks CUDA when available."""

    device: str = "auto"
    # NHWC activations: faster with cuDNN, and with oneDNN on CPU too since InstanceNorm runs as a
    # group norm there (2.91 vs 2.72 images/s at 512 px on AVX-512, 1.85 vs 1.53 limited to AVX2).
    # On CUDA, benchmarks/bench_gpu.py --memory-format both measures it (not yet run on a GPU).
    channels_last: bool = True
    bf16: bool = True  # autocast on CUDA only; CPU stays float32
    metrics: bool = True
    metrics_short_side: int = 256  # the most: smaller images are measured at their own size
    metrics_ratio: bool = False  # also style_stat_ratio (LossMeter's stat_ratio)
    content_layers: tuple[str, ...] = ()  # () = the loss network's metric layers (loss_network.default_layers)
    style_layers: tuple[str, ...] = ()
    strength: float = 1.0
    preserve_color: bool = False
    max_batch: int = 8
    # Bounds activation memory on CUDA: 32 images of 512x512 (the first layers' bf16 activations
    # are then ~0.5 GiB each).
    max_batch_pixels: int = 32 * 512 * 512
    # On CPU, batches beyond the caches lose: 512x512 runs at 0.74 of the matmul rate one at a time,
    # 0.66 four at a time (benchmarks/bench_transformer.py, 2-core machine).
    cpu_max_batch_pixels: int = 4 * 256 * 256
    # Share of a batch's pixels that may be padding (see stylize_core.bucketing for the measurement).
    max_pad_fraction: float = DEFAULT_MAX_PAD_FRACTION
    # CPU gains nothing from larger batches, so padding there would only add work and change outputs.
    cpu_max_pad_fraction: float = 0.0
    pin_memory: bool = True  # CUDA only: page-locked staging buffers, so copies run asynchronously
    # Where the style networks run on CPU (stylize_core.backends: eager, compile, onnxruntime, openvino[:bf16])
    backend: str = "eager"
    # Tiling (stylize_core.tiling, stylize_core.tile_budget): a forced tile side (0: by the memory
    # budget), the activation budget in bytes (0: from the device), seamless (wrap-around) output,
    # and where tiles' shared statistics come from ("auto", "exact", "thumbnail", "accumulate").
    tile: int = 0
    max_memory: int = 0
    tileable: bool = False
    tile_stats: str = "auto"


@dataclass
class _Pending:
    """A batch whose device work is queued; read back after the call's one sync."""

    members: list[int]  # input indices, in batch order
    pads: list[tuple[int, int, int, int]]
    measured: list[int]  # positions in `members` whose metrics are wanted
    marks: dict[str, Any]  # "start", "uploaded", then "<style>" after each style's forward + download
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)  # style -> (B, Hb, Wb, 3) uint8, host
    contents: list[torch.Tensor] = field(default_factory=list)  # measured inputs, [(1, 3, h, w)] on the device
    crops: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # style -> measured outputs, likewise
    tiles: dict[str, list[int]] = field(default_factory=dict)  # style -> tiles per member (absent: 1 each)


@dataclass
class _WindowMetrics:
    """The metrics of every measured image of one call, queued as one set of VGG passes."""

    where: list[tuple[int, int]]  # (batch number, position in its members) per measured image
    marks: dict[str, Any]  # "start", "content", then "<style>"
    losses: dict[str, PendingLosses]


class Stylizer:
    """Applies one or more style networks to lists of (H, W, 3) uint8 images of any sizes; float32
    images in 0..255 (16-bit sources) are accepted too, and their outputs come back as float32, never
    rounded to 8 bits.

    Per-image metrics (content, style and TV loss) use the VGG loss network at the smaller of
    the image's short side and ``metrics_short_side``: content loss against the input image, style
    loss against the style's Gram targets (from the style image stored in the checkpoint, or
    ``style_images``; NaN when neither exists, e.g. a bare pytorch/examples state dict), TV loss on
    the full-size output.
    """

    accepts_float = True  # float32 inputs stay float (image_formats.network_input)

    def __init__(
        self,
        styles: Mapping[str, StyleModel],
        vgg: LossNetwork | None = None,
        config: StylizerConfig | None = None,
        *,
        style_images: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        if not styles:
            raise ValueError("a Stylizer needs at least one style")
        self.config = config or StylizerConfig()
        self.device = resolve_device(self.config.device)
        self.cuda = self.device.type == "cuda"
        self.memory_format = torch.channels_last if self.config.channels_last else torch.contiguous_format
        self.styles = dict(styles)
        # Super-resolution networks return scale x the input's sides (1 for style networks).
        self.scales = {name: output_scale(sm.model) for name, sm in self.styles.items()}
        self.models = {
            name: sm.model.to(self.device, memory_format=self.memory_format).eval().requires_grad_(False)
            for name, sm in self.styles.items()
        }
        # What ran, as metrics rows record it: runtime and version, precision, device.
        precision = "bf16-autocast" if self.cuda and self.config.bf16 else "fp32"
        self.backend = f"torch-eager {torch.__version__} {precision} {self.device}"
        if self.config.backend != "eager":
            if self.cuda:
                raise ValueError(f"backend {self.config.backend!r} runs on CPU; on CUDA the Stylizer runs PyTorch itself")
            from .backends import make_backend  # lazy: onnxruntime/OpenVINO are optional

            self.models = {name: make_backend(m, self.config.backend) for name, m in self.models.items()}
            self.backend = f"{next(iter(self.models.values())).describe()} cpu"
        self.loss_model = vgg.loss_model if vgg is not None else ""
        self.meter: LossMeter | None = None
        if vgg is not None and self.config.metrics:
            overrides = dict(style_images or {})
            self.meter = LossMeter(
                vgg,
                {name: overrides.get(name, sm.style_image) for name, sm in self.styles.items()},
                content_layers=self.config.content_layers,
                style_layers=self.config.style_layers,
                short_side=self.config.metrics_short_side,
                stat_ratio=self.config.metrics_ratio,
                device=self.device,
                bf16=self.config.bf16,
                channels_last=self.config.channels_last,
            )
        self.clock = DeviceClock(self.device)
        self._stats = ForwardStats(self.device)
        self._tiler = None  # stylize_core.tiled_forward.TiledForward, made on first use

    @property
    def style_names(self) -> list[str]:
        return list(self.styles)

    def stats(self) -> dict[str, Any]:
        """Forward passes since construction (or :meth:`reset_stats`); see :meth:`ForwardStats.as_dict`."""
        return self._stats.as_dict()

    def reset_stats(self) -> None:
        self._stats.reset()

    def plan(self, shapes: Sequence[tuple[int, int]]) -> list[Batch]:
        """The forward passes images of these (H, W) sizes would run as, on this device."""
        cfg = self.config
        pixels = cfg.max_batch_pixels if self.cuda else min(cfg.max_batch_pixels, cfg.cpu_max_batch_pixels)
        pad = cfg.max_pad_fraction if self.cuda else cfg.cpu_max_pad_fraction
        pixels //= max(self.scales.values(), default=1) ** 2  # the budget is for OUTPUT pixels
        return plan_batches(shapes, max_batch=cfg.max_batch, max_pixels=pixels, max_pad_fraction=pad)

    def finish(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Output ``y`` of input ``x`` finished as configured (colour, strength), unclamped."""
        return finish(y, x, keep_color=self.config.preserve_color, strength=self.config.strength)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.config.bf16)

    def _host_buffer(self, shape: tuple[int, ...], dtype: torch.dtype = torch.uint8) -> torch.Tensor:
        pin = self.cuda and self.config.pin_memory
        return torch.empty(shape, dtype=dtype, pin_memory=pin)

    def _stage(self, images: Sequence[np.ndarray], members: list[int]) -> torch.Tensor:
        """The batch's images, flattened one after another into one (pinned on CUDA) host buffer:
        uint8, or float32 when any of them is float32 (a 16-bit source: its precision is kept)."""
        dtype = torch.float32 if _has_float(images, members) else torch.uint8
        staging = self._host_buffer((sum(images[i].size for i in members),), dtype)
        flat_host = staging.numpy()  # writing through numpy: Ray's batches are read-only arrays
        offset = 0
        for i in members:
            flat_host[offset : offset + images[i].size] = images[i].reshape(-1)
            offset += images[i].size
        return staging

    def _upload(self, images: Sequence[np.ndarray], members: list[int], staging: torch.Tensor, shape: tuple[int, int]):
        """One copy of the staged batch to the device, padded to ``shape``: ((B, 3, H, W) float, pads)."""
        flat = staging.to(self.device, non_blocking=True)
        parts, pads, offset = [], [], 0
        start = 0
        for end in range(1, len(members) + 1):  # members come grouped by shape: one pad per run
            if end < len(members) and images[members[end]].shape == images[members[start]].shape:
                continue
            h, w, _ = images[members[start]].shape
            n = end - start
            x = flat[offset : offset + n * h * w * 3].view(n, h, w, 3).permute(0, 3, 1, 2).float()  # (n, 3, h, w)
            x, p = pad_to(x, shape)
            parts.append(x)
            pads += [p] * n
            offset += n * h * w * 3
            start = end
        x = parts[0] if len(parts) == 1 else torch.cat(parts)
        return x.contiguous(memory_format=self.memory_format), pads  # (B, 3, H, W) 0..255

    def _download(self, y: torch.Tensor, keep_float: bool = False) -> torch.Tensor:
        """(B, 3, H, W) 0..255 float on the device -> (B, H, W, 3) uint8 on the host (asynchronously on
        CUDA); float32 with ``keep_float`` (a batch with a float input: its 8-bit members are rounded later)."""
        out = (y.float() if keep_float else y.round().to(torch.uint8)).permute(0, 2, 3, 1).contiguous()  # (B, H, W, 3)
        if not self.cuda:
            return out
        host = self._host_buffer(tuple(out.shape), out.dtype)
        return host.copy_(out, non_blocking=True)

    @torch.inference_mode()
    def stylize_many(
        self,
        images: Sequence[np.ndarray],
        styles: Sequence[str] | None = None,
        *,
        measure: Sequence[bool] | None = None,
    ) -> dict[str, list[StyleResult]]:
        """Every style in ``styles`` (default: all) over the same images: ``{style: [result per image]}``.

        Each input is uploaded once and its content features computed once for all styles.
        ``measure[i]`` False skips the metrics of image ``i`` (NaN losses, ``measured=False``).
        """
        styles = list(self.models) if styles is None else list(styles)
        for style in styles:
            if style not in self.models:
                raise KeyError(f"unknown style {style!r}; this Stylizer has {self.style_names}")
        for img in images:
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype not in (np.uint8, np.float32) or 0 in img.shape:
                raise ValueError(f"expected a non-empty (H, W, 3) uint8 or float32 image, got {img.dtype} {img.shape}")
        if measure is not None and len(measure) != len(images):
            raise ValueError(f"measure has {len(measure)} flags for {len(images)} images")
        if not images or not styles:
            return {s: [] for s in styles}
        self._stats.call_started()
        pending = [self._run_batch(images, b, styles, measure) for b in self.plan([i.shape[:2] for i in images])]
        metrics = self._measure_window(pending, styles)
        self.clock.wait(metrics.marks[styles[-1]] if metrics else pending[-1].marks[styles[-1]])  # the one sync
        results = self._collect(images, pending, styles, metrics)
        self._stats.call_ended()
        return results

    def _run_batch(
        self, images: Sequence[np.ndarray], batch: Batch, styles: list[str], measure: Sequence[bool] | None
    ) -> _Pending:
        """Queue one batch's forward passes for every style; nothing here waits for the device."""
        members = sorted(batch.indices, key=lambda i: images[i].shape)  # stable: same shapes adjacent
        staging = self._stage(images, members)  # host work, before the first mark: not device time
        marks = {"start": self.clock.mark()}
        x, pads = self._upload(images, members, staging, batch.shape)  # (B, 3, H, W) 0..255
        marks["uploaded"] = self.clock.mark()
        measured = [] if self.meter is None else [j for j, i in enumerate(members) if measure is None or measure[i]]
        done = _Pending(members, pads, measured, marks, contents=[crop(x[j : j + 1], pads[j]) for j in measured])
        real = sum(images[i].shape[0] * images[i].shape[1] for i in members)
        for style in styles:
            with self._autocast():
                y, done.tiles[style] = self._forward(style, x, pads)
            y = y.float()
            ref = _upscaled(x, self.scales[style])  # the input at the output's size
            # pixelwise, so finishing the padded batch and cropping later equals finishing the crops
            y = self.finish(y, ref).clamp_(0, 255)  # (B, 3, H, W)
            done.outputs[style] = self._download(y, _has_float(images, members))
            small = _downscaled(y, self.scales[style])  # metrics compare with the input, at its size
            done.crops[style] = [crop(small[j : j + 1], pads[j]) for j in measured]  # [(1, 3, h, w)]
            marks[style] = self.clock.mark()
            self._stats.record_forward(len(members), real, len(members) * batch.shape[0] * batch.shape[1])
        return done

    def _measure_window(self, pending: list[_Pending], styles: list[str]) -> _WindowMetrics | None:
        """Queue the metrics of the whole call at once: the loss meter batches images by metric size
        across forward batches (a sampled or mixed-size window would otherwise run VGG on a few
        images at a time), and computes the inputs' content features once for all styles."""
        where = [(k, j) for k, p in enumerate(pending) for j in p.measured]
        if not where:
            return None
        marks = {"start": self.clock.mark()}
        feats = self.meter.content_features([c for p in pending for c in p.contents])
        marks["content"] = self.clock.mark()
        losses = {}
        for style in styles:
            losses[style] = self.meter.measure_tensors(feats, [c for p in pending for c in p.crops[style]], style)
            marks[style] = self.clock.mark()
        return _WindowMetrics(where, marks, losses)

    def _collect(
        self, images: Sequence[np.ndarray], pending: list[_Pending], styles: list[str], metrics: _WindowMetrics | None
    ) -> dict[str, list[StyleResult]]:
        """Results in input order, once the device is done; per-image times are the batch's (or the
        window's, for metrics) amortised over its images, shared content work split between styles."""
        ms = self.clock.elapsed_ms
        shared = len(styles)
        values: dict[str, dict[tuple[int, int], dict[str, float]]] = {s: {} for s in styles}
        metrics_ms: dict[str, float] = {}
        if metrics is not None:
            m = metrics.marks
            self._stats.record_busy(ms(m["start"], m[styles[-1]]))
            content = ms(m["start"], m["content"]) / shared
            prev = m["content"]
            for style in styles:
                metrics_ms[style] = (content + ms(prev, m[style])) / len(metrics.where)
                prev = m[style]
                losses = metrics.losses[style].tolist()
                values[style] = {kj: {k: v[q] for k, v in losses.items()} for q, kj in enumerate(metrics.where)}
        out: dict[str, list[StyleResult | None]] = {s: [None] * len(images) for s in styles}
        for k, p in enumerate(pending):
            m, n = p.marks, len(p.members)
            self._stats.record_busy(ms(m["start"], m[styles[-1]]))
            upload = ms(m["start"], m["uploaded"]) / shared  # each style pays its share of the upload
            prev = m["uploaded"]
            for style in styles:
                stylize_ms = (upload + ms(prev, m[style])) / n
                prev = m[style]
                host = p.outputs[style].numpy()  # (B, Hb, Wb, 3)
                h, w = host.shape[1:3]
                for j, i in enumerate(p.members):
                    left, right, top, bottom = (v * self.scales[style] for v in p.pads[j])
                    # a copy: results must not keep the (pinned) batch buffer alive
                    image = np.array(host[j, top : h - bottom, left : w - right])
                    if image.dtype != images[i].dtype:  # an 8-bit input in a batch with a float one
                        image = np.rint(image).astype(np.uint8)
                    got = values[style].get((k, j))
                    out[style][i] = StyleResult(
                        image=image, stylize_ms=stylize_ms, metrics_ms=metrics_ms[style] if got else 0.0,
                        measured=got is not None, forward_images=n, tiles=p.tiles.get(style, [1] * n)[j],
                        **(got or {}),
                    )
        return out  # type: ignore[return-value]

    def _forward(self, style: str, x: torch.Tensor, pads: list[tuple[int, int, int, int]]
                 ) -> tuple[torch.Tensor, list[int]]:
        """The style network over the padded batch ``x``, tiled where the memory budget, ``tile`` or
        ``tileable`` ask for it (stylize_core.tiled_forward); returns the output and tiles per image."""
        if self._tiler is None:
            from .tiled_forward import TiledForward

            self._tiler = TiledForward(self.config, self.device, self.styles, self.models)
        return self._tiler(style, x, pads)

    def stylize(self, images: Sequence[np.ndarray], style: str) -> list[StyleResult]:
        """Stylise ``images`` with one style; results are in input order."""
        return self.stylize_many(images, [style])[style]

    def stylize_all(self, images: Sequence[np.ndarray]) -> dict[str, list[StyleResult]]:
        """Every style over the same images: ``{style: [result per image]}``."""
        return self.stylize_many(images)


def _has_float(images: Sequence[np.ndarray], members: list[int]) -> bool:
    return any(images[i].dtype == np.float32 for i in members)


def _upscaled(x: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, 3, H, W) -> bicubic (B, 3, sH, sW) in 0..255 (``x`` itself for scale 1)."""
    if scale == 1:
        return x
    return torch.nn.functional.interpolate(x, scale_factor=float(scale), mode="bicubic", align_corners=False).clamp_(0, 255)


def _downscaled(y: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, 3, sH, sW) -> area-averaged (B, 3, H, W) (``y`` itself for scale 1)."""
    return y if scale == 1 else torch.nn.functional.avg_pool2d(y, scale)
