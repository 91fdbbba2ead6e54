"""Per-image content/style/TV losses of stylised outputs, as reported in every metrics row, and the
statistics distance to the style image (losses.stats_distance over the style layers' per-channel
mean/std): ``style_stat_distance`` (output vs style) and ``style_stat_ratio`` (that over the input's
distance to the style: 1 = as far from the style's statistics as the input, 0 = matched).

The work is split so a caller running several styles over the same inputs pays for the inputs
once: :meth:`LossMeter.content_features` (per input) then :meth:`LossMeter.measure_tensors` (per
output, with those features). :meth:`LossMeter.measure` does both for one batch, as before.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .loss_network import LossNetwork, resolve_layers
from .losses import (
    Stats,
    StyleTargetCache,
    StyleTargets,
    blended_style_targets,
    content_loss,
    feature_stats,
    stats_distance,
    style_loss,
    tv_loss,
)
from .style_encoding import GramTarget

# A style's loss target: its style image, or for a blend of a multi-style network (image, weight)
# pairs whose Gram targets are mixed with the same weights; None when there is no style image. A
# GramTarget stands for an image whose targets were computed before (once per run: style_encoding).
StyleTarget = np.ndarray | GramTarget | Sequence[tuple[np.ndarray | GramTarget, float]] | None

# VGG's metric layers (Johnson et al.'s); other loss networks have their own (loss_network.default_layers)
DEFAULT_CONTENT_LAYERS = ("relu2_2",)
DEFAULT_STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")

# VGG16 pools three times before relu4_3; below this short side its deepest maps vanish, so only
# images smaller than this are scaled up (to exactly this).
METRICS_MIN_SIDE = 16

Images = torch.Tensor | Sequence[torch.Tensor]


@dataclass
class ContentFeatures:
    """Content-layer features of some inputs, batched by metric size.

    ``groups[k] = (indices, {layer: (n_k, C, h, w)})``: the inputs (positions in the list given to
    :meth:`LossMeter.content_features`) that share one metric size, in that order.
    """

    sizes: list[tuple[int, int]]  # (H, W) of each input
    groups: list[tuple[list[int], dict[str, torch.Tensor]]]
    # per group, the inputs' (mean, std) per style layer (None: not computed, no style has statistics)
    stats: list[list[Stats] | None] | None = None


@dataclass
class PendingLosses:
    """Per-image losses still on the device (no host sync yet); :meth:`tolist` brings them back."""

    order: list[int]  # values[k] belongs to image order[k]
    values: dict[str, torch.Tensor]  # {name: (n,)} float32

    def tolist(self) -> dict[str, list[float]]:
        """``{content_loss|style_loss|tv_loss|style_stat_distance|style_stat_ratio: [value per image,
        input order]}`` (syncs the device)."""
        out = {}
        for name, v in self.values.items():
            flat = v.float().cpu().tolist()
            ordered = [0.0] * len(flat)
            for k, i in enumerate(self.order):
                ordered[i] = flat[k]
            out[name] = ordered
        return out


def _as_list(images: Images) -> list[torch.Tensor]:
    """A (B, 3, H, W) batch or a list of (1, 3, H, W) / (3, H, W) images -> list of (1, 3, H, W)."""
    if isinstance(images, torch.Tensor):
        return list(images.split(1))
    return [x if x.dim() == 4 else x[None] for x in images]


class LossMeter:
    """Measures outputs against their inputs and each style's cached Gram targets.

    Losses are computed with both images resized so the short side is the smaller of the image's
    own short side and ``short_side`` (never upscaled: a thumbnail is measured at its own size, not
    at ~30x its pixels; images under METRICS_MIN_SIDE are the one exception). A full-resolution VGG
    pass costs more than the style network itself. TV loss uses the full-size output. Style loss
    is NaN for a style without a style image, and so are the statistics distance and ratio. The ratio
    needs the input's statistics at the style layers: with ``stat_ratio`` (off by default) the input
    pass goes on to the style layers (once per input, for every style), else the ratio is NaN.
    """

    def __init__(
        self,
        vgg: LossNetwork,
        style_images: Mapping[str, StyleTarget],
        *,
        content_layers: Sequence[str] = (),
        style_layers: Sequence[str] = (),
        short_side: int = 256,
        device: torch.device | str = "cpu",
        bf16: bool = False,
        channels_last: bool = True,
        stat_ratio: bool = False,
    ) -> None:
        # () = the network's own metric layers (VGG: DEFAULT_CONTENT_LAYERS / DEFAULT_STYLE_LAYERS)
        content_layers, style_layers = resolve_layers(getattr(vgg, "arch", "vgg16"), content_layers, style_layers)
        missing = set(content_layers) | set(style_layers)
        missing -= set(vgg.layers)
        if missing:
            raise ValueError(f"the loss network lacks layers {sorted(missing)} needed for metrics")
        # NHWC: faster with cuDNN and with oneDNN on CPU (VGG16 to relu4_3 at 256 px: 113 vs 134 ms)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.vgg = vgg.to(device, memory_format=self.memory_format)
        self.device = torch.device(device)
        self.loss_model = vgg.loss_model
        self.content_layers = tuple(content_layers)
        self.short_side = short_side
        self.bf16 = bf16 and self.device.type == "cuda"
        self.style_layers = tuple(style_layers)
        cache = StyleTargetCache()

        def target(value: StyleTarget) -> StyleTargets | None:
            if value is None:
                return None
            if isinstance(value, GramTarget):
                value = [(value, 1.0)]
            elif isinstance(value, np.ndarray):
                return cache.get_targets(vgg, value, self.style_layers, loss_model=self.loss_model, device=self.device)
            images, weights = zip(*value)  # a blend: the same convex mix of the styles' Gram (and statistics) targets
            return blended_style_targets(vgg, images, weights, self.style_layers, device=self.device)

        # style -> its targets: Grams (style loss) and per-channel mean/std (statistics distance)
        self.style_targets: dict[str, StyleTargets | None] = {name: target(v) for name, v in style_images.items()}
        # style -> its Gram targets {layer: (1, C, C)}, as the style loss uses them
        self.targets: dict[str, dict[str, torch.Tensor] | None] = {
            name: (t.grams if t is not None else None) for name, t in self.style_targets.items()}
        # whether the input pass also takes the style layers' statistics (for style_stat_ratio)
        # (``stat_ratio``, off by default: it makes the metrics ~1.6x slower, docs/reference/metrics.md)
        self.input_stats = stat_ratio and any(t is not None and t.stats(self.style_layers) is not None
                                              for t in self.style_targets.values())

    def metric_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) an image of (``height``, ``width``) is measured at."""
        short = min(height, width)
        target = max(METRICS_MIN_SIDE, min(short, self.short_side))
        if target == short:
            return height, width
        scale = target / short
        return max(1, round(height * scale)), max(1, round(width * scale))

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16)

    def _grouped(self, images: list[torch.Tensor]) -> list[tuple[list[int], torch.Tensor]]:
        """Images resized to their metric sizes and batched by it: [(indices, (n, 3, h, w))]."""
        by_size: dict[tuple[int, int], dict[tuple[int, int], list[int]]] = {}
        for i, x in enumerate(images):
            h, w = x.shape[-2:]
            by_size.setdefault(self.metric_size(h, w), {}).setdefault((h, w), []).append(i)
        out = []
        for size, by_shape in by_size.items():
            idx, parts = [], []
            for (h, w), members in by_shape.items():
                x = torch.cat([images[i] for i in members]).float().to(self.device)  # (n, 3, h0, w0)
                if (h, w) != size:
                    down = size[0] < h
                    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=down)
                idx += members
                parts.append(x)
            batch = parts[0] if len(parts) == 1 else torch.cat(parts)
            out.append((idx, batch.contiguous(memory_format=self.memory_format)))
        return out

    @torch.inference_mode()
    def content_features(self, content: Images) -> ContentFeatures:
        """Content-layer features of 0..255 inputs: a (B, 3, H, W) batch or a list of images of any sizes.

        Compute once per input and pass to :meth:`measure_tensors` for every style.
        """
        images = _as_list(content)
        groups = []
        stats: list[list[Stats] | None] = []
        with self._autocast():
            for idx, x in self._grouped(images):
                if not self.input_stats:  # the input then only needs the (shallow) content layers
                    groups.append((idx, self.vgg(x, self.content_layers)))
                    stats.append(None)
                    continue
                feats = self.vgg(x, tuple(dict.fromkeys(self.content_layers + self.style_layers)))
                # the style layers are only kept as statistics (B, C): the ratio's denominator
                stats.append(feature_stats([feats[k] for k in self.style_layers]))
                groups.append((idx, {k: feats[k] for k in self.content_layers}))
        return ContentFeatures([tuple(x.shape[-2:]) for x in images], groups, stats)

    @torch.inference_mode()
    def measure_tensors(self, content_feats: ContentFeatures, output: Images, style: str) -> PendingLosses:
        """Per-image losses of 0..255 ``output`` (same sizes and order as the features' inputs), on the device."""
        outputs = _as_list(output)
        sizes = [tuple(x.shape[-2:]) for x in outputs]
        if sizes != content_feats.sizes:
            raise ValueError(f"outputs of sizes {sizes} do not match the content features' inputs {content_feats.sizes}")
        full = self.style_targets.get(style)
        targets = full.grams if full is not None else None
        target_stats = full.stats(self.style_layers) if full is not None else None
        layers = tuple(dict.fromkeys(self.content_layers + tuple(targets or ())))
        c_parts, s_parts, t_parts, d_parts, r_parts = [], [], [], [], []
        group_stats = content_feats.stats or [None] * len(content_feats.groups)
        with self._autocast():
            for (idx, feats), in_stats in zip(content_feats.groups, group_stats):
                # `idx` lists same-shaped inputs next to each other (see _grouped), so regrouping the
                # outputs keeps their order: one batch, in `idx` order
                ((sub, x),) = self._grouped([outputs[i] for i in idx])
                assert sub == list(range(len(idx)))
                out_feats = self.vgg(x, layers)
                c_parts.append(sum(content_loss(out_feats[k], feats[k], reduction="none") for k in self.content_layers))
                nan = torch.full((len(idx),), float("nan"), device=x.device)
                if targets is None:
                    s_parts.append(nan)
                else:
                    s_parts.append(style_loss(out_feats, targets, reduction="none"))
                if target_stats is None:
                    d_parts.append(nan)
                    r_parts.append(nan)
                else:  # the same output features as the style loss: no other pass
                    dist = stats_distance(feature_stats([out_feats[k] for k in self.style_layers]), target_stats)
                    d_parts.append(dist)
                    r_parts.append(dist / stats_distance(in_stats, target_stats) if in_stats is not None else nan)
                start = 0
                for end in range(1, len(idx) + 1):  # TV on the full-size outputs, per run of one shape
                    if end == len(idx) or sizes[idx[end]] != sizes[idx[start]]:
                        run = torch.cat([outputs[i] for i in idx[start:end]])
                        t_parts.append(tv_loss(run, reduction="none").to(x.device))
                        start = end
        order = [i for idx, _ in content_feats.groups for i in idx]
        values = {"content_loss": c_parts, "style_loss": s_parts, "tv_loss": t_parts,
                  "style_stat_distance": d_parts, "style_stat_ratio": r_parts}
        return PendingLosses(order, {k: torch.cat(v).float() for k, v in values.items()})

    @torch.inference_mode()
    def measure(
        self, content: Images, output: Images, style: str, content_feats: ContentFeatures | None = None
    ) -> dict[str, list[float]]:
        """Per-image losses of 0..255 ``output`` against ``content`` (lists in input order), with
        ``metrics_ms`` per image. Pass ``content_feats`` from :meth:`content_features` to reuse them."""
        start = time.perf_counter()
        feats = content_feats if content_feats is not None else self.content_features(content)
        losses = self.measure_tensors(feats, output, style).tolist()  # syncs the device
        n = len(feats.sizes)
        losses["metrics_ms"] = [(time.perf_counter() - start) * 1000 / max(1, n)] * n
        return losses
