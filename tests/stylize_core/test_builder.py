"""The one stylizer builder shared by the job's actors and the local CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylize_core.builder import SetupError, StylizerSpec, check_device
from stylize_core.registry import build_stylizer
from stylize_core.checkpoint import save_style_model
from stylize_core.gatys_stylizer import GatysStylizer
from stylize_core.image_io import encode_image
from stylize_core.stylizer import Stylizer
from stylize_core.transformer_net import TransformerNet


def _opener(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "m.pth"
    torch.manual_seed(0)
    save_style_model(TransformerNet(), str(path), style_image=np.full((8, 8, 3), 100, np.uint8), style="m")
    return str(path)


def test_feedforward_build_labels_results(ckpt, tmp_path):
    style_png = tmp_path / "s.png"
    style_png.write_bytes(encode_image(np.zeros((16, 16, 3), np.uint8), "png"))
    built = build_stylizer(StylizerSpec(styles={"m": ckpt}, style_images={"m": str(style_png)}, vgg_weights="random:0",
                                        device="cpu"), _opener)
    assert isinstance(built.stylizer, Stylizer) and built.device_name == "cpu"
    assert built.loss_model == "vgg16/random:0" and len(built.model_sha256["m"]) == 64
    (res,) = built.stylizer.stylize([np.zeros((20, 24, 3), np.uint8)], "m")
    assert res.image.shape == (20, 24, 3) and np.isfinite(res.style_loss)


def test_optimize_only_styles_are_identified_by_their_image(tmp_path):
    style_png = tmp_path / "s.png"
    style_png.write_bytes(encode_image(np.zeros((16, 16, 3), np.uint8), "png"))
    built = build_stylizer(StylizerSpec(styles={}, style_images={"s": str(style_png)}, method="optimize",
                                        vgg="vgg16", vgg_weights="random:0", metrics=False, device="cpu"), _opener)
    assert isinstance(built.stylizer, GatysStylizer) and len(built.model_sha256["s"]) == 64


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (dict(styles={"m": "/nope/m.pth"}), "style 'm': cannot use checkpoint /nope/m.pth: not found; check the URI"),
        (dict(styles={"m": "CKPT"}, vgg_weights="/nope/vgg.pth"), "/nope/vgg.pth"),
        (dict(styles={}, style_images={"s": "/nope/s.png"}, method="optimize"), "style 's': cannot use style image /nope/s.png: not found"),
    ],
)
def test_what_stops_a_build_is_one_line_naming_the_file(ckpt, spec, message):
    spec = {**spec, "styles": {k: ckpt if v == "CKPT" else v for k, v in spec["styles"].items()}}
    with pytest.raises(SetupError) as exc:
        build_stylizer(StylizerSpec(device="cpu", **spec), _opener)
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_missing_cuda_is_a_setup_error():
    with pytest.raises(SetupError, match="CUDA is not available"):
        check_device("cuda")


@pytest.fixture(scope="module")
def multi_ckpt(tmp_path_factory) -> str:
    from stylize_core.checkpoint import checkpoint_bytes
    from stylize_core.transformer_net import NetConfig

    torch.manual_seed(1)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(3)]
    path = tmp_path_factory.mktemp("multi") / "multi.pth"
    path.write_bytes(checkpoint_bytes(TransformerNet(NetConfig(width=0.25, num_styles=3)), style_images=images,
                                      styles=["wave", "ink", "dots"]))
    return str(path)


def test_a_multi_style_checkpoint_needs_a_choice(multi_ckpt):
    with pytest.raises(SetupError, match=r"multi-style network \(0:wave, 1:ink, 2:dots\).*--mix m="):
        build_stylizer(StylizerSpec(styles={"m": multi_ckpt}, metrics=False, device="cpu"), _opener)


def test_blends_are_styles_of_their_own(multi_ckpt):
    spec = dict(styles={"a": multi_ckpt, "b": multi_ckpt, "c": multi_ckpt, "d": multi_ckpt}, vgg_weights="random:0",
                device="cpu")
    mixes = {"a": "ink", "b": 1, "c": {"wave": 1, "ink": 1}, "d": {0: 0.25, 1: 0.75}}
    built = build_stylizer(StylizerSpec(mixes=mixes, **spec), _opener)
    ids = built.model_sha256
    assert ids["a"] == ids["b"]  # the same style by name or index
    assert len({ids["a"], ids["c"], ids["d"]}) == 3  # other weights, another model
    image = np.random.default_rng(1).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    out = built.stylizer.stylize_many([image])
    assert all(np.isfinite(out[s][0].style_loss) for s in "abcd")  # blends have blended Gram targets
    assert all(np.isfinite(out[s][0].style_stat_distance) for s in "abcd")  # and blended statistics (1x1 maps too)
    # an untrained network renders every style alike, so the losses differ by their targets alone
    assert out["a"][0].style_loss == pytest.approx(out["b"][0].style_loss)
    assert out["c"][0].style_loss != pytest.approx(out["a"][0].style_loss)
