"""Several styles in one image, region-aware: AdaIN with per-region statistics (stylize_core.regions)
and spatially varying conditional-norm parameters (stylize_core.spatial_norm), on the shipped demo
models (their outputs span the range, so a wrong region shows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from region_samples import two_style_network, two_styles  # tests/region_samples.py
from stylize_core import masks
from stylize_core.adain import AdaINStylizer, calc_mean_std, to_unit
from stylize_core.adain_checkpoint import load_adain
from stylize_core.demo_assets import demo_adain
from stylize_core.regions import adain_regions, as_planes, regional_adain, style_shares, weighted_mean_std
from stylize_core.spatial_norm import NotOneNetwork, RegionNet
from stylize_core.transformer_net import NetConfig, TransformerNet

SIZE = 128


def _read(uri: str) -> bytes:
    with open(uri, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def content() -> np.ndarray:
    """scikit-image's astronaut (colour, no demo model trained on it), SIZE x SIZE."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[::4, ::4][:SIZE, :SIZE])


@pytest.fixture(scope="module")
def styles() -> dict[str, np.ndarray]:
    return two_styles()


@pytest.fixture(scope="module")
def adain(styles) -> AdaINStylizer:
    w = load_adain(None, demo_adain(), _read)
    return AdaINStylizer(w.encoder, w.decoder, styles, {"a": [("a", 1.0)], "b": [("b", 1.0)]}, device="cpu")


