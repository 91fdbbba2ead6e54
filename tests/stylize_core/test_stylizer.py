"""Stylizer: mixed sizes, batching, metrics, strength, colour, tiny images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylize_core.checkpoint import checkpoint_bytes, load_style_model
from stylize_core.color import rgb_to_yiq
from stylize_core.loss_meter import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
from stylize_core.bucketing import plan_batches
from stylize_core.stylizer import Stylizer, StylizerConfig
from stylize_core.transformer_net import TransformerNet
from stylize_core.vgg import VGGFeatures


@pytest.fixture(scope="module")
def styles():
    out = {}
    for seed, name in enumerate(["a", "b"]):
        torch.manual_seed(seed)
        style = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        out[name] = load_style_model(name, data=checkpoint_bytes(TransformerNet(), style_image=style))
    return out


@pytest.fixture(scope="module")
def vgg():
    return VGGFeatures("vgg16", DEFAULT_CONTENT_LAYERS + DEFAULT_STYLE_LAYERS, "random:0")


def _images(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]


def test_mixed_sizes_same_size_out_finite_metrics(styles, vgg):
    shapes = [(1, 1), (3, 7), (37, 45), (32, 32), (32, 32), (50, 17)]
    images = _images(shapes)
    stylizer = Stylizer(styles, vgg, StylizerConfig(metrics_short_side=32, max_batch=4))
    results = stylizer.stylize_all(images)
    assert set(results) == {"a", "b"}
    for style, res in results.items():
        assert [r.image.shape for r in res] == [(h, w, 3) for h, w in shapes]
        for r in res:
            assert r.image.dtype == np.uint8
            for v in (r.content_loss, r.style_loss, r.tv_loss, r.stylize_ms, r.metrics_ms):
                assert np.isfinite(v) and v >= 0
    # the two styles are different networks: different outputs
    assert not np.array_equal(results["a"][2].image, results["b"][2].image)


def test_batched_equals_one_by_one(styles):
    images = _images([(32, 40)] * 3, seed=1)
    stylizer = Stylizer(styles, None, StylizerConfig(max_batch=8))
    together = [r.image for r in stylizer.stylize(images, "a")]
    alone = [stylizer.stylize([img], "a")[0].image for img in images]
    for x, y in zip(together, alone):
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1


def test_batches_group_by_size_and_respect_pixel_budget():
    shapes = [(8, 8), (8, 8), (4, 4), (8, 8)]  # both run at the 16x16 minimum network size
    batches = plan_batches(shapes, max_batch=8, max_pixels=10_000, max_pad_fraction=0.0)
    assert sorted(sorted(b.indices) for b in batches) == [[0, 1, 2, 3]]
    shapes = [(32, 32), (32, 32), (20, 20), (32, 32)]
    batches = plan_batches(shapes, max_batch=8, max_pixels=10_000, max_pad_fraction=0.0)
    assert sorted(sorted(b.indices) for b in batches) == [[0, 1, 3], [2]]
    assert all(len(b.indices) <= 2 for b in plan_batches(shapes, max_batch=8, max_pixels=2048, max_pad_fraction=0.0))


def test_strength_and_colour_preservation(styles):
    (img,) = _images([(24, 24)], seed=2)
    zero = Stylizer(styles, None, StylizerConfig(strength=0.0)).stylize([img], "a")[0].image
    np.testing.assert_array_equal(zero, img)
    full = Stylizer(styles, None).stylize([img], "a")[0].image
    half = Stylizer(styles, None, StylizerConfig(strength=0.5)).stylize([img], "a")[0].image
    expected = (img.astype(float) + full.astype(float)) / 2
    assert np.abs(half - expected).max() <= 1.5  # full was clamped before rounding
    kept = Stylizer(styles, None, StylizerConfig(preserve_color=True)).stylize([img], "a")[0].image

    def chroma(x):
        return rgb_to_yiq(torch.from_numpy(x).permute(2, 0, 1)[None].float())[:, 1:]

    assert (chroma(kept) - chroma(img)).abs().mean() < (chroma(full) - chroma(img)).abs().mean()


def test_bare_checkpoint_style_loss_is_nan_unless_style_image_given(vgg):
    torch.manual_seed(5)
    bare = load_style_model("bare", data=checkpoint_bytes(TransformerNet()))
    (img,) = _images([(20, 20)])
    r = Stylizer({"x": bare}, vgg, StylizerConfig(metrics_short_side=32)).stylize([img], "x")[0]
    assert np.isnan(r.style_loss) and np.isfinite(r.content_loss)
    r = Stylizer({"x": bare}, vgg, StylizerConfig(metrics_short_side=32), style_images={"x": img}).stylize([img], "x")[0]
    assert np.isfinite(r.style_loss)


def test_bad_arguments(styles):
    stylizer = Stylizer(styles, None)
    with pytest.raises(KeyError):
        stylizer.stylize(_images([(8, 8)]), "nope")
    with pytest.raises(ValueError):
        stylizer.stylize([np.zeros((8, 8), np.uint8)], "a")
    with pytest.raises(ValueError):
        Stylizer({}, None)
    with pytest.raises(ValueError, match="lacks layers"):
        Stylizer(styles, VGGFeatures("vgg16", ["relu1_2"], "random:0"))


def test_inference_mode_and_cpu_device(styles):
    stylizer = Stylizer(styles, None, StylizerConfig(device="auto"))
    assert stylizer.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_channels_last_close_to_fp32(styles):
    images = _images([(64, 64)] * 2)
    fast = Stylizer(styles, None, StylizerConfig(device="cuda")).stylize(images, "a")
    exact = Stylizer(styles, None, StylizerConfig(device="cuda", bf16=False, channels_last=False)).stylize(images, "a")
    for f, e in zip(fast, exact):
        assert np.abs(f.image.astype(int) - e.image.astype(int)).mean() < 4
