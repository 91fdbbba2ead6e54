"""The texture loss network and the loss-network factory: determinism, shapes, names, and that its
losses mean something (Gatys with it makes a texture's statistics while the content's edges stay)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylize_core.gatys import GatysConfig, gatys_vgg, optimize_image
from stylize_core.loss_network import build_loss_network, default_layers, parse_loss_network
from stylize_core.losses import image_to_tensor, style_grams, style_loss
from stylize_core.texture_net import CONTENT_LAYERS, TextureFeatures, texture_layer_names
from stylize_core.training_demo import mosaic_style_image
from stylize_core.vgg import VGGFeatures, VGGWeightsError


@pytest.fixture(scope="module")
def net() -> TextureFeatures:
    return TextureFeatures(0)


def test_layers_shapes_and_frozen(net: TextureFeatures) -> None:
    assert net.layers == tuple(texture_layer_names()) + CONTENT_LAYERS and net.layers[:2] == ("o0k1", "o0k3")
    assert net.loss_model == "texture/random:0"
    x = torch.rand(2, 3, 33, 20) * 255
    before = x.clone()
    feats = net(x)
    assert torch.equal(x, before)  # the caller's images are not normalised in place
    assert feats["o0k3"].shape == (2, 128, 33, 20) and feats["o1k5"].shape == (2, 128, 17, 10)
    assert feats["o3k3"].shape == (2, 128, 5, 3) and feats["o1y3"].shape == (2, 64, 17, 10)
    assert all((f >= 0).all() for f in feats.values())  # ReLU responses
    assert not any(p.requires_grad for p in net.buffers()) and not net.training
    assert set(net(x, ["o0k3"])) == {"o0k3"}
    with pytest.raises(ValueError, match="o9k3"):
        TextureFeatures(0, ["o9k3"])
    tiny = net(torch.rand(1, 3, 16, 16) * 255)  # the metrics' smallest size still has every scale
    assert tiny["o3k5"].shape[-2:] == (2, 2)


def test_seeded_deterministic_and_flat_grey_does_not_respond(net: TextureFeatures) -> None:
    x = torch.rand(1, 3, 24, 24) * 255
    same, other = TextureFeatures(0)(x), TextureFeatures(1)(x)
    assert all(torch.equal(net(x)[k], same[k]) for k in net.layers)
    assert not torch.allclose(net(x)["o0k3"], other["o0k3"])
    assert TextureFeatures(1).loss_model == "texture/random:1"
    # zero-mean filters on a flat image: the banks see only colour, the luminance (content) layers nothing
    flat = torch.empty((1, 3, 16, 16))
    flat[:, 0], flat[:, 1], flat[:, 2] = 200.0, 40.0, 90.0
    feats = net(flat)
    assert float(feats["o0y3"].abs().max()) < 1e-4 and float(feats["o1y3"].abs().max()) < 1e-4
    assert float(feats["o0k3"].abs().max()) > 0.01 and float(feats["o0k1"].abs().max()) > 0.01


def test_layers_are_calibrated_to_the_same_level(net: TextureFeatures) -> None:
    photo = image_to_tensor(mosaic_style_image(128))
    levels = [float(f.pow(2).mean()) for f in net(photo).values()]
    assert max(levels) / min(levels) < 10  # no scale dominates a summed Gram loss


def test_factory_names_layers_and_weights() -> None:
    assert parse_loss_network("texture") == ("texture", 0) and parse_loss_network("texture:7") == ("texture", 7)
    assert parse_loss_network("vgg19") == ("vgg19", None)
    for bad in ("vgg11", "texture:x", "vgg16:1", ""):
        with pytest.raises(ValueError, match="unknown loss network"):
            parse_loss_network(bad)
    assert default_layers("vgg16") == (("relu2_2",), ("relu1_2", "relu2_2", "relu3_3", "relu4_3"))
    assert default_layers("vgg19", "gatys")[0] == ("relu4_2",)
    assert default_layers("texture:3", "gatys") == (("o0y3", "o1y3"), tuple(texture_layer_names()))
    tex = build_loss_network("texture:7", "random:0")  # the jobs' VGG default weights do not apply
    assert isinstance(tex, TextureFeatures) and tex.loss_model == "texture/random:7"
    assert build_loss_network("texture", "imagenet").loss_model == "texture/random:0"
    with pytest.raises(VGGWeightsError, match="no weights file"):
        build_loss_network("texture", "/models/vgg.pth")  # a file is never silently ignored
    vgg = build_loss_network("vgg16", "random:0")
    assert isinstance(vgg, VGGFeatures) and vgg.layers == ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    assert gatys_vgg("texture:2").loss_model == "texture/random:2"


def _photo(size: int) -> np.ndarray:
    """A smooth picture with edges: two discs on a gradient."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([200 * xx + 30, 120 + 60 * yy, 90 + 0 * xx], -1)
    for cy, cx, r, colour in ((0.35, 0.35, 0.2, (240, 240, 230)), (0.7, 0.65, 0.18, (20, 30, 60))):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = colour
    return img.astype(np.uint8)


def _edge_correlation(a: np.ndarray, b: np.ndarray) -> float:
    def mag(img: np.ndarray) -> np.ndarray:
        y = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.hypot(y[1:-1, 2:] - y[1:-1, :-2], y[2:, 1:-1] - y[:-2, 1:-1]).ravel()

    return float(np.corrcoef(mag(a), mag(b))[0, 1])


def test_gatys_with_it_takes_the_style_and_keeps_the_content(net: TextureFeatures) -> None:
    torch.set_num_threads(1)  # tiny tensors; see test_gatys.py
    content, style = _photo(48), mosaic_style_image(96)
    cfg = GatysConfig(steps=40)  # default weights: the network is calibrated for them
    result = optimize_image(content, style, net, cfg)
    # judged by a differently seeded bank than the one optimised
    judge = TextureFeatures(5)
    targets = style_grams(judge, image_to_tensor(style), judge.layers)

    def distance(img: np.ndarray) -> float:
        return float(style_loss(judge(image_to_tensor(img)), targets))

    assert distance(result.image) < 0.3 * distance(content)
    assert _edge_correlation(result.image, content) > 0.5
