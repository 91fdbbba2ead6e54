"""Stylizer: mixed sizes, batching, metrics, strength, colour, tiny images."""

from __future__ import annotations

import time
from importlib import resources

import numpy as np
import pytest
import torch

from stylize_core.checkpoint import checkpoint_bytes, load_style_model
from stylize_core.color import rgb_to_yiq
from stylize_core.loss_meter import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
from stylize_core.bucketing import DEFAULT_MAX_PAD_FRACTION, network_side, plan_batches
from stylize_core.stylizer import Stylizer, StylizerConfig
from stylize_core.run_stats import DeviceClock, ForwardStats
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


def _demo_styles() -> dict:
    """The shipped demo network: its outputs span the range, so comparisons of them can fail (a
    random network's outputs clamp to nearly constant images)."""
    return {"a": load_style_model(DEMO)}


def test_batched_equals_one_by_one():
    images = _images([(32, 40)] * 3, seed=1)
    stylizer = Stylizer(_demo_styles(), None, StylizerConfig(max_batch=8, device="cpu"))
    together = [r.image for r in stylizer.stylize(images, "a")]
    alone = [stylizer.stylize([img], "a")[0].image for img in images]
    for x, y in zip(together, alone):
        assert x.std() > 20 and np.ptp(x) > 120  # a real spread of values, not a clamped constant
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
    seen = []  # whether the style network's forward ran under torch.inference_mode
    stylizer.models["a"].register_forward_hook(lambda module, args, out: seen.append(torch.is_inference_mode_enabled()))
    assert not torch.is_inference_mode_enabled()
    stylizer.stylize(_images([(20, 24)]), "a")
    assert seen and all(seen)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_channels_last_close_to_fp32(styles):
    images = _images([(64, 64)] * 2)
    fast = Stylizer(styles, None, StylizerConfig(device="cuda")).stylize(images, "a")
    exact = Stylizer(styles, None, StylizerConfig(device="cuda", bf16=False, channels_last=False)).stylize(images, "a")
    for f, e in zip(fast, exact):
        assert np.abs(f.image.astype(int) - e.image.astype(int)).mean() < 4


# --- shape buckets, work once per input, timing, stats ---------------------------------------

DEMO = str(resources.files("stylize_core") / "assets" / "demo_mosaic.pth")
# Measured by benchmarks/bench_bucketing.py --short-side 96 (small images, as here; the demo
# checkpoint trained with the texture loss network, whose sharp mosaic moves more than the old
# demo's tint did): padding up to 6 % moves outputs by a mean of 4.5 grey levels, the worst image by
# 7.6 (JPEG q90 of the same output: 3.4). The bounds leave room for other photo crops.
PAD_TOLERANCE_MEAN = 5.0  # over all images
PAD_TOLERANCE_IMAGE = 9.0  # any one image


@pytest.fixture(scope="module")
def demo():
    return {"mosaic": load_style_model(DEMO)}


def _photo_crops(shapes, seed=0):
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    rng = np.random.default_rng(seed)
    out = []
    for k, (h, w) in enumerate(shapes):
        p = photos[k % len(photos)][::3, ::3]  # (100-213 px): whole scenes in small crops
        y, x = rng.integers(0, p.shape[0] - h + 1), rng.integers(0, p.shape[1] - w + 1)
        out.append(np.ascontiguousarray(p[y : y + h, x : x + w]))
    return out


