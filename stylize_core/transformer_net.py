"""Johnson et al. (2016) feed-forward style network, in a family of sizes.

The default :class:`NetConfig` gives exactly pytorch/examples ``fast_neural_style``'s layout: layer
names, order and shapes (62 tensors, 1,679,235 parameters), so its published ``.pth`` files load
unchanged. Other configs scale the channel widths (``width``), change the number of residual blocks
(``blocks``), use depthwise-separable 3x3 convolutions inside the residual blocks (``depthwise``), or
hold several styles in one network with conditional instance norm (``num_styles > 1``, Dumoulin et
al. 2017: a scale and shift per style per norm layer, everything else shared).

Input and output are RGB in the 0..255 range; the output is not clamped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Total downsampling of the encoder: inputs whose sides are multiples of this come back at
# exactly the same size.
SIZE_MULTIPLE = 4
# pytorch/examples' channel widths of the three resolutions (full, 1/2, 1/4).
BASE_CHANNELS = (32, 64, 128)


@dataclass(frozen=True)
class NetConfig:
    """The architecture of a :class:`TransformerNet`; saved in every checkpoint, rebuilt on load.

    ``width`` multiplies the 32/64/128 channel widths (rounded, at least 1); ``blocks`` is the number
    of residual blocks; ``depthwise`` replaces each residual 3x3 conv by a depthwise 3x3 + pointwise
    1x1 pair; ``num_styles > 1`` makes every instance norm conditional on a style-weight vector.
    """

    width: float = 1.0
    blocks: int = 5
    depthwise: bool = False
    num_styles: int = 1

    def __post_init__(self) -> None:
        if not (self.width > 0 and self.blocks >= 0 and self.num_styles >= 1):
            raise ValueError(f"invalid network config {self}: width > 0, blocks >= 0 and num_styles >= 1")

    @property
    def channels(self) -> tuple[int, int, int]:
        c1, c2, c3 = (max(1, round(c * self.width)) for c in BASE_CHANNELS)
        return c1, c2, c3

    @property
    def is_examples_layout(self) -> bool:
        """True for the pytorch/examples layout (the only one its code loads)."""
        return self == NetConfig()

    @property
    def multi_style(self) -> bool:
        return self.num_styles > 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> NetConfig:
        """Rebuild from :meth:`to_dict` output; ``None`` is the default layout; unknown keys are an error."""
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown network config keys: {unknown}")
        return cls(**data)

    def describe(self) -> str:
        """Short label, e.g. ``width=0.25,blocks=5,depthwise,styles=4``."""
        parts = [f"width={self.width:g}", f"blocks={self.blocks}"]
        if self.depthwise:
            parts.append("depthwise")
        if self.multi_style:
            parts.append(f"styles={self.num_styles}")
        return ",".join(parts)


def _norm_stats_only(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-image, per-channel normalisation of (B, C, H, W), no affine.

    On CPU a group norm with one channel per group is the same arithmetic through a kernel 3-4x
    faster than instance norm's batch-norm-over-a-reshape (7.8 ms vs 2.4 ms for 32x512x512 on 2
    cores); CUDA and ONNX export keep the instance-norm operator.
    """
    if x.device.type == "cpu" and not torch.onnx.is_in_onnx_export():
        return F.group_norm(x, x.shape[1], None, None, eps)
    return F.instance_norm(x, eps=eps)


