"""TransformerNet matches pytorch/examples fast_neural_style exactly."""

from __future__ import annotations

import torch

from stylize_core.transformer_net import InstanceNorm, TransformerNet

# The contract, spelled out (pytorch/examples fast_neural_style/transformer_net.py module order).
_CONV = lambda n: [f"{n}.conv2d.weight", f"{n}.conv2d.bias"]  # noqa: E731
_IN = lambda n: [f"{n}.weight", f"{n}.bias"]  # noqa: E731
_RES = lambda n: _CONV(f"{n}.conv1") + _IN(f"{n}.in1") + _CONV(f"{n}.conv2") + _IN(f"{n}.in2")  # noqa: E731
EXPECTED_KEYS = (
    _CONV("conv1") + _IN("in1") + _CONV("conv2") + _IN("in2") + _CONV("conv3") + _IN("in3")
    + sum((_RES(f"res{i}") for i in range(1, 6)), [])
    + _CONV("deconv1") + _IN("in4") + _CONV("deconv2") + _IN("in5") + _CONV("deconv3")
)
EXPECTED_SHAPES = {
    "conv1.conv2d.weight": (32, 3, 9, 9), "conv2.conv2d.weight": (64, 32, 3, 3),
    "conv3.conv2d.weight": (128, 64, 3, 3), "res3.conv2.conv2d.weight": (128, 128, 3, 3),
    "res5.in2.bias": (128,), "deconv1.conv2d.weight": (64, 128, 3, 3), "in4.weight": (64,),
    "deconv2.conv2d.weight": (32, 64, 3, 3), "deconv3.conv2d.weight": (3, 32, 9, 9), "deconv3.conv2d.bias": (3,),
}


def test_state_dict_keys_order_shapes_and_parameter_count():
    sd = TransformerNet().state_dict()
    assert list(sd) == EXPECTED_KEYS
    assert len(sd) == 62
    for key, shape in EXPECTED_SHAPES.items():
        assert tuple(sd[key].shape) == shape, key
    assert sum(p.numel() for p in TransformerNet().parameters()) == 1_679_235


def test_forward_keeps_size_for_multiples_of_four_and_is_finite():
    torch.manual_seed(0)
    net = TransformerNet().eval()
    x = torch.rand(2, 3, 36, 20) * 255
    with torch.inference_mode():
        y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    # instance norm: each image is processed independently of the others in its batch
    with torch.inference_mode():
        y0 = net(x[:1])
    torch.testing.assert_close(y[:1], y0, rtol=1e-4, atol=1e-3)


def test_cpu_instance_norm_matches_torch_forward_and_backward():
    torch.manual_seed(0)
    ours, ref = InstanceNorm(6, affine=True), torch.nn.InstanceNorm2d(6, affine=True)
    with torch.no_grad():
        for m in (ours, ref):
            m.weight.copy_(torch.linspace(0.5, 2.0, 6))
            m.bias.copy_(torch.linspace(-1.0, 1.0, 6))
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]
    x = (torch.randn(3, 6, 9, 13) * 40 + 100).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, y_ref = ours(x), ref(x_ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    # channels_last input (what the Stylizer feeds it) gives the same numbers
    torch.testing.assert_close(ours(x.detach().contiguous(memory_format=torch.channels_last)), y_ref.detach(),
                               rtol=1e-5, atol=1e-5)


def test_channels_last_forward_matches_contiguous():
    torch.manual_seed(1)
    model = TransformerNet().eval()
    x = torch.rand(2, 3, 36, 44) * 255
    with torch.inference_mode():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-2)
