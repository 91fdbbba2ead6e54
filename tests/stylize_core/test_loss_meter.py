"""LossMeter: never upscales, content features reusable across styles, same losses either way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylize_core.loss_meter import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, METRICS_MIN_SIDE, LossMeter
from stylize_core.vgg import VGGFeatures


@pytest.fixture(scope="module")
def vgg():
    return VGGFeatures("vgg16", DEFAULT_CONTENT_LAYERS + DEFAULT_STYLE_LAYERS, "random:0")


@pytest.fixture(scope="module")
def meter(vgg):
    style = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    return LossMeter(vgg, {"s": style, "bare": None}, short_side=64, stat_ratio=True)


def _batch(n, h, w, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, h, w)).astype(np.float32))


def test_metric_size_never_upscales(meter):
    assert meter.metric_size(48, 64) == (48, 64)  # a thumbnail is measured at its own size
    assert meter.metric_size(64, 64) == (64, 64)
    assert meter.metric_size(128, 256) == (64, 128)  # larger images come down to the short side
    assert meter.metric_size(300, 100) == (192, 64)
    assert meter.metric_size(4, 8) == (METRICS_MIN_SIDE, 2 * METRICS_MIN_SIDE)  # VGG's pools need this much


def test_vgg_sees_thumbnails_at_their_own_size(meter):
    seen = []
    handle = meter.vgg.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape[-2:])))
    try:
        meter.measure(_batch(2, 40, 56), _batch(2, 40, 56, seed=1), "s")
        meter.measure(_batch(1, 128, 96), _batch(1, 128, 96, seed=1), "s")
    finally:
        handle.remove()
    assert seen == [(40, 56), (40, 56), (85, 64), (85, 64)]


def test_reused_content_features_give_the_same_losses(meter):
    content, out = _batch(3, 72, 80), _batch(3, 72, 80, seed=2)
    feats = meter.content_features(content)
    calls = []
    handle = meter.vgg.register_forward_pre_hook(lambda mod, args: calls.append(tuple(args[1])))
    try:
        again = [meter.measure(content, out, s, content_feats=feats) for s in ("s", "bare")]
    finally:
        handle.remove()
    # no content pass; each layer asked for once
    assert calls == [tuple(dict.fromkeys(meter.content_layers + DEFAULT_STYLE_LAYERS)), meter.content_layers]
    fresh = meter.measure(content, out, "s")
    for key in ("content_loss", "style_loss", "tv_loss", "style_stat_distance", "style_stat_ratio"):
        np.testing.assert_allclose(again[0][key], fresh[key], rtol=1e-5)
    assert np.isnan(again[1]["style_loss"]).all() and np.isfinite(again[1]["content_loss"]).all()


def test_mixed_sizes_grouped_by_metric_size_in_input_order(meter):
    sizes = [(128, 96), (40, 40), (256, 192), (40, 40)]  # 128x96 and 256x192 share the metric size 85x64
    content = [_batch(1, h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    out = [_batch(1, h, w, seed=10 + i) for i, (h, w) in enumerate(sizes)]
    feats = meter.content_features(content)
    assert sorted(len(idx) for idx, _ in feats.groups) == [2, 2]
    together = meter.measure_tensors(feats, out, "s").tolist()
    for i in range(4):
        alone = meter.measure(content[i], out[i], "s")
        for key in ("content_loss", "style_loss", "tv_loss", "style_stat_distance", "style_stat_ratio"):
            assert together[key][i] == pytest.approx(alone[key][0], rel=1e-4)
    with pytest.raises(ValueError, match="do not match"):
        meter.measure_tensors(feats, out[:3], "s")
