"""Regions styles built by the registry for every method: per-region AdaIN, spatial conditional norm for
one network's styles (multi-style checkpoints, the predictor), blended outputs otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from region_samples import save_two_style_network, two_styles  # tests/region_samples.py
from stylize_core import masks
from stylize_core.builder import SetupError, StylizerSpec
from stylize_core.demo_assets import demo_style_network
from stylize_core.region_identity import region_style_id
from stylize_core.registry import build_stylizer

H, W = 90, 126  # not multiples of 4 or 8: the networks' padding and cropping are exercised


def _read(uri: str) -> bytes:
    with open(uri, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def content() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[100:100 + 2 * H:2, 60:60 + 2 * W:2])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("regions")
    out = {"multi": str(root / "multi.pth")}
    save_two_style_network(out["multi"])
    for name, image in two_styles().items():
        out[name] = str(root / f"{name}.png")
        Image.fromarray(image).save(out[name])
    return out


def _labels(left: int = 1, right: int = 2) -> np.ndarray:
    labels = np.full((H, W), right, np.int32)
    labels[:, : W // 2] = left
    return labels


def _spec(**kw) -> StylizerSpec:
    return StylizerSpec(**{"styles": {}, "metrics": False, "device": "cpu", **kw})


def _check_cores(out: np.ndarray, a: np.ndarray, b: np.ndarray, core: int = 16, bound: float = 0.35) -> None:
    left, right = slice(0, W // 2 - core), slice(W // 2 + core, W)
    for side, own, other in ((left, a, b), (right, b, a)):
        near = np.abs(out[:, side].astype(float) - own[:, side]).mean()
        far = np.abs(out[:, side].astype(float) - other[:, side]).mean()
        assert far > 15 and near < bound * far, (near, far)


def _renders_in_float(built, name: str, content: np.ndarray, weights: np.ndarray, out: np.ndarray,
                      rounded: float = 0.5) -> None:
    """A float32 input (a 16-bit file's) renders in float and comes back float32: the same pixels as
    uint8 gave ``out``, its rounding (``rounded``: 1 where the uint8 path rounds the parts' outputs too)."""
    got = built.regions.render(content.astype(np.float32), weights, name).image
    assert got.dtype == np.float32 and got.shape == out.shape
    assert np.abs(got - out).max() <= rounded + 1e-3 and np.abs(got - np.rint(got)).mean() > 0.05  # unrounded


def test_a_multi_style_checkpoints_selections_render_in_one_pass(files, content):
    built = build_stylizer(_spec(styles={"a": files["multi"], "b": files["multi"]}, mixes={"a": 0, "b": 1},
                                 regions={"ab": ("a", "b")}), _read)
    region = built.regions.styles["ab"]
    assert region.kind == "spatial"
    assert built.model_sha256["ab"] == region_style_id("feedforward", [built.model_sha256["a"], built.model_sha256["b"]])
    out = built.regions.render(content, masks.label_weights(_labels(), 2), "ab").image
    plain = built.stylizer.stylize_many([content], ["a", "b"])
    a, b = plain["a"][0].image, plain["b"][0].image
    assert out.shape == content.shape and out.std() > 20
    _check_cores(out, a, b)
    _renders_in_float(built, "ab", content, masks.label_weights(_labels(), 2), out)
    # label 0 is the input, bit for bit
    zero = built.regions.render(content, masks.label_weights(_labels(0, 1), 2), "ab").image
    assert np.array_equal(zero[:, : W // 2], content[:, : W // 2])
    # feathered: farther than the band from the border, the input within 2 grey levels and style a's look
    soft = built.regions.render(content, masks.label_weights(_labels(0, 1), 2, px=8), "ab").image.astype(int)
    assert np.abs(soft[:, : W // 2 - 8] - content[:, : W // 2 - 8]).max() <= 2
    assert np.abs(soft[:, W // 2 + 8:] - a[:, W // 2 + 8:]).mean() < 0.35 * np.abs(soft[:, W // 2 + 8:]
                                                                                   - content[:, W // 2 + 8:]).mean()
    # one style everywhere: that style's own render
    whole = built.regions.render(content, masks.label_weights(np.ones((H, W), np.int32), 2), "ab").image
    assert np.abs(whole.astype(int) - a.astype(int)).max() <= 1


def test_networks_from_separate_checkpoints_are_blended(content):
    built = build_stylizer(_spec(styles={"full": demo_style_network(), "slim": demo_style_network(slim=True)},
                                 regions={"both": ("full", "slim")}), _read)
    assert built.regions.styles["both"].kind == "blend"
    labels = _labels()
    out = built.regions.render(content, masks.label_weights(labels, 2, px=6), "both").image
    plain = built.stylizer.stylize_many([content], ["full", "slim"])
    expected = masks.composite_labels(content, [plain["full"][0].image, plain["slim"][0].image], labels, 6)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1 and out.std() > 20
    _renders_in_float(built, "both", content, masks.label_weights(labels, 2, px=6), out, rounded=1.0)


def test_adain_regions_use_per_region_statistics(files, content):
    built = build_stylizer(_spec(method="adain", style_images={"a": files["a"], "b": files["b"]},
                                 regions={"ab": ("a", "b"), "ba": ("b", "a")}), _read)
    assert built.regions.styles["ab"].kind == "adain"
    assert built.model_sha256["ab"] != built.model_sha256["ba"]  # the order of the parts is the id's too
    out = built.regions.render(content, masks.label_weights(_labels(), 2), "ab").image
    plain = built.stylizer.stylize_many([content], ["a", "b"])
    _check_cores(out, plain["a"][0].image, plain["b"][0].image, bound=0.6)
    _renders_in_float(built, "ab", content, masks.label_weights(_labels(), 2), out)


def test_predicted_styles_render_by_spatial_norm(files, content):
    built = build_stylizer(_spec(method="predict", style_images={"a": files["a"], "b": files["b"]},
                                 regions={"ab": ("a", "b")}), _read)
    assert built.regions.styles["ab"].kind == "spatial"
    out = built.regions.render(content, masks.label_weights(_labels(), 2), "ab").image
    plain = built.stylizer.stylize_many([content], ["a", "b"])
    _check_cores(out, plain["a"][0].image, plain["b"][0].image)


def test_parts_must_be_styles_of_the_run(files):
    with pytest.raises(SetupError, match=r"--regions ab: \['c'\] name no style"):
        build_stylizer(_spec(method="adain", style_images={"a": files["a"]}, regions={"ab": ("a", "c")}), _read)
    with pytest.raises(SetupError, match="taken by a style"):
        build_stylizer(_spec(method="adain", style_images={"a": files["a"]}, regions={"a": ("a",)}), _read)


def test_gatys_regions_optimise_guided_grams(files, content):
    from stylize_core.gatys import GatysConfig

    gatys = GatysConfig(style_layers=("relu1_1", "relu2_1"), content_layers=("relu2_1",), optimizer="adam", steps=4,
                        lr=10.0, pyramid_levels=1)
    built = build_stylizer(_spec(method="optimize", style_images={"a": files["a"], "b": files["b"]}, vgg="vgg19",
                                 vgg_weights="random:0", gatys=gatys, regions={"ab": ("a", "b")}), _read)
    assert built.regions.styles["ab"].kind == "guided"
    out = built.regions.render(content, masks.label_weights(_labels(0, 1), 2), "ab").image
    assert np.array_equal(out[:, : W // 2], content[:, : W // 2])  # label 0: the input
    assert np.abs(out[:, W // 2:].astype(int) - content[:, W // 2:]).mean() > 2  # label 1 optimised
    _renders_in_float(built, "ab", content, masks.label_weights(_labels(0, 1), 2), out)