def _smooth_images(shapes, seed=0):
    """Photo-like images without scikit-image (the GPU machine has only torch, numpy and Pillow)."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in shapes:
        coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 5, 7)).astype(np.float32))
        field = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
        img = field.permute(1, 2, 0).numpy() + rng.normal(0, 5, (h, w, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _count_forwards(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape[0]))
    return calls, handle


def test_window_of_64_images_in_8_sizes_runs_in_few_passes_close_to_per_image(demo):
    sizes = [(96, 72), (94, 72), (96, 70), (92, 72), (72, 96), (70, 96), (72, 92), (96, 96)]
    shapes = [sizes[i] for i in np.random.default_rng(3).permutation(np.repeat(np.arange(8), 8))]
    images = _photo_crops(shapes)
    # the CUDA planning limits, on CPU (where the defaults keep batches small and unpadded)
    gpu_like = StylizerConfig(device="cpu", max_batch=64, cpu_max_batch_pixels=64 * 96 * 96,
                              cpu_max_pad_fraction=DEFAULT_MAX_PAD_FRACTION)
    stylizer = Stylizer(demo, None, gpu_like)
    calls, handle = _count_forwards(stylizer.models["mosaic"])
    try:
        batched = stylizer.stylize(images, "mosaic")
    finally:
        handle.remove()
    assert len(calls) <= len(images) // 4 and sum(calls) == len(images)
    stats = stylizer.stats()
    assert stats["forward_calls"] == len(calls) and stats["images"] == 64
    assert stats["images_per_forward_hist"] == {str(k): calls.count(k) for k in sorted(set(calls))}
    assert 0 < stats["pad_fraction"] <= DEFAULT_MAX_PAD_FRACTION and stats["utilisation"] is None
    assert [r.image.shape for r in batched] == [i.shape for i in images]
    alone = Stylizer(demo, None, StylizerConfig(device="cpu", max_batch=1))
    checked = [shapes.index(s) for s in sizes] + [len(shapes) - 1 - shapes[::-1].index(s) for s in sizes]
    diffs = [np.abs(batched[i].image.astype(int) - alone.stylize([images[i]], "mosaic")[0].image).mean() for i in checked]
    assert np.mean(diffs) <= PAD_TOLERANCE_MEAN and max(diffs) <= PAD_TOLERANCE_IMAGE, diffs


def test_cpu_defaults_keep_small_unpadded_batches(demo):
    stylizer = Stylizer(demo, None, StylizerConfig(device="cpu", max_batch=64))
    shapes = [(96, 72), (92, 72)] * 8 + [(256, 256)] * 4
    plan = stylizer.plan(shapes)
    assert sorted(i for b in plan for i in b.indices) == list(range(len(shapes)))
    for b in plan:
        nets = {(network_side(h), network_side(w)) for h, w in (shapes[i] for i in b.indices)}
        assert nets == {b.shape}  # no padding beyond each image's own multiple of 4
        assert len(b.indices) == 1 or len(b.indices) * b.shape[0] * b.shape[1] <= StylizerConfig.cpu_max_batch_pixels


def test_inputs_uploaded_and_content_measured_once_for_all_styles(styles, vgg, monkeypatch):
    three = dict(styles, c=styles["a"])
    # two forward batches (two shapes) whose images share one metric size (32x40)
    images = _images([(64, 80), (64, 80), (32, 40)], seed=4)
    stylizer = Stylizer(three, vgg, StylizerConfig(metrics_short_side=32, max_batch=8, metrics_ratio=True))
    uploads = []
    real_upload = stylizer._upload
    monkeypatch.setattr(stylizer, "_upload", lambda *a: uploads.append(1) or real_upload(*a))
    vgg_calls = []
    handle = stylizer.meter.vgg.register_forward_pre_hook(lambda mod, args: vgg_calls.append(tuple(args[1])))
    try:
        together = stylizer.stylize_all(images)
    finally:
        handle.remove()
    n_batches = len(stylizer.plan([i.shape[:2] for i in images]))
    assert n_batches == 2 and len(uploads) == n_batches  # not once per style
    # metrics of the whole call: one content pass, one pass per style, across both forward batches
    # (with metrics_ratio the content pass goes on to the style layers: their statistics are
    # style_stat_ratio's denominator; without it, it stops at the content layers)
    meter = stylizer.meter
    assert meter.input_stats and vgg_calls[0] == tuple(dict.fromkeys(meter.content_layers + meter.style_layers))
    plain = Stylizer(three, vgg, StylizerConfig(metrics_short_side=32, max_batch=8)).meter
    assert not plain.input_stats
    assert len(vgg_calls) == 1 + len(three)
    for name in three:  # the same results as one style at a time
        for t, s in zip(together[name], stylizer.stylize(images, name)):
            np.testing.assert_array_equal(t.image, s.image)
            assert t.content_loss == pytest.approx(s.content_loss, rel=1e-5)
            assert t.style_loss == pytest.approx(s.style_loss, rel=1e-5) and t.measured
            assert t.style_stat_ratio == pytest.approx(s.style_stat_ratio, rel=1e-5) and t.style_stat_distance > 0


def test_measure_flags_skip_metrics_per_image(styles, vgg):
    images = _images([(24, 24)] * 3, seed=5)
    stylizer = Stylizer(styles, vgg, StylizerConfig(metrics_short_side=32))
    full = stylizer.stylize_many(images, ["a"])["a"]
    part = stylizer.stylize_many(images, ["a"], measure=[True, False, True])["a"]
    assert [r.measured for r in part] == [True, False, True]
    assert np.isnan(part[1].content_loss) and part[1].metrics_ms == 0.0
    for i in (0, 2):
        assert part[i].content_loss == pytest.approx(full[i].content_loss, rel=1e-5)
    np.testing.assert_array_equal(part[1].image, full[1].image)
    with pytest.raises(ValueError):
        stylizer.stylize_many(images, ["a"], measure=[True])
    assert stylizer.stylize_many([], ["a"]) == {"a": []}


def test_cpu_path_never_touches_cuda_timing(styles, vgg, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("CUDA timing used on CPU")

    monkeypatch.setattr(torch.cuda, "Event", boom)
    monkeypatch.setattr(torch.cuda, "synchronize", boom)
    res = Stylizer(styles, vgg, StylizerConfig(device="cpu", metrics_short_side=32)).stylize(_images([(20, 28)]), "a")[0]
    assert res.stylize_ms > 0 and res.metrics_ms > 0


class _FakeEvent:
    """Stands in for torch.cuda.Event: the clock's CUDA branch, exercised without a GPU."""

    log: list[str] = []

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.t = None

    def record(self):
        self.t = time.perf_counter()
        self.log.append("record")

    def synchronize(self):
        self.log.append("synchronize")

    def elapsed_time(self, end):
        assert self.t is not None and end.t is not None
        return (end.t - self.t) * 1000


