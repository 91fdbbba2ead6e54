"""The feature-statistics distance (stylize_core.losses.feature_stats / stats_distance) and the loss
meter's columns built on it: style_stat_distance (output vs style image) and style_stat_ratio (that
over the input's distance), from the features the style loss already uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylize_core import adain_demo, losses
from stylize_core import adain_checkpoint as ac
from stylize_core.adain import AdaINStylizer
from stylize_core.demo_assets import demo_adain
from stylize_core.loss_meter import LossMeter
from stylize_core.loss_network import build_loss_network
from stylize_core.losses import feature_stats, image_to_tensor, stats_distance
from stylize_core.style_encoding import GramTarget


def _numpy_distance(a: list[np.ndarray], b: list[np.ndarray], eps: float = 1e-5) -> np.ndarray:
    """Independent reference: per layer, RMS difference of channel means plus that of channel stds
    (sqrt(unbiased variance + eps)), summed over layers; (B, C, H, W) float64 features in, (B,) out."""
    total = 0.0
    for fa, fb in zip(a, b, strict=True):
        ra, rb = fa.reshape(*fa.shape[:2], -1), fb.reshape(*fb.shape[:2], -1)
        ma, mb = ra.mean(2), rb.mean(2)
        sa, sb = np.sqrt(ra.var(2, ddof=1) + eps), np.sqrt(rb.var(2, ddof=1) + eps)
        total = total + np.sqrt(((ma - mb) ** 2).mean(1)) + np.sqrt(((sa - sb) ** 2).mean(1))
    return total


def test_the_definition_matches_an_independent_numpy_computation():
    rng = np.random.default_rng(0)
    a = [rng.normal(0, 1, (3, 4, 5, 6)), rng.gamma(2.0, 1.0, (3, 8, 3, 2))]
    b = [rng.normal(0.5, 2, (3, 4, 7, 3)), rng.gamma(1.0, 3.0, (3, 8, 4, 4))]
    got = stats_distance(feature_stats([torch.from_numpy(x).float() for x in a]),
                         feature_stats([torch.from_numpy(x).float() for x in b]))
    want = _numpy_distance(a, b)
    assert got.shape == (3,) and np.allclose(got.numpy(), want, rtol=1e-5)
    assert np.ptp(want) > 0.05 * want.mean()  # three images, three different distances
    one = feature_stats([torch.from_numpy(x[:1]).float() for x in b])  # one style's (1, C) stats broadcast
    assert np.allclose(stats_distance(feature_stats([torch.from_numpy(x).float() for x in a]), one).numpy(),
                       _numpy_distance(a, [np.repeat(x[:1], 3, 0) for x in b]), rtol=1e-5)
    # one implementation: the AdaIN demo (and its benchmark) use the metrics' definition
    assert adain_demo.stats_distance is losses.stats_distance and adain_demo.feature_stats is losses.feature_stats


def _images():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:40, 0:56]
    content = np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1).clip(0, 255).astype(np.uint8)
    style = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    other = np.full((36, 44, 3), (200, 40, 90), np.uint8) + rng.integers(0, 30, (36, 44, 3), dtype=np.uint8)
    return content, style, other


@pytest.fixture(scope="module")
def net():
    return build_loss_network("texture", "random:0")


def test_the_meters_columns_are_the_distance_of_the_same_features(net):
    content, style, other = _images()
    meter = LossMeter(net, {"s": style, "none": None}, short_side=64, device="cpu", channels_last=False,
                      stat_ratio=True)
    outputs = [content, np.ascontiguousarray(255 - content), np.tile(other, (2, 2, 1))[:40, :56]]
    c = torch.cat([image_to_tensor(content)] * 3)
    o = torch.cat([image_to_tensor(x) for x in outputs])
    got = meter.measure(c, o, "s")
    layers = meter.style_layers
    with torch.inference_mode():  # the images are under short_side: measured at their own size
        s_stats = feature_stats([net(image_to_tensor(style), layers)[k] for k in layers])
        o_stats = feature_stats([net(o, layers)[k] for k in layers])
        c_stats = feature_stats([net(c, layers)[k] for k in layers])
        want = stats_distance(o_stats, s_stats)
        ratio = want / stats_distance(c_stats, s_stats)
    assert np.allclose(got["style_stat_distance"], want.numpy(), rtol=1e-4)
    assert np.allclose(got["style_stat_ratio"], ratio.numpy(), rtol=1e-4)
    assert got["style_stat_ratio"][0] == pytest.approx(1.0, abs=1e-5)  # output == content
    assert abs(got["style_stat_ratio"][2] - 1) > 0.1  # another image is elsewhere: a comparison that can fail
    none = meter.measure(c, o, "none")  # no style image: no style loss, no distance
    assert np.isnan(none["style_stat_distance"]).all() and np.isnan(none["style_stat_ratio"]).all()
    # by default (no --metrics-ratio) the input pass stays at the content layers: the same distance, no ratio
    plain = LossMeter(net, {"s": style}, short_side=64, device="cpu", channels_last=False).measure(c, o, "s")
    assert np.allclose(plain["style_stat_distance"], got["style_stat_distance"], rtol=1e-5)
    assert np.isnan(plain["style_stat_ratio"]).all()


def test_a_blends_statistics_target_is_the_weighted_mix_also_from_encoded_targets(net):
    _, style, other = _images()
    meter = LossMeter(net, {"a": style, "b": other, "mix": [(style, 1.0), (other, 3.0)]}, device="cpu")
    a, b, mix = (meter.style_targets[k] for k in ("a", "b", "mix"))
    for layer in meter.style_layers:
        assert not torch.allclose(a.means[layer], b.means[layer], rtol=0.05)
        assert torch.allclose(mix.means[layer], 0.25 * a.means[layer] + 0.75 * b.means[layer], rtol=1e-5)
        assert torch.allclose(mix.stds[layer], 0.25 * a.stds[layer] + 0.75 * b.stds[layer], rtol=1e-5)
        assert a.means[layer].shape == (1, a.grams[layer].shape[1])

    def encoded(t):
        return GramTarget(*({k: v.numpy() for k, v in part.items()} for part in (t.grams, t.means, t.stds)))

    again = LossMeter(net, {"mix": [(encoded(a), 1.0), (encoded(b), 3.0)]}, device="cpu").style_targets["mix"]
    for layer in meter.style_layers:
        assert torch.allclose(again.means[layer], mix.means[layer]) and torch.allclose(again.stds[layer], mix.stds[layer])
    grams_only = LossMeter(net, {"old": GramTarget(encoded(a).grams)}, device="cpu")  # no statistics: no distance
    assert grams_only.style_targets["old"].stats(grams_only.style_layers) is None and not grams_only.input_stats


def test_the_demo_adain_moves_the_statistics_towards_the_style(net):
    import skimage.data

    grey = skimage.data.camera()[::4, ::4][:, 0:128]
    content = np.ascontiguousarray(np.stack([grey] * 3, -1))
    plaid = adain_demo.heldout_styles()["plaid"]
    weights = ac.load_adain(None, demo_adain(), lambda uri: open(uri, "rb").read())
    meter = LossMeter(net, {"plaid": plaid}, short_side=64, device="cpu", stat_ratio=True)
    stylizer = AdaINStylizer(weights.encoder, weights.decoder, {"plaid": plaid}, {"plaid": [("plaid", 1.0)]},
                             device="cpu", meter=meter)
    styled = stylizer.stylize([content], "plaid")[0]
    identity = meter.measure(image_to_tensor(content), image_to_tensor(content), "plaid")
    assert identity["style_stat_ratio"][0] == pytest.approx(1.0, abs=1e-5)
    assert styled.measured and styled.style_stat_ratio < 0.75  # measured 0.465 (2026-12-07)
    assert styled.style_stat_distance < 0.9 * identity["style_stat_distance"][0]
