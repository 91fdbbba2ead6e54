"""Guided Gram losses (Gatys et al. 2017): several styles in one image by optimisation, tiny images,
random-weight VGG19 on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylize_core import adain_demo, masks
from stylize_core.gatys import GatysConfig, gatys_vgg
from stylize_core.guided_gram import guided_gram, guided_style_loss, optimize_regions, region_grams
from stylize_core.losses import gram_matrix, image_to_tensor, style_grams
from stylize_core.regions import as_planes

SIZE = 48


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """As test_gatys: tiny tensors, a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vgg():
    return gatys_vgg("vgg19", "random:0", GatysConfig(style_layers=("relu1_1", "relu2_1", "relu3_1"),
                                                      content_layers=("relu3_1",)))


def test_a_mask_of_ones_is_the_plain_gram_and_a_region_is_its_own():
    f = torch.randn(1, 6, 5, 8)
    assert torch.allclose(guided_gram(f, torch.ones(5, 8)), gram_matrix(f), atol=1e-6)
    m = torch.zeros(5, 8)
    m[:, :3] = 0.5  # a half weight does not change a region's normalised Gram
    assert torch.allclose(guided_gram(f, m), gram_matrix(f[..., :3]), atol=1e-6)


def test_a_region_without_mass_adds_nothing():
    f = {"relu1_1": torch.randn(1, 4, 8, 8)}
    target = {"relu1_1": torch.zeros(1, 4, 4)}
    masks_ = torch.zeros(2, 8, 8)
    masks_[0] = 1
    one = guided_style_loss(f, masks_[:1], [target])
    assert float(guided_style_loss(f, masks_, [target, {"relu1_1": torch.ones(1, 4, 4) * 100}])) == float(one)


def test_guided_optimisation_moves_each_region_towards_its_own_style(vgg):
    import skimage.data

    content = np.ascontiguousarray(skimage.data.astronaut()[::8, ::8][:SIZE, :SIZE])
    held = adain_demo.heldout_styles()
    styles = [np.ascontiguousarray(held["plaid"][:64, :64]), np.ascontiguousarray(held["rings"][:64, :64])]
    labels = np.full((SIZE, SIZE), 2, np.int32)
    labels[:, : SIZE // 2] = 1
    weights = masks.label_weights(labels, 2)
    cfg = GatysConfig(style_layers=("relu1_1", "relu2_1", "relu3_1"), content_layers=("relu3_1",), optimizer="adam",
                      steps=40, lr=8.0, style_weight=1e4)
    result = optimize_regions(content, styles, weights, vgg, cfg)
    assert result.image.shape == content.shape and len(result.trace) == 40
    first, last = result.trace[0]["style"], result.trace[-1]["style"]
    assert last < 0.5 * first, (first, last)

    layers = cfg.style_layers
    targets = [style_grams(vgg, image_to_tensor(s, torch.device("cpu")), layers) for s in styles]
    region_masks = as_planes(weights, 2)[1:]

    def distances(image: np.ndarray) -> np.ndarray:  # [region][style]: summed Gram MSE over the layers
        grams = region_grams(vgg, image_to_tensor(image, torch.device("cpu")), region_masks, layers)
        return np.array([[sum(float((grams[k][layer] - targets[j][layer]).pow(2).mean()) for layer in layers)
                          for j in range(2)] for k in range(2)])

    before, after = distances(content), distances(result.image)
    for k in range(2):
        assert after[k, k] < 0.5 * before[k, k], (before, after)  # towards its own style
        assert after[k, k] < after[k, 1 - k], (before, after)  # closer to its own than to the other


def test_label_zero_is_the_input(vgg):
    rng = np.random.default_rng(0)
    content = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    labels = np.zeros((24, 24), np.int32)
    labels[:, 12:] = 1
    cfg = GatysConfig(style_layers=("relu1_1",), content_layers=("relu3_1",), optimizer="adam", steps=3, lr=20.0)
    out = optimize_regions(content, [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)],
                           masks.label_weights(labels, 1), vgg, cfg).image
    assert np.array_equal(out[:, :12], content[:, :12])
    assert np.abs(out[:, 12:].astype(int) - content[:, 12:].astype(int)).mean() > 1
    with pytest.raises(ValueError, match="init 'style'"):
        optimize_regions(content, [content], masks.label_weights(labels, 1), vgg, GatysConfig(init="style"))
