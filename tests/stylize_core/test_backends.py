"""CPU backends (stylize_core.backends) against eager PyTorch.

Tolerances are in 0..255 output units and are checked on the shipped demo network (real weights give
outputs that span 0..255; a random TransformerNet's outputs stay within about +-1.5, where an absolute
tolerance would say nothing). README "CPU backends" documents the same numbers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import stylize_core
from stylize_core import backends
from stylize_core.backends import BACKENDS, BackendError, BackendUnavailable, backend_available, make_backend, parse_spec
from stylize_core.checkpoint import load_style_model
from stylize_core.transformer_net import InstanceNorm

DEMO = str(Path(stylize_core.__file__).parent / "assets" / "demo_mosaic.pth")
# fp32: measured max 0.13, mean 0.003 at 512 px on 8 photographs (benchmarks/bench_backends.py)
FP32_MAX_ABS = 0.25
# bf16 keeps 8 significant bits: measured max 2.1, mean 0.15 at 512 px; a few grey levels at worst
BF16_MAX_ABS = 8.0
BF16_MEAN_ABS = 0.5


def _skip_unavailable(name: str) -> None:
    reason = backend_available(name)
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def demo_net() -> nn.Module:
    return load_style_model(DEMO).model.eval()


def _photo_batch(batch: int, h: int, w: int) -> torch.Tensor:
    """(batch, 3, h, w) float32 0..255 crops of scikit-image's astronaut (real image statistics)."""
    from skimage import data

    img = data.astronaut()  # (512, 512, 3) uint8
    crops = [img[40 * i : 40 * i + h, 30 * i : 30 * i + w] for i in range(batch)]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().contiguous()


class TinyStyleNet(nn.Module):
    """Another network with the style-network contract (other widths and depth than TransformerNet)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, width, 3, stride=2), InstanceNorm(width, affine=True), nn.ReLU())
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), nn.Conv2d(width, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x)) * 100.0 + 128.0  # (B, 3, H, W), outputs spread over ~0..255


@pytest.mark.parametrize("name", [n for n in BACKENDS if n != "compile"])
def test_fp32_backend_matches_eager_on_the_demo_network_at_two_sizes(name, demo_net):
    _skip_unavailable(name)
    backend = make_backend(demo_net, name)
    for x in (_photo_batch(1, 36, 52), _photo_batch(2, 64, 44)):
        with torch.inference_mode():
            ref = demo_net(x)
        out = backend(x)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert (out - ref).abs().max().item() <= FP32_MAX_ABS
    assert backend.describe().startswith(f"{name} ") and backend.describe().split()[2] == "fp32"


@pytest.mark.parametrize("name", BACKENDS)
def test_any_module_with_the_contract_runs_on_every_backend(name):
    # compile is tested here only: inductor compiles this small graph in seconds, the demo net in a minute.
    # Batches of 2 and 3: one dynamic graph serves both (a batch of 1 would compile a second, ~7 s more)
    _skip_unavailable(name)
    torch.manual_seed(0)
    net = TinyStyleNet().eval()
    backend = make_backend(net, name)
    for x in (torch.rand(2, 3, 32, 48) * 255, torch.rand(3, 3, 64, 40) * 255):
        with torch.inference_mode():
            ref = net(x)
        out = backend(x)
        assert out.shape == x.shape
        assert ref.std().item() > 10  # the tolerance below is small against the outputs' spread
        assert (out - ref).abs().max().item() <= 1e-2


@pytest.mark.parametrize("name", ["eager", "openvino"])
def test_bf16_stays_within_its_documented_tolerance(name, demo_net):
    _skip_unavailable(name)
    backend = make_backend(demo_net, f"{name}:bf16")
    x = _photo_batch(2, 64, 64)
    with torch.inference_mode():
        ref = demo_net(x)
    diff = (backend(x) - ref).abs()
    assert diff.max().item() <= BF16_MAX_ABS and diff.mean().item() <= BF16_MEAN_ABS


def test_unknown_backend_or_precision_is_refused_with_the_choices(demo_net):
    with pytest.raises(BackendError, match=r"unknown backend 'tensorrt'; choose one of eager, compile, onnxruntime, openvino"):
        make_backend(demo_net, "tensorrt")
    with pytest.raises(BackendError, match=r"unknown precision 'fp16' in 'eager:fp16'"):
        make_backend(demo_net, "eager:fp16")
    assert backend_available("tensorrt").startswith("unknown backend 'tensorrt'")
    assert backend_available("eager") is None
    assert parse_spec(" openvino:bf16 ") == ("openvino", "bf16") and parse_spec("compile") == ("compile", "fp32")


def test_onnxruntime_refuses_bf16(demo_net):
    _skip_unavailable("onnxruntime")
    with pytest.raises(BackendError, match="fp32 only"):
        make_backend(demo_net, "onnxruntime:bf16")


@pytest.mark.parametrize("name,module", [("onnxruntime", "onnxruntime"), ("openvino", "openvino"), ("openvino", "onnx")])
def test_missing_package_names_the_extra(name, module, monkeypatch, demo_net):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(BackendUnavailable, match=r"pip install 'stylize\[cpu\]'"):
        make_backend(demo_net, name)
    assert "stylize[cpu]" in backend_available(name)


def test_the_callers_module_is_not_changed(demo_net):
    net = TinyStyleNet().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    make_backend(net, "eager")
    assert net.training and all(p.requires_grad for p in net.parameters())
    assert all(torch.equal(before[k], v) and v.is_contiguous() for k, v in net.state_dict().items())


def test_openvino_compiles_once_for_all_shapes_or_keeps_a_bounded_model_per_shape():
    _skip_unavailable("openvino")
    torch.manual_seed(0)
    net = TinyStyleNet().eval()
    dynamic = make_backend(net, "openvino")
    for h in (16, 20):
        x = torch.rand(1, 3, h, 16) * 255
        with torch.inference_mode():
            assert (dynamic(x) - net(x)).abs().max().item() <= 1e-2
    assert list(dynamic._requests) == [()]
    assert "(plugin: f32)" in dynamic.describe()
    # the per-shape variant (benchmarks compare it) keeps the most recent shapes only
    static = backends.OpenVinoBackend(net, "fp32", 2, static_shapes=True, max_shapes=2)
    for h in (16, 20, 24, 16):
        x = torch.rand(1, 3, h, 16) * 255
        with torch.inference_mode():
            assert (static(x) - net(x)).abs().max().item() <= 1e-2
    assert list(static._requests) == [(1, 3, 24, 16), (1, 3, 16, 16)]


def test_input_layout_is_checked(demo_net):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        make_backend(demo_net, "eager")(torch.zeros(3, 8, 8))


def test_importing_the_module_imports_no_optional_package():
    code = "import sys, stylize_core.backends; print(sorted({'onnxruntime', 'openvino', 'onnx'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
