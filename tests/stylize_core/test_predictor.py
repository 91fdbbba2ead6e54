"""The style predictor (Ghiasi et al. 2017): network, baking, alpha and blends, the one-file format,
its loader's errors, the style identity and the registry's method. Random weights, with the
transformer's last conv and the predictor's head rescaled so outputs span the grey range and
styles differ (asserted, so no comparison here passes on constant images)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from stylize_core.builder import SetupError, StylizerSpec
from stylize_core.image_io import encode_image
from stylize_core.predictor import PredictorConfig, StylePredictorModel, norm_layers, style_tensor
from stylize_core.predictor_checkpoint import predictor_checkpoint_bytes, predictor_from_bytes
from stylize_core.predictor_identity import predictor_model_id, predictor_style_id
from stylize_core.registry import METHODS, build_stylizer
from stylize_core.transformer_net import NetConfig, TransformerNet


def _image(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3)).astype(np.float32)
    big = np.kron(small, np.ones((4, 4, 1)))[:h, :w]  # blocky structure so features vary
    return np.clip(big + rng.normal(0, 20, big.shape), 0, 255).astype(np.uint8)


def _style(seed: int, h: int = 40, w: int = 40) -> np.ndarray:
    """A style image whose colour statistics depend on ``seed`` (per-channel gain and offset)."""
    rng = np.random.default_rng(seed + 1000)
    gain, offset = rng.uniform(0.2, 1.0, 3), rng.uniform(0, 120, 3)
    return np.clip(_image(seed, h, w) * gain + offset, 0, 255).astype(np.uint8)


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float()


def spanning_model(net: NetConfig | None = None, seed: int = 0) -> StylePredictorModel:
    """A random model whose predicted norm parameters differ clearly between styles and whose output
    on the test image has, per channel, mean 128 and std 50."""
    torch.manual_seed(seed)
    model = StylePredictorModel(PredictorConfig(net or NetConfig(width=0.25), embedding=16, style_size=32))
    with torch.no_grad():
        model.predictor.head.weight.mul_(100.0)  # undo the near-zero init: styles must matter
        model.predictor.bottleneck.weight.mul_(10.0)
        model.content_embedding.copy_(torch.randn(16))
        y = model(_tensor(_image(3, 32, 32)), style_tensor(_style(4), 32))
        last = model.transformer.deconv3.conv2d
        k = 50.0 / y.std(dim=(0, 2, 3))  # (3,)
        last.weight.mul_(k.view(3, 1, 1, 1))
        last.bias.copy_(128 - (y.mean(dim=(0, 2, 3)) - last.bias) * k)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> StylePredictorModel:
    return spanning_model()


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    (d / "predictor.pth").write_bytes(predictor_checkpoint_bytes(model, {"note": "test"}))
    for i, seed in enumerate((10, 11)):
        (d / f"style{i}.png").write_bytes(encode_image(_style(seed, 48, 40), "PNG"))
    return d


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _spec(d, predictor=None, **kw) -> StylizerSpec:
    kw.setdefault("style_images", {"a": str(d / "style0.png"), "b": str(d / "style1.png")})
    return StylizerSpec(styles={}, method="predict", predictor=str(d / "predictor.pth") if predictor is None else predictor,
                        metrics=False, device="cpu", **kw)


# ---------------------------------------------------------------- the network


@pytest.mark.parametrize("net", [NetConfig(), NetConfig(width=0.25), NetConfig(width=0.5, blocks=3, depthwise=True)])
def test_one_gamma_and_beta_per_norm_channel_of_any_size(net):
    model = StylePredictorModel(PredictorConfig(net, embedding=8, style_size=32))
    layers = norm_layers(model.transformer)
    assert len(layers) == 5 + 2 * net.blocks
    total = 2 * sum(c for _, c in layers)
    assert model.predictor.head.out_features == total
    params = model.predictor.params(model.predictor.embed(style_tensor(_image(1, 40, 40), 32)))  # (1, P)
    assert params.shape == (1, total)
    baked = model.bake(model.embed_image(_image(1, 40, 40)))
    assert isinstance(baked, TransformerNet) and baked.arch == net  # a plain single-style network


def test_baked_network_equals_the_training_forward(model):
    style, content = _style(5), _tensor(_image(6, 32, 32))
    with torch.no_grad():
        direct = model(content, style_tensor(style, model.config.style_size))
        baked = model.bake(model.embed_image(style))(content)
    assert direct.std() > 20  # not a constant image
    torch.testing.assert_close(baked, direct, atol=1e-3, rtol=1e-4)


def test_styles_give_different_outputs(model):
    content = _tensor(_image(6, 32, 32))
    with torch.no_grad():
        a = model.bake(model.embed_image(_style(5)))(content)
        b = model.bake(model.embed_image(_style(7)))(content)
    assert (a - b).abs().mean() > 5  # grey levels


def test_blend_of_embeddings_is_the_blend_of_predicted_parameters(model):
    ea, eb = model.embed_image(_style(5)), model.embed_image(_style(7))
    with torch.no_grad():
        mixed = model.predictor.params(model.mix([(ea, 0.25), (eb, 0.75)])[None])[0]
        pa, pb = (model.predictor.params(e[None])[0] for e in (ea, eb))
    torch.testing.assert_close(mixed, 0.25 * pa + 0.75 * pb, atol=1e-4, rtol=1e-4)


def test_alpha_interpolates_from_the_content_embedding(model):
    e = model.embed_image(_style(5))
    torch.testing.assert_close(model.mix([(e, 1.0)], 0.0), model.content_embedding)
    torch.testing.assert_close(model.mix([(e, 1.0)], 1.0), e)
    torch.testing.assert_close(model.mix([(e, 1.0)], 0.3), 0.3 * e + 0.7 * model.content_embedding)
    with pytest.raises(ValueError, match="alpha"):
        model.mix([(e, 1.0)], 1.5)


# ---------------------------------------------------------------- the one file


@pytest.mark.parametrize("half", [False, True])
def test_checkpoint_round_trip(model, half):
    data = predictor_checkpoint_bytes(model, {"training": "{}"}, half=half)
    loaded = predictor_from_bytes(data, "mem")
    assert loaded.model_id == predictor_model_id(data) and loaded.metadata == {"training": "{}"}
    assert loaded.model.config == model.config
    content, style = _tensor(_image(6, 32, 32)), _style(5)
    with torch.no_grad():
        want = model.bake(model.embed_image(style))(content)
        got = loaded.model.bake(loaded.model.embed_image(style))(content)
    torch.testing.assert_close(got, want, atol=2.0 if half else 1e-3, rtol=0)


def _other_checkpoint(kind: str, model: StylePredictorModel) -> bytes:
    buf = io.BytesIO()
    if kind == "transformer":
        torch.save(TransformerNet().state_dict(), buf)
        return buf.getvalue()
    obj = torch.load(io.BytesIO(predictor_checkpoint_bytes(model)), weights_only=True)
    if kind == "version":
        obj["version"] = 9
    elif kind == "shape":
        obj["predictor"]["head.bias"] = obj["predictor"]["head.bias"][:-1]
    elif kind == "config":
        obj["config"]["embedding"] = 17
    elif kind == "unknown":
        obj["config"]["colour"] = 1
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("content, expect", [
    (b"", "empty"),
    (b"<!DOCTYPE html><html>", "HTML"),
    (None, "not found"),
    ("transformer", "not a style-predictor checkpoint"),
    ("version", "version 9"),
    ("shape", "head.bias has shape"),
    ("config", "predictor bottleneck.weight has shape"),
    ("unknown", "its config is unusable (unknown predictor config keys: ['colour'])"),
])
def test_bad_files_are_one_line_setup_errors(files, model, tmp_path, content, expect):
    bad = tmp_path / "bad.pth"
    if isinstance(content, str):
        bad.write_bytes(_other_checkpoint(content, model))
    elif content is not None:
        bad.write_bytes(content)
    with pytest.raises(SetupError) as info:
        build_stylizer(_spec(files, str(bad)), read)
    message = str(info.value)
    assert "\n" not in message and expect in message and str(bad) in message and "style predictor" in message


def test_unsafe_pickle_is_refused(files, tmp_path):
    bad = tmp_path / "evil.pth"
    buf = io.BytesIO()
    import datetime

    torch.save({"format": "stylize.style_predictor", "x": datetime.date(2020, 1, 1)}, buf)  # not a tensor file
    bad.write_bytes(buf.getvalue())
    with pytest.raises(SetupError, match="weights_only"):
        build_stylizer(_spec(files, str(bad)), read)


# ---------------------------------------------------------------- identity


def test_style_id_changes_with_every_part():
    base = predictor_style_id("m", 1.0, [("x", 1.0)])
    assert base == predictor_style_id("m", 1.0, [("x", 1.0)])
    others = {predictor_style_id("n", 1.0, [("x", 1.0)]), predictor_style_id("m", 0.5, [("x", 1.0)]),
              predictor_style_id("m", 1.0, [("y", 1.0)]), predictor_style_id("m", 1.0, [("x", 0.5), ("y", 0.5)]),
              predictor_style_id("m", 1.0, [("x", 0.25), ("y", 0.75)])}
    assert len(others) == 5 and base not in others


def test_identity_module_is_torch_free():
    import subprocess
    import sys

    code = ("import sys; import stylize_core.predictor_identity, stylize_core.demo_assets; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------- the registry's method


def test_registry_builds_predict_encoding_each_style_image_once(files, model):
    assert "predict" in METHODS
    built = build_stylizer(_spec(files, mixes={"ab": {"a": 1, "b": 3}}), read)
    stylizer = built.stylizer
    assert stylizer.style_names == ["a", "b", "ab"] and stylizer.style_encodes == 2
    images = [_image(1, 32, 32), _image(2, 28, 36)]  # a size that is no multiple of 4 too
    for _ in range(2):
        out = stylizer.stylize_many(images)
    assert stylizer.style_encodes == 2  # however many images and calls
    assert [r.image.shape for r in out["a"]] == [(32, 32, 3), (28, 36, 3)]
    a, b, ab = (out[s][0].image.astype(float) for s in ("a", "b", "ab"))
    assert a.std() > 20 and np.abs(a - b).mean() > 5  # spans the range; styles differ
    # the blend is the network of the blended embedding, as the model makes it
    loaded = predictor_from_bytes(read(files / "predictor.pth"))
    from stylize_core.image_io import decode_image

    ea, eb = (loaded.model.embed_image(decode_image(read(files / f"style{i}.png"))) for i in (0, 1))
    with torch.no_grad():
        want = loaded.model.bake(loaded.model.mix([(ea, 0.25), (eb, 0.75)]))(_tensor(images[0]))
    assert np.abs(ab - want[0].permute(1, 2, 0).clamp(0, 255).numpy()).max() <= 1.0
    digests = {built.model_sha256[s] for s in ("a", "b", "ab")}
    assert len(digests) == 3
    assert built.arch("a") == "width=0.25,blocks=5,depthwise=False,num_styles=1"


def test_alpha_changes_the_id_and_the_output(files):
    full = build_stylizer(_spec(files), read)
    half = build_stylizer(_spec(files, alpha=0.5), read)
    assert full.model_sha256["a"] != half.model_sha256["a"]
    x = [_image(1, 32, 32)]
    diff = np.abs(full.stylizer.stylize(x, "a")[0].image.astype(float) - half.stylizer.stylize(x, "a")[0].image)
    assert diff.mean() > 2


@pytest.mark.parametrize("kw, expect", [
    ({"styles": {"s": "x.pth"}}, "takes style images"),
    ({"style_images": {}}, "needs at least one --style-image"),
    ({"mixes": {"m": {"zz": 1}}}, "--mix m"),
])
def test_setup_errors(files, kw, expect):
    styles = kw.pop("styles", {})
    spec = _spec(files, **kw)
    with pytest.raises(SetupError, match=expect):
        if styles:
            from stylize_core.checkpoint import StyleModel

            METHODS["predict"].build(spec, read, torch.device("cpu"), {"s": StyleModel(TransformerNet())}, {})
        else:
            build_stylizer(spec, read)


def test_missing_style_image_is_a_setup_error(files):
    spec = _spec(files, style_images={"a": str(files / "nope.png")})
    with pytest.raises(SetupError, match="style 'a'.*not found"):
        build_stylizer(spec, read)


# ---------------------------------------------------------------- training


def test_trainer_steps_saves_and_resumes():
    from stylize_core.predictor_training import PredictorTrainConfig, PredictorTrainer

    config = PredictorTrainConfig(steps=2, image_size=32, batch_size=2, embedding=8, style_size=32, vgg="texture:1",
                                  style_layers=("o0k1", "o0k3"))
    content = [_image(1, 48, 40), _image(2, 40, 48)]
    styles = {"a": _style(5), "b": _style(7)}
    trainer = PredictorTrainer(config, content, styles)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    losses = [trainer.step() for _ in range(2)]
    assert all(np.isfinite(v) for r in losses for v in r.values()) and trainer.steps_done == 2
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k != "content_embedding")
    assert not torch.equal(after["content_embedding"], before["content_embedding"])  # follows the content
    state = trainer.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    resumed = PredictorTrainer(config, content, styles)
    resumed.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert resumed.steps_done == 2 and [r["step"] for r in resumed.history] == [1, 2]
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, after[k])
    resumed.step()
    assert resumed.history[-1]["step"] == 3