def _halves(h: int, w: int, left: int = 1, right: int = 2) -> np.ndarray:
    labels = np.full((h, w), right, np.int32)
    labels[:, : w // 2] = left
    return labels


def _region_stats_distance(stylizer: AdaINStylizer, image: np.ndarray, cols: slice, style: str) -> float:
    """RMS distance of relu4_1's channel mean and std over a column band of ``image`` to ``style``'s."""
    with torch.inference_mode():
        feat = stylizer.encoder(to_unit(np.ascontiguousarray(image[:, cols]), stylizer.device))
        mean, std = calc_mean_std(feat)
        s = stylizer.stats[style]
        return float((mean - s.mean).pow(2).mean().sqrt() + (std - s.std).pow(2).mean().sqrt())


def test_weighted_statistics_with_unit_weights_are_calc_mean_std():
    feat = torch.randn(1, 8, 5, 7) * 3 + 1
    mean, std, mass = weighted_mean_std(feat, torch.ones(1, 5, 7))
    ref_mean, ref_std = calc_mean_std(feat)
    assert torch.allclose(mean[0], ref_mean[0], atol=1e-6) and torch.allclose(std[0], ref_std[0], atol=1e-6)
    assert float(mass[0]) == 35.0
    # a region's statistics are those of its own cells
    w = torch.zeros(2, 5, 7)
    w[0, :, :3], w[1, :, 3:] = 1, 1
    mean, std, _ = weighted_mean_std(feat, w)
    left_mean, left_std = calc_mean_std(feat[..., :3])
    assert torch.allclose(mean[0], left_mean[0], atol=1e-5) and torch.allclose(std[0], left_std[0], atol=1e-5)


def test_regional_adain_gives_each_region_its_own_styles_statistics(adain):
    feat = torch.randn(1, 16, 6, 8).abs()
    shares = torch.zeros(2, 6, 8)
    shares[0, :, :4], shares[1, :, 4:] = 1, 1
    a, b = adain.stats["a"], adain.stats["b"]
    a16 = type(a)(a.mean[:, :16], a.std[:, :16])
    b16 = type(b)(b.mean[:, :16], b.std[:, :16])
    t = regional_adain(feat, shares, [a16, b16])
    mean, std, _ = weighted_mean_std(t, shares)
    for k, s in enumerate((a16, b16)):
        assert torch.allclose(mean[k], s.mean[0], atol=1e-4)
        # the measured std holds AdaIN's eps once more: sqrt(std^2 - eps) is the features' own
        assert torch.allclose((std[k].pow(2) - 1e-5).clamp_min(0).sqrt(), s.std[0], atol=1e-4)


def test_one_region_everywhere_is_plain_adain(adain, content):
    labels = np.ones(content.shape[:2], np.int32)
    got = adain_regions(adain, content, masks.label_weights(labels, 1), ["a"], as_float=True)
    with torch.inference_mode():
        x = to_unit(content, adain.device)
        ref = adain.forward(x, "a").mul(255).clamp(0, 255)
    assert float((got - ref).abs().max()) < 1e-3
    plain = adain.stylize([content], "a")[0].image
    assert np.abs(adain_regions(adain, content, masks.label_weights(labels, 1), ["a"]).astype(int)
                  - plain.astype(int)).max() <= 1
    assert plain.std() > 20  # the demo model's output spans the range: a wrong region would show


def test_alpha_and_strength_act_as_in_plain_adain(adain, content):
    weak = AdaINStylizer(adain.encoder, adain.decoder, {k: v for k, v in adain.stats.items()}, {"a": [("a", 1.0)]},
                         alpha=0.4, strength=0.7, device="cpu")
    labels = np.ones(content.shape[:2], np.int32)
    got = adain_regions(weak, content, masks.label_weights(labels, 1), ["a"]).astype(int)
    plain = weak.stylize([content], "a")[0].image.astype(int)
    assert np.abs(got - plain).max() <= 1
    assert np.abs(got - adain_regions(adain, content, masks.label_weights(labels, 1), ["a"])).mean() > 10


def test_two_regions_take_their_own_styles_statistics(adain, content):
    h, w = content.shape[:2]
    weights = masks.label_weights(_halves(h, w), 2)
    out = adain_regions(adain, content, weights, ["a", "b"])
    left, right = slice(0, w // 2 - 16), slice(w // 2 + 16, w)  # two feature cells away from the border
    d = {(side, s): _region_stats_distance(adain, out, cols, s)
         for side, cols in (("left", left), ("right", right)) for s in ("a", "b")}
    assert d["left", "a"] < 0.7 * d["left", "b"], d
    assert d["right", "b"] < 0.7 * d["right", "a"], d
    # not the same as AdaIN over the whole image per style, composited
    whole = masks.composite_labels(content, [adain.stylize([content], s)[0].image for s in ("a", "b")], _halves(h, w))
    assert np.abs(out.astype(int) - whole.astype(int)).mean() > 2.0


def test_label_zero_is_the_input_and_the_feather_band_blends(adain, content):
    h, w = content.shape[:2]
    labels = _halves(h, w, left=0, right=1)
    out = adain_regions(adain, content, masks.label_weights(labels, 1, px=8), ["a"])
    core0 = slice(0, w // 2 - 8)
    assert np.abs(out[:, core0].astype(int) - content[:, core0].astype(int)).max() <= 2
    styled = np.abs(out[:, w // 2 + 8:].astype(int) - content[:, w // 2 + 8:].astype(int)).mean()
    assert styled > 20  # the style shows in region 1
    hard = adain_regions(adain, content, masks.label_weights(labels, 1), ["a"])
    assert np.array_equal(hard[:, : w // 2], content[:, : w // 2])  # a weight of exactly 1: bit for bit


def test_region_planes_are_checked_and_completed():
    three = as_planes(np.ones((2, 4, 4), np.float32) * 0.25, 2)
    assert three.shape == (3, 4, 4) and torch.allclose(three[0], torch.full((4, 4), 0.5))
    with pytest.raises(ValueError, match="region weights"):
        as_planes(np.ones((5, 4, 4), np.float32), 2)
    shares = style_shares(torch.tensor([[[1.0, 0.5]], [[0.0, 0.25]], [[0.0, 0.25]]]))  # (3, 1, 2)
    assert torch.allclose(shares[:, 0, 0], torch.tensor([0.5, 0.5])) and torch.allclose(shares[:, 0, 1],
                                                                                        torch.tensor([0.5, 0.5]))


# --- spatially varying conditional instance norm ----------------------------------------------------

@pytest.fixture(scope="module")
def multi(styles) -> TransformerNet:
    """A real two-style conditional-norm network (tests/region_samples.py)."""
    return two_style_network(styles)


def _x(content: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(content).permute(2, 0, 1)[None].float()


def test_a_share_of_one_style_everywhere_is_that_style(multi, content):
    x = _x(content)
    region = RegionNet.from_multi_style(multi, [[1.0, 0.0], [0.0, 1.0]])
    with torch.inference_mode():
        for k in range(2):
            shares = torch.zeros(2, *x.shape[-2:])
            shares[k] = 1
            ref = multi(x, torch.eye(2)[k])
            assert float((region(x, shares) - ref).abs().max()) < 1e-4
            assert ref.clamp(0, 255).std() > 20


def test_two_regions_in_one_pass_match_each_styles_render_in_their_cores(multi, content):
    x = _x(content)
    h, w = x.shape[-2:]
    region = RegionNet.from_multi_style(multi, [[1.0, 0.0], [0.0, 1.0]])
    shares = style_shares(as_planes(masks.label_weights(_halves(h, w), 2), 2))
    with torch.inference_mode():
        y = region(x, shares).clamp(0, 255)
        a, b = (multi(x, torch.eye(2)[k]).clamp(0, 255) for k in range(2))
    core = 24  # px from the border; the statistics are the whole image's, so the match is close, not exact
    left, right = slice(0, w // 2 - core), slice(w // 2 + core, w)
    near_a, far_a = float((y[..., left] - a[..., left]).abs().mean()), float((y[..., left] - b[..., left]).abs().mean())
    near_b, far_b = (float((y[..., right] - b[..., right]).abs().mean()),
                     float((y[..., right] - a[..., right]).abs().mean()))
    assert far_a > 20 and far_b > 20  # the two styles really differ there
    assert near_a < 0.25 * far_a and near_b < 0.25 * far_b, (near_a, far_a, near_b, far_b)


def test_networks_from_separate_checkpoints_are_refused():
    torch.manual_seed(0)
    one, two = TransformerNet(NetConfig(width=0.25, blocks=1)), TransformerNet(NetConfig(width=0.25, blocks=1))
    with pytest.raises(NotOneNetwork, match="blend their outputs"):
        RegionNet([one, two])


def test_label_zero_counts_in_no_regions_statistics(multi, content):
    """A region next to label 0 is normalised by its own pixels only: its core looks like the style's render
    of the region's crop alone (1.54 grey levels mean on this image, 2.63 when label 0 counted in the
    statistics with uniform shares)."""
    x = _x(content)
    h, w = x.shape[-2:]
    labels = np.zeros((h, w), np.int32)
    labels[:, w // 2:] = 1
    planes = as_planes(masks.label_weights(labels, 2), 2)
    region = RegionNet.from_multi_style(multi, [[1.0, 0.0], [0.0, 1.0]])
    with torch.inference_mode():
        crop = multi(x[..., w // 2:], torch.eye(2)[0]).clamp(0, 255)
        y = region(x, style_shares(planes, "present")[None], style_shares(planes, "zero")[None]).clamp(0, 255)
        diluted = region(x, style_shares(planes, "uniform")[None]).clamp(0, 255)
    near = float((y[..., w // 2 + 16:] - crop[..., 16:]).abs().mean())
    before = float((diluted[..., w // 2 + 16:] - crop[..., 16:]).abs().mean())
    assert near < 2.0 and near < 0.75 * before, (near, before)
