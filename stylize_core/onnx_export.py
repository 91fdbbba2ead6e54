"""Export a style network to ONNX with dynamic batch, height and width.

The TorchScript-based exporter (``dynamo=False``) is used first: for this all-convolutional network
it is fast (well under a second), honours ``opset`` exactly and names the dynamic axes
(``batch``/``height``/``width``). The torch.export-based exporter is the fallback for torch builds
where the old one is gone; it needs opset >= 18 and symbolic ``dynamic_shapes``.
``torch.onnx`` is imported lazily so that importing :mod:`stylize_core` stays cheap.

Every size of :class:`~stylize_core.transformer_net.NetConfig` exports the same way. A multi-style
network takes a second input, ``style_weights`` (S,) float32: one weight per style (>= 0, not all
0), normalised to sum to one inside the graph, so ``[0, 1, 0]`` renders style 1 and ``[1, 1, 0]``
an even blend of styles 0 and 1.
"""

from __future__ import annotations

import copy
import os
import warnings

import torch
from torch import nn

from .transformer_net import TransformerNet

INPUT_NAME = "input"
STYLE_WEIGHTS_NAME = "style_weights"
OUTPUT_NAME = "output"
_DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}


def _multi_style(model: nn.Module) -> bool:
    """A conditional-instance-norm network (its forward also takes style weights). Any other module
    with the (B, 3, H, W) -> (B, 3, H, W) contract exports as a single-style network."""
    arch = getattr(model, "arch", None)
    return bool(arch is not None and arch.multi_style)


class _WithStyleWeights(nn.Module):
    """(N, 3, H, W), (S,) -> (N, 3, H, W): the weights normalised to sum to one, then the network."""

    def __init__(self, net: TransformerNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        return self.net(x, style_weights / style_weights.sum())


def export_onnx(
    model: TransformerNet,
    path: str,
    *,
    opset: int = 17,
    example_size: tuple[int, int] = (256, 256),
) -> str:
    """Write ``model`` (float32, eval mode, on CPU) to ``path`` as ONNX and return ``path``.

    The graph takes ``input`` (N, 3, H, W) float32 RGB in 0..255 (and ``style_weights`` (S,) for a
    multi-style network) and returns ``output`` of the same layout; N, H and W are dynamic (outputs
    match inputs when H, W are multiples of 4). The caller's model is not modified (a CPU float32
    copy is exported).
    """
    import torch.onnx  # lazy: pulls in onnx/onnxscript machinery

    net: nn.Module = copy.deepcopy(model).float().cpu().eval()
    example: tuple[torch.Tensor, ...] = (torch.rand(1, 3, *example_size) * 255.0,)  # (1, 3, H, W)
    names = [INPUT_NAME]
    shapes: dict[str, dict[int, object]] = {"x": {}}
    if _multi_style(net):
        net = _WithStyleWeights(net).eval()
        example += (torch.full((model.arch.num_styles,), 1.0 / model.arch.num_styles),)  # (S,)
        names.append(STYLE_WEIGHTS_NAME)
        shapes["style_weights"] = {}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with warnings.catch_warnings():
            # The old exporter announces its deprecation and notes that instance norm exports
            # with train=True; both are expected (InstanceNorm2d here has no running stats).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                example,
                path,
                dynamo=False,
                opset_version=opset,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: _DYNAMIC_AXES, OUTPUT_NAME: _DYNAMIC_AXES},
            )
    except (TypeError, RuntimeError, AttributeError, NotImplementedError):
        dim = torch.export.Dim.DYNAMIC
        shapes["x"] = {0: dim, 2: dim, 3: dim}
        torch.onnx.export(
            net,
            example,
            path,
            dynamo=True,
            external_data=False,  # one self-contained file: onnx_bytes ships it as bytes
            opset_version=max(opset, 18),
            input_names=names,
            output_names=[OUTPUT_NAME],
            dynamic_shapes=shapes,
        )
    return path


def onnx_bytes(model: TransformerNet, *, opset: int = 17, example_size: tuple[int, int] = (256, 256)) -> bytes:
    """:func:`export_onnx` into memory (for writers that upload bytes to a URI)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, os.path.join(tmp, "model.onnx"), opset=opset, example_size=example_size)
        with open(path, "rb") as f:
            return f.read()


def onnx_max_abs_diff(
    model: TransformerNet,
    onnx_data: bytes,
    size: tuple[int, int] = (64, 96),
    style_weights: list[float] | None = None,
) -> float | None:
    """Max |ONNX - PyTorch| on one random (1, 3, *size) image in 0..255, or None without onnxruntime.
    A multi-style network is compared at ``style_weights`` (default: an even blend of all styles)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    import numpy as np

    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 255.0  # (1, 3, H, W)
    session = onnxruntime.InferenceSession(onnx_data, providers=["CPUExecutionProvider"])
    feeds = {INPUT_NAME: x.numpy()}
    args: tuple[torch.Tensor, ...] = (x,)
    if _multi_style(model):
        w = torch.tensor(style_weights or [1.0] * model.arch.num_styles, dtype=torch.float32)  # (S,)
        feeds[STYLE_WEIGHTS_NAME] = w.numpy()
        args += (w / w.sum(),)
    out = session.run(None, feeds)[0]
    with torch.no_grad():
        ref = copy.deepcopy(model).float().cpu().eval()(*args).numpy()
    return float(np.abs(out - ref).max())