def test_cuda_clock_records_events_and_reads_them_after_one_wait(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    _FakeEvent.log = []
    clock = DeviceClock(torch.device("cuda"))
    a = clock.mark()
    time.sleep(0.01)
    b = clock.mark()
    clock.wait(b)
    assert _FakeEvent.log == ["record", "record", "synchronize"]
    assert clock.elapsed_ms(a, b) >= 10
    stats = ForwardStats(torch.device("cuda"))
    stats.call_started()
    stats.record_forward(8, 8 * 90, 8 * 100)
    stats.record_busy(5.0)
    time.sleep(0.01)
    stats.call_ended()
    d = stats.as_dict()
    assert d["busy_s"] == pytest.approx(0.005) and 0 < d["utilisation"] < 1
    assert d["images_per_forward_mean"] == 8 and d["pad_fraction"] == pytest.approx(0.1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("channels_last", [True, False])
def test_cuda_buckets_pinned_bf16_close_to_cpu(demo, channels_last):
    sizes = [(96, 72), (94, 72), (96, 70), (72, 96), (96, 96)]
    images = _smooth_images(sizes * 4)
    gpu = Stylizer(demo, None, StylizerConfig(device="cuda", max_batch=64, channels_last=channels_last))
    assert gpu._host_buffer((16,)).is_pinned()
    fast = gpu.stylize_all(images)["mosaic"]
    stats = gpu.stats()
    assert stats["forward_calls"] < len(images) and 0 < stats["utilisation"] <= 1 and stats["busy_s"] > 0
    cpu = Stylizer(demo, None, StylizerConfig(device="cpu", max_batch=1))
    for img, f in zip(images, fast):
        ref = cpu.stylize([img], "mosaic")[0].image
        # bf16 plus bucket padding against float32 alone
        assert np.abs(f.image.astype(int) - ref.astype(int)).mean() < PAD_TOLERANCE_IMAGE + 4
        assert f.stylize_ms > 0


def test_window_metrics_map_back_to_their_images_across_batches(styles, vgg):
    shapes = [(24, 24), (32, 40), (24, 24), (40, 32), (32, 40)]
    images = _images(shapes, seed=6)
    mask = [True, False, True, True, True]
    stylizer = Stylizer(styles, vgg, StylizerConfig(metrics_short_side=32))
    assert len(stylizer.plan(shapes)) == 3
    window = stylizer.stylize_many(images, measure=mask)
    for name, results in window.items():
        for img, flag, res in zip(images, mask, results):
            alone = stylizer.stylize_many([img], [name])[name][0]
            np.testing.assert_array_equal(res.image, alone.image)
            assert res.measured == flag
            if flag:
                for key in ("content_loss", "style_loss", "tv_loss"):
                    assert getattr(res, key) == pytest.approx(getattr(alone, key), rel=1e-4)
