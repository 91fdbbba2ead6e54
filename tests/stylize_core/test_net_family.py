"""Network sizes and multi-style networks: checkpoint and ONNX round-trips, blending, model ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylize_core.checkpoint import StyleModelError, checkpoint_bytes, examples_state_dict, load_style_model
from stylize_core.losses import blended_style_grams, style_grams
from stylize_core.onnx_export import onnx_bytes
from stylize_core.style_mix import canonical_mix, model_id, normalize_weights
from stylize_core.transformer_net import ConditionalInstanceNorm, NetConfig, TransformerNet

ARCHS = {
    "default": NetConfig(),
    "half-width": NetConfig(width=0.5),
    "slim-3-blocks": NetConfig(width=0.25, blocks=3),
    "slim-depthwise": NetConfig(width=0.25, depthwise=True),
    "multi-style": NetConfig(width=0.25, num_styles=3),
}


def _net(arch: NetConfig, seed: int = 0) -> TransformerNet:
    torch.manual_seed(seed)
    net = TransformerNet(arch)
    with torch.no_grad():  # give the norms distinct per-style values (init is ones/zeros for all)
        for m in net.modules():
            if isinstance(m, ConditionalInstanceNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-1.0, 1.0)
    return net.eval()


def _style_images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (24 + 4 * i, 20, 3), dtype=np.uint8) for i in range(n)]


def _data(net: TransformerNet) -> bytes:
    if net.arch.multi_style:
        names = [f"s{i}" for i in range(net.arch.num_styles)]
        return checkpoint_bytes(net, style_images=_style_images(len(names)), styles=names)
    return checkpoint_bytes(net, style_image=_style_images(1)[0], style="one")


def test_default_is_still_the_pytorch_examples_layout() -> None:
    net = TransformerNet()
    assert net.arch == NetConfig() and net.arch.is_examples_layout
    assert len(net.state_dict()) == 62 and sum(p.numel() for p in net.parameters()) == 1_679_235
    TransformerNet().load_state_dict(examples_state_dict(net), strict=True)


def test_sizes_change_parameters_as_configured() -> None:
    slim = TransformerNet(NetConfig(width=0.25, blocks=3))
    assert slim.arch.channels == (8, 16, 32) and slim.conv3.conv2d.weight.shape == (32, 16, 3, 3)
    assert hasattr(slim, "res3") and not hasattr(slim, "res4")
    dw = TransformerNet(NetConfig(width=0.25, depthwise=True))
    assert dw.res1.conv1.depthwise.weight.shape == (32, 1, 3, 3) and dw.res1.conv1.pointwise.weight.shape == (32, 32, 1, 1)
    multi = TransformerNet(NetConfig(num_styles=4))
    assert multi.in1.weight.shape == (4, 32) and multi.res5.in2.bias.shape == (4, 128)
    with pytest.raises(ValueError, match="invalid network config"):
        NetConfig(width=0)
    with pytest.raises(ValueError, match="unknown network config keys"):
        NetConfig.from_dict({"widht": 1})


@pytest.mark.parametrize("name", list(ARCHS))
def test_checkpoint_and_onnx_round_trip(name: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    net = _net(ARCHS[name])
    loaded = load_style_model(name, data=_data(net))
    assert loaded.arch == net.arch and loaded.multi_style == net.arch.multi_style
    for key, value in net.state_dict().items():
        torch.testing.assert_close(loaded.network.state_dict()[key], value, rtol=0, atol=0)
    session = ort.InferenceSession(onnx_bytes(net, example_size=(32, 32)), providers=["CPUExecutionProvider"])
    weights = torch.tensor([0.2, 0.0, 0.8]) if net.arch.multi_style else None
    for shape in [(1, 3, 32, 32), (2, 3, 48, 64)]:  # two sizes, dynamic batch
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 255
        feeds = {"input": x.numpy()}
        if weights is not None:
            feeds["style_weights"] = (weights * 5).numpy()  # normalised inside the graph
        out = session.run(None, feeds)[0]
        with torch.no_grad():
            ref = net(x, weights) if weights is not None else net(x)
            selected = loaded.select({0: 1, 2: 4}).model(x) if weights is not None else loaded.model(x)
        assert out.shape == shape
        assert np.abs(out - ref.numpy()).max() < 1e-2
        torch.testing.assert_close(selected, ref, rtol=1e-4, atol=1e-2)  # the baked blend == the mix


def test_non_default_sizes_have_no_pytorch_examples_export() -> None:
    with pytest.raises(ValueError, match="only the default layout"):
        examples_state_dict(TransformerNet(NetConfig(width=0.5)))


def test_blend_weights_summing_to_one_give_a_convex_mix_of_norm_parameters() -> None:
    net = _net(NetConfig(width=0.25, blocks=1, num_styles=3))
    names = ("wave", "mosaic", "ink")
    weights = normalize_weights({"wave": 1, "ink": 3}, names)
    assert weights == (0.25, 0.0, 0.75) and sum(weights) == 1.0
    baked = net.bake_style(torch.tensor(weights))
    assert baked.arch == NetConfig(width=0.25, blocks=1)
    for name, module in net.named_modules():
        if isinstance(module, ConditionalInstanceNorm):
            single = baked.get_submodule(name)
            for param in ("weight", "bias"):
                per_style = getattr(module, param).detach()  # (S, C)
                mixed = getattr(single, param).detach()  # (C,)
                torch.testing.assert_close(mixed, 0.25 * per_style[0] + 0.75 * per_style[2])
                # convex: every mixed value lies between the styles' extremes
                assert (mixed >= per_style.min(0).values - 1e-6).all() and (mixed <= per_style.max(0).values + 1e-6).all()
    one_hot = net.bake_style(torch.tensor(normalize_weights(1, names)))
    torch.testing.assert_close(one_hot.in1.weight, net.in1.weight[1])
    x = torch.rand(2, 3, 32, 32) * 255
    with torch.no_grad():  # per-image styles (B, S) in one batch
        both = net(x, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
        torch.testing.assert_close(both[1:], net(x[1:], torch.tensor([0.0, 0.0, 1.0])), rtol=1e-4, atol=1e-3)


def test_selection_errors_and_unselected_multi_style_model() -> None:
    names = ("a", "b")
    for bad, match in [({"a": -1}, ">= 0"), ({"a": 0}, "sum to 0"), ("c", "unknown style"), (2, "out of range")]:
        with pytest.raises(ValueError, match=match):
            normalize_weights(bad, names)
    assert normalize_weights("1", names) == (0.0, 1.0)
    loaded = load_style_model("m.pth", data=_data(_net(NetConfig(width=0.25, blocks=1, num_styles=2))))
    assert loaded.needs_selection and loaded.style_names == ("s0", "s1")
    with pytest.raises(ValueError, match="holds 2 styles"):
        loaded.model(torch.rand(1, 3, 16, 16))
    with pytest.raises(StyleModelError, match="m.pth: unknown style 'zz'"):
        loaded.select("zz")


def test_model_id_is_deterministic_and_changes_with_the_weights() -> None:
    single = load_style_model("one", data=_data(_net(NetConfig(width=0.25, blocks=1))))
    assert single.model_id == single.sha256 and single.name == "one" and single.select(0) is single
    data = _data(_net(NetConfig(width=0.25, blocks=1, num_styles=3)))
    multi = load_style_model("multi", data=data)
    assert multi.model_id == multi.sha256
    blend = multi.select({"s0": 1, "s2": 1})
    again = load_style_model("elsewhere", data=data, style={0: 2, 2: 2})  # same mix, other spelling
    assert blend.model_id == again.model_id != multi.sha256
    assert canonical_mix(blend.weights) == "0:0.500000,2:0.500000" and blend.name == "s0:0.5+s2:0.5"
    assert blend.model_id == model_id(multi.sha256, (0.5, 0.0, 0.5))
    assert multi.select({"s0": 1, "s2": 1.01}).model_id != blend.model_id
    assert multi.select(2).model_id != multi.select(0).model_id and multi.select(2).name == "s2"
    np.testing.assert_array_equal(multi.select(2).style_image, _style_images(3)[2])  # single style: its image
    assert blend.style_image is None and len(blend.style_images) == 3  # a blend: blended_style_grams


def test_blended_style_targets_are_the_same_convex_mix_of_gram_matrices() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3)

    def extractor(x: torch.Tensor) -> dict[str, torch.Tensor]:
        f1 = torch.relu(conv(x / 255))
        return {"a": f1, "b": f1[:, :2] * 2}

    images = _style_images(3)
    per_style = [style_grams(extractor, torch.from_numpy(im).permute(2, 0, 1)[None].float(), ["a", "b"]) for im in images]
    blended = blended_style_grams(extractor, images, [2.0, 0.0, 6.0], ["a", "b"])
    for layer in ("a", "b"):
        torch.testing.assert_close(blended[layer], 0.25 * per_style[0][layer] + 0.75 * per_style[2][layer])
    one_hot = blended_style_grams(extractor, images, [0, 1, 0], ["a", "b"])
    torch.testing.assert_close(one_hot["a"], per_style[1]["a"])
    with pytest.raises(ValueError, match="positive sum"):
        blended_style_grams(extractor, images, [0, 0, 0], ["a"])


def test_torch_export_fallback_writes_one_self_contained_multi_style_file(monkeypatch) -> None:
    """Where the TorchScript exporter is gone, the torch.export one runs (two inputs, no side file)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from stylize_core.onnx_export import onnx_max_abs_diff

    real = torch.onnx.export

    def without_torchscript(*args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("dynamo") is False:
            raise RuntimeError("no TorchScript exporter in this build")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", without_torchscript)
    net = _net(NetConfig(width=0.25, blocks=1, num_styles=2))
    data = onnx_bytes(net, example_size=(32, 32))
    diff = onnx_max_abs_diff(net, data, size=(48, 64), style_weights=[3.0, 1.0])
    assert diff is not None and diff < 1e-2
