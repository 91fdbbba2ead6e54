"""The object a Ray actor holds: style networks + loss network, built once, applied to batches."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import StyleModel
from .color import blend, preserve_color
from .loss_meter import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, LossMeter
from .transformer_net import SIZE_MULTIPLE
from .vgg import VGGFeatures

# The 9x9 reflection pad of the first layer needs sides > 4, and the two stride-2 layers need a few
# pixels left; smaller images are edge-padded up to this and cropped back.
MIN_SIDE = 16


@dataclass
class StylizerConfig:
    """How a :class:`Stylizer` runs. ``device="auto"`` picks CUDA when available."""

    device: str = "auto"
    # NHWC activations: faster with cuDNN, and with oneDNN on CPU too since InstanceNorm runs as a
    # group norm there (2.91 vs 2.72 images/s at 512 px on AVX-512, 1.85 vs 1.53 limited to AVX2).
    channels_last: bool = True
    bf16: bool = True  # autocast on CUDA only; CPU stays float32
    metrics: bool = True
    metrics_short_side: int = 256  # a full-res VGG pass costs more than the style network itself
    content_layers: tuple[str, ...] = DEFAULT_CONTENT_LAYERS
    style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
    strength: float = 1.0
    preserve_color: bool = False
    max_batch: int = 8
    max_batch_pixels: int = 8 * 512 * 512  # bounds activation memory when same-sized images pile up
    # On CPU, batches beyond the caches lose: 512x512 runs at 0.74 of the matmul rate one at a time,
    # 0.66 four at a time (benchmarks/bench_transformer.py, 2-core machine).
    cpu_max_batch_pixels: int = 4 * 256 * 256


@dataclass
class StyleResult:
    """One stylised image and its metrics (losses are NaN when metrics are off or unavailable)."""

    image: np.ndarray  # (H, W, 3) uint8, the input's size
    content_loss: float = float("nan")
    style_loss: float = float("nan")
    tv_loss: float = float("nan")
    stylize_ms: float = 0.0
    metrics_ms: float = 0.0


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pad_amounts(size: int) -> tuple[int, int]:
    """(before, after) padding that brings ``size`` to a multiple of SIZE_MULTIPLE, at least MIN_SIDE."""
    target = max(MIN_SIDE, -(-size // SIZE_MULTIPLE) * SIZE_MULTIPLE)
    extra = target - size
    return extra // 2, extra - extra // 2


def _pad(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    h, w = x.shape[-2:]
    (top, bottom), (left, right) = _pad_amounts(h), _pad_amounts(w)
    pads = (left, right, top, bottom)
    if any(pads):
        # reflect needs the pad smaller than the side; tiny images fall back to edge replication
        mode = "reflect" if max(top, bottom) < h and max(left, right) < w else "replicate"
        x = F.pad(x, pads, mode=mode)
    return x, pads


def _crop(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    left, right, top, bottom = pads
    h, w = x.shape[-2:]
    return x[..., top : h - bottom, left : w - right]


def _batches(images: Sequence[np.ndarray], max_batch: int, max_pixels: int) -> list[list[int]]:
    """Indices grouped by size (a batch needs one shape), chunked by count and total pixels."""
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        by_size[img.shape[:2]].append(i)
    out: list[list[int]] = []
    for (h, w), idx in by_size.items():
        per_batch = max(1, min(max_batch, max_pixels // max(1, h * w)))
        out += [idx[i : i + per_batch] for i in range(0, len(idx), per_batch)]
    return out


class Stylizer:
    """Applies one or more style networks to lists of (H, W, 3) uint8 images of any sizes.

    Per-image metrics (content, style and TV loss) use the VGG loss network at
    ``metrics_short_side``: content loss against the input image, style loss against the style's
    Gram targets (from the style image stored in the checkpoint, or ``style_images``; NaN when
    neither exists, e.g. a bare pytorch/examples state dict), TV loss on the full-size output.
    """

    def __init__(
        self,
        styles: Mapping[str, StyleModel],
        vgg: VGGFeatures | None = None,
        config: StylizerConfig | None = None,
        *,
        style_images: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        if not styles:
            raise ValueError("a Stylizer needs at least one style")
        self.config = config or StylizerConfig()
        self.device = resolve_device(self.config.device)
        self.cuda = self.device.type == "cuda"
        memory_format = torch.channels_last if self.config.channels_last else torch.contiguous_format
        self.styles = dict(styles)
        self.models = {
            name: sm.model.to(self.device, memory_format=memory_format).eval().requires_grad_(False)
            for name, sm in self.styles.items()
        }
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
                device=self.device,
                bf16=self.config.bf16,
                channels_last=self.config.channels_last,
            )

    @property
    def style_names(self) -> list[str]:
        return list(self.styles)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.config.bf16)

    def _to_batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        arr = np.stack(images)  # (B, H, W, 3) uint8
        x = torch.from_numpy(arr).to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()  # (B, 3, H, W)
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def stylize(self, images: Sequence[np.ndarray], style: str) -> list[StyleResult]:
        """Stylise ``images`` with one style; results are in input order."""
        if style not in self.models:
            raise KeyError(f"unknown style {style!r}; this Stylizer has {self.style_names}")
        for img in images:
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or 0 in img.shape:
                raise ValueError(f"expected a non-empty (H, W, 3) uint8 image, got {img.dtype} {img.shape}")
        model = self.models[style]
        results: list[StyleResult | None] = [None] * len(images)
        budget = self.config.max_batch_pixels if self.cuda else min(self.config.max_batch_pixels, self.config.cpu_max_batch_pixels)
        for idx in _batches(images, self.config.max_batch, budget):
            start = time.perf_counter()
            content = self._to_batch([images[i] for i in idx])  # (B, 3, H, W) 0..255
            padded, pads = _pad(content)
            with self._autocast():
                out = model(padded)
            out = _crop(out.float(), pads)
            if self.config.preserve_color:
                out = preserve_color(out, content)
            out = blend(out, content, self.config.strength).clamp_(0, 255)
            out_u8 = out.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
            self._sync()
            elapsed = (time.perf_counter() - start) * 1000 / len(idx)
            losses = self.meter.measure(content, out, style) if self.meter else {}
            for j, i in enumerate(idx):
                results[i] = StyleResult(image=out_u8[j], stylize_ms=elapsed, **{k: v[j] for k, v in losses.items()})
        return results  # type: ignore[return-value]

    def stylize_all(self, images: Sequence[np.ndarray]) -> dict[str, list[StyleResult]]:
        """Every style over the same images: ``{style: [result per image]}``."""
        return {name: self.stylize(images, name) for name in self.models}