class InstanceNorm(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d(affine=True)`` (same parameters, same state-dict keys) that runs on CPU as a
    group norm with one channel per group (see :func:`_norm_stats_only`). ``style`` is accepted and
    ignored so that single- and multi-style networks share one forward."""

    # a stylize_core.norm_stats.SharedStats while one runs the network with shared statistics
    shared_stats: Any = None

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        if self.shared_stats is not None:
            y = self.shared_stats.normalize(self, x)
            return y * self.weight.to(y.dtype)[:, None, None] + self.bias.to(y.dtype)[:, None, None]
        if x.device.type != "cpu" or torch.onnx.is_in_onnx_export() or self.track_running_stats or x.dim() != 4:
            return super().forward(x)
        return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)


class ConditionalInstanceNorm(nn.Module):
    """Conditional instance norm: ``weight``/``bias`` are (S, C), one scale and shift per style.

    ``style`` is a weight vector over the S styles, (S,) for the whole batch or (B, S) per image; the
    scale and shift used are ``style @ weight`` and ``style @ bias``. A one-hot vector selects a
    style; a convex combination blends them (Dumoulin et al. 2017).
    """

    shared_stats: Any = None  # as InstanceNorm.shared_stats

    def __init__(self, num_features: int, num_styles: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.num_styles, self.eps = num_features, num_styles, eps
        self.weight = nn.Parameter(torch.ones(num_styles, num_features))
        self.bias = nn.Parameter(torch.zeros(num_styles, num_features))

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        if style is None:
            raise ValueError(
                f"this network holds {self.num_styles} styles: pass style weights ((S,) or (B, S)), or use "
                "TransformerNet.bake_style() / StyleModel.select() for a single-style module"
            )
        w = (style if style.dim() == 2 else style.unsqueeze(0)).to(self.weight.dtype)  # (B or 1, S)
        scale = (w @ self.weight)[:, :, None, None]  # (B or 1, C, 1, 1)
        shift = (w @ self.bias)[:, :, None, None]
        y = _norm_stats_only(x, self.eps) if self.shared_stats is None else self.shared_stats.normalize(self, x)
        return y * scale.to(y.dtype) + shift.to(y.dtype)


def _norm(channels: int, arch: NetConfig) -> nn.Module:
    return ConditionalInstanceNorm(channels, arch.num_styles) if arch.multi_style else InstanceNorm(channels, affine=True)


class ConvLayer(nn.Module):
    """Reflection-padded convolution (padding keeps the size at stride 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class SeparableConvLayer(nn.Module):
    """Reflection-padded depthwise 3x3 conv then a pointwise 1x1 conv (MobileNet's factorisation):
    9C + C^2 multiply-adds per pixel instead of 9C^2."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        # no bias: the pointwise conv's bias follows, and instance norm removes constants anyway
        self.depthwise = nn.Conv2d(channels, channels, kernel_size, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(self.reflection_pad(x)))


class ResidualBlock(nn.Module):
    """Two 3x3 conv + instance-norm layers with an identity shortcut (He et al. 2016)."""

    def __init__(self, channels: int, arch: NetConfig | None = None) -> None:
        super().__init__()
        arch = arch or NetConfig()
        conv = (lambda: SeparableConvLayer(channels)) if arch.depthwise else (lambda: ConvLayer(channels, channels, 3, 1))
        self.conv1 = conv()
        self.in1 = _norm(channels, arch)
        self.conv2 = conv()
        self.in2 = _norm(channels, arch)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        y = self.relu(self.in1(self.conv1(x), style))
        return x + self.in2(self.conv2(y), style)


class UpsampleConvLayer(nn.Module):
    """Nearest-neighbour upsampling followed by a conv: avoids transposed-conv checkerboards."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, upsample: int | None = None
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
        return self.conv2d(self.reflection_pad(x))


class TransformerNet(nn.Module):
    """Image transformation network: (B, 3, H, W) 0..255 RGB -> (B, 3, H', W').

    H' == H and W' == W when both are multiples of :data:`SIZE_MULTIPLE`; the
    :class:`~stylize_core.stylizer.Stylizer` pads other sizes and crops back. A multi-style network
    (``arch.num_styles > 1``) needs ``style`` weights in :meth:`forward`; :meth:`bake_style` turns it
    into a single-style network for one style or blend.
    """

    def __init__(self, arch: NetConfig | None = None) -> None:
        super().__init__()
        self.arch = arch = arch or NetConfig()
        c1, c2, c3 = arch.channels
        self.conv1 = ConvLayer(3, c1, kernel_size=9, stride=1)
        self.in1 = _norm(c1, arch)
        self.conv2 = ConvLayer(c1, c2, kernel_size=3, stride=2)
        self.in2 = _norm(c2, arch)
        self.conv3 = ConvLayer(c2, c3, kernel_size=3, stride=2)
        self.in3 = _norm(c3, arch)
        # res1..resN as attributes (not a ModuleList): the pytorch/examples state-dict keys
        for i in range(1, arch.blocks + 1):
            self.add_module(f"res{i}", ResidualBlock(c3, arch))
        self.deconv1 = UpsampleConvLayer(c3, c2, kernel_size=3, stride=1, upsample=2)
        self.in4 = _norm(c2, arch)
        self.deconv2 = UpsampleConvLayer(c2, c1, kernel_size=3, stride=1, upsample=2)
        self.in5 = _norm(c1, arch)
        self.deconv3 = ConvLayer(c1, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        y = self.relu(self.in1(self.conv1(x), style))  # (B, c1, H, W)
        y = self.relu(self.in2(self.conv2(y), style))  # (B, c2, H/2, W/2)
        y = self.relu(self.in3(self.conv3(y), style))  # (B, c3, H/4, W/4)
        for i in range(1, self.arch.blocks + 1):
            y = getattr(self, f"res{i}")(y, style)  # (B, c3, H/4, W/4)
        y = self.relu(self.in4(self.deconv1(y), style))  # (B, c2, H/2, W/2)
        y = self.relu(self.in5(self.deconv2(y), style))  # (B, c1, H, W)
        return self.deconv3(y)  # (B, 3, H, W)

    def bake_style(self, weights: torch.Tensor | list[float]) -> TransformerNet:
        """A single-style network whose norm parameters are ``weights @ (S, C)`` of this multi-style
        one (the same output as ``self(x, weights)``, without the per-call mixing). ``weights`` (S,)
        are used as given: :func:`stylize_core.style_mix.normalize_weights` makes them sum to one."""
        if not self.arch.multi_style:
            raise ValueError("bake_style needs a multi-style network (num_styles > 1)")
        w = torch.as_tensor(weights, dtype=torch.float32).reshape(-1)  # (S,)
        if w.numel() != self.arch.num_styles:
            raise ValueError(f"{w.numel()} style weights for a network of {self.arch.num_styles} styles")
        single = TransformerNet(NetConfig(self.arch.width, self.arch.blocks, self.arch.depthwise, 1))
        conditional = {name for name, m in self.named_modules() if isinstance(m, ConditionalInstanceNorm)}
        state = {}
        for key, value in self.state_dict().items():
            owner = key.rsplit(".", 1)[0]
            state[key] = (w.to(value) @ value.detach()) if owner in conditional else value.detach().clone()
        single.load_state_dict(state, strict=True)
        ref = next(self.parameters())
        return single.to(ref.device).train(self.training)
