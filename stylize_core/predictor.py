"""A style-predicting network (Ghiasi et al. 2017, "Exploring the structure of a real-time, arbitrary
neural artistic stylization network"): any style image, one feed-forward pass per content image.

A small CNN encodes the style image; its per-channel feature means and stds (pooled over H*W at four
scales) go through a linear bottleneck to a style *embedding* ``e`` (E values), and a linear head maps
``e`` to the scale and shift (gamma, beta) of every instance-norm layer of a
:class:`~stylize_core.transformer_net.TransformerNet` of any :class:`NetConfig` size. Those parameters
are then baked into a plain single-style TransformerNet (:meth:`StylePredictorModel.bake`), so each
content image costs one pass of the network every backend already runs (eager, ONNX Runtime,
OpenVINO, tiling), and each style image is encoded once.

Strength and blends act on the embedding, as Ghiasi et al. do (section 4.2):

* ``alpha``: ``e = alpha * e_style + (1 - alpha) * e_content``. Ghiasi et al. use the content image's
  own embedding; that would cost a predictor pass and a different network per content image, so
  ``e_content`` here is the mean embedding of the training content photos, stored in the checkpoint
  (one network per style, whatever the content).
* blends: ``e = sum_i w_i e_i`` (weights summing to one). The head is affine, so this equals mixing
  the predicted gamma/beta with the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .transformer_net import InstanceNorm, NetConfig, TransformerNet


@dataclass(frozen=True)
class PredictorConfig:
    """The architecture of a :class:`StylePredictorModel`; saved in its checkpoint, rebuilt on load.

    ``net``: the transformer (single-style: the predictor supplies its norm parameters);
    ``embedding``: the bottleneck size E; ``channels``: the style encoder's four stride-2 conv widths;
    ``style_size``: the style image's short side as the encoder sees it (px).
    """

    net: NetConfig = field(default_factory=lambda: NetConfig(width=0.25))
    embedding: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)
    style_size: int = 192

    def __post_init__(self) -> None:
        if self.net.multi_style:
            raise ValueError("the predicted network is single-style: its norm parameters come from the predictor")
        if self.embedding < 1 or not self.channels or min(self.channels) < 1 or self.style_size < 16:
            raise ValueError(f"invalid predictor config {self}: embedding >= 1, channels >= 1, style_size >= 16")

    def to_dict(self) -> dict[str, Any]:
        return {"net": self.net.to_dict(), "embedding": self.embedding, "channels": list(self.channels),
                "style_size": self.style_size}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PredictorConfig:
        """Rebuild from :meth:`to_dict`; ValueError on a missing or unknown key."""
        unknown = sorted(set(data) - {"net", "embedding", "channels", "style_size"})
        if unknown:
            raise ValueError(f"unknown predictor config keys: {unknown}")
        return cls(NetConfig.from_dict(data["net"]), int(data["embedding"]),
                   tuple(int(c) for c in data["channels"]), int(data["style_size"]))


def norm_layers(net: TransformerNet) -> list[tuple[str, int]]:
    """(module name, channels) of every instance-norm layer of ``net``, in forward order."""
    return [(name, m.num_features) for name, m in net.named_modules() if isinstance(m, InstanceNorm)]


def style_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, h, w) 0..255 float with short side ``size`` (antialiased)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    scale = size / min(x.shape[-2:])
    if scale != 1.0:
        h, w = (max(1, round(s * scale)) for s in x.shape[-2:])
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=scale < 1, align_corners=False)
    return x.clamp(0, 255)


class StylePredictor(nn.Module):
    """Style image (B, 3, H, W) 0..255 -> embedding (B, E) -> norm parameters (B, P).

    P = 2 * (channels of every norm layer): per layer its gamma then its beta (:func:`norm_layers`'s
    order). The head's bias starts at gamma 1, beta 0 (a plain instance norm), its weight near zero.
    """

    def __init__(self, config: PredictorConfig, norm_channels: Sequence[int]) -> None:
        super().__init__()
        self.config = config
        self.norm_channels = tuple(int(c) for c in norm_channels)
        layers, c_in = [], 3
        for c in config.channels:
            layers.append(nn.Sequential(nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.ReLU()))
            c_in = c
        self.stages = nn.ModuleList(layers)
        self.bottleneck = nn.Linear(2 * sum(config.channels), config.embedding)
        self.head = nn.Linear(config.embedding, 2 * sum(self.norm_channels))
        with torch.no_grad():
            self.head.weight.mul_(0.01)
            self.head.bias.copy_(torch.cat([torch.cat([torch.ones(c), torch.zeros(c)]) for c in self.norm_channels]))

    def embed(self, style: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) 0..255 -> (B, E)."""
        x = style / 127.5 - 1.0
        pooled = []
        for stage in self.stages:
            x = stage(x)  # (B, c, H/2^k, W/2^k)
            flat = x.flatten(2)
            pooled += [flat.mean(2), (flat.var(2, unbiased=False) + 1e-5).sqrt()]  # (B, c) each
        return self.bottleneck(torch.cat(pooled, 1))  # (B, E)

    def params(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, E) -> (B, P)."""
        return self.head(embedding)


class StylePredictorModel(nn.Module):
    """The predictor and the transformer it parameterises, trained jointly; ``content_embedding`` (E,)
    is the mean embedding of the training content images (what ``alpha < 1`` blends towards)."""

    def __init__(self, config: PredictorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PredictorConfig()
        self.transformer = TransformerNet(config.net)
        self.layers = norm_layers(self.transformer)
        self.predictor = StylePredictor(config, [c for _, c in self.layers])
        self.register_buffer("content_embedding", torch.zeros(config.embedding))
        self.style_encodes = 0  # predictor passes over style images (one per style image per stylizer)

    def embed_image(self, image: np.ndarray) -> torch.Tensor:
        """A (H, W, 3) uint8 style image's embedding (E,), resized to ``config.style_size`` first."""
        self.style_encodes += 1
        ref = self.content_embedding
        return self.predictor.embed(style_tensor(image, self.config.style_size).to(ref.device))[0]

    def mix(self, embeddings: Sequence[tuple[torch.Tensor, float]], alpha: float = 1.0) -> torch.Tensor:
        """``alpha * sum_i w_i e_i + (1 - alpha) * content_embedding``, (E,)."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be within [0, 1], got {alpha}")
        style = sum(w * e for e, w in embeddings)
        return alpha * style + (1.0 - alpha) * self.content_embedding  # type: ignore[operator]

    def norm_state(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """(P,) -> the transformer's ``{name.weight: gamma, name.bias: beta}`` for every norm layer."""
        out, at = {}, 0
        for name, c in self.layers:
            out[f"{name}.weight"], out[f"{name}.bias"] = params[at:at + c], params[at + c:at + 2 * c]
            at += 2 * c
        if at != params.shape[-1]:
            raise ValueError(f"{params.shape[-1]} norm parameters for a network that has {at}")
        return out

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Training: (B, 3, H, W) 0..255 content and ONE (1, 3, h, w) 0..255 style -> (B, 3, H, W)."""
        params = self.predictor.params(self.predictor.embed(style))[0]  # (P,)
        return functional_call(self.transformer, self.norm_state(params), (content,))

    def bake(self, embedding: torch.Tensor) -> TransformerNet:
        """A plain single-style TransformerNet with the norm parameters that ``embedding`` (E,) predicts:
        what every backend runs, one pass per content image."""
        with torch.no_grad():
            params = self.predictor.params(embedding[None].float())[0]
            net = TransformerNet(self.config.net)
            state = {k: v.detach().clone() for k, v in self.transformer.state_dict().items()}
            state.update({k: v.clone() for k, v in self.norm_state(params).items()})
            net.load_state_dict(state, strict=True)
        return net.to(embedding.device).eval().requires_grad_(False)
