"""VGG loss network naming/trimming/weights, and the losses' known values."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from stylize_core.losses import StyleTargetCache, content_loss, gram_matrix, style_grams, style_loss, tv_loss
from stylize_core.vgg import VGGFeatures, VGGWeightsError, imagenet_weights_path, layer_names, make_trunk


def test_layer_names():
    v16, v19 = layer_names("vgg16"), layer_names("vgg19")
    # vgg16().features is make_layers(cfgs["D"]) (vgg19: "E"), without building the classifiers
    assert len(v16) == len(make_layers(cfgs["D"])) == 31
    assert len(v19) == len(make_layers(cfgs["E"])) == 37
    assert v16[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert v16[-2:] == ["relu5_3", "pool5"] and v19[-2:] == ["relu5_4", "pool5"]
    assert "relu3_4" in v19 and "relu3_4" not in v16
    with pytest.raises(ValueError):
        layer_names("vgg11")


def test_trimmed_after_deepest_layer_frozen_and_named_outputs():
    vgg = VGGFeatures("vgg16", ["relu2_2", "relu1_2"], "random:0")
    assert len(vgg.features) == layer_names("vgg16").index("relu2_2") + 1 == 9
    assert vgg.layers == ("relu1_2", "relu2_2")  # network order
    assert not any(p.requires_grad for p in vgg.parameters())
    x = torch.rand(2, 3, 32, 32) * 255
    x0 = x.clone()
    out = vgg(x)
    assert list(out) == ["relu1_2", "relu2_2"]
    assert out["relu1_2"].shape == (2, 64, 32, 32) and out["relu2_2"].shape == (2, 128, 16, 16)
    torch.testing.assert_close(x, x0)  # normalisation never in place
    assert list(vgg(x, ["relu1_2"])) == ["relu1_2"]
    with pytest.raises(ValueError):
        VGGFeatures("vgg16", ["relu5_4"], "random:0")  # vgg19-only name


def test_random_weights_are_deterministic_and_recorded():
    a, b, c = (VGGFeatures("vgg19", ["relu3_1"], w) for w in ("random:7", "random:7", "random:8"))
    x = torch.rand(1, 3, 24, 24) * 255
    torch.testing.assert_close(a(x)["relu3_1"], b(x)["relu3_1"])
    assert not torch.allclose(a(x)["relu3_1"], c(x)["relu3_1"])
    assert a.loss_model == "vgg19/random:7"


@pytest.mark.parametrize(("arch", "cfg"), [("vgg16", "D"), ("vgg19", "E")])
def test_trunk_is_torchvisions_features_module_for_module_and_draw_for_draw(arch, cfg):
    """Built without torchvision, the trunk has torchvision's modules in its order, and a seeded build
    draws the same weights (so random:SEED loss networks, and what was trained against them, stay)."""
    torch.manual_seed(3)
    ours = make_trunk(arch)
    torch.manual_seed(3)
    theirs = make_layers(cfgs[cfg])
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (key, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), key
    assert len(ours) == len(layer_names(arch))


def _torchvision_vgg16_state() -> dict[str, torch.Tensor]:
    """vgg16().state_dict()'s keys: its features (torchvision's make_layers), and stand-ins for its
    classifier's 120M parameters (0.5 GB to build, save and load), which the loader drops."""
    state = {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}
    for i in (0, 3, 6):
        state |= {f"classifier.{i}.weight": torch.zeros(2, 2), f"classifier.{i}.bias": torch.zeros(2)}
    return state


def test_state_dict_file_torchvision_layout(tmp_path):
    full = _torchvision_vgg16_state()
    path = tmp_path / "vgg16.pth"
    torch.save(full, path)
    vgg = VGGFeatures("vgg16", ["relu1_1"], str(path))
    torch.testing.assert_close(vgg.features[0].weight, full["features.0.weight"])
    assert vgg.loss_model.startswith("vgg16/sha256:")
    with pytest.raises(VGGWeightsError, match="not a vgg19 state dict"):
        VGGFeatures("vgg19", ["relu1_1"], str(path))
    with pytest.raises(VGGWeightsError, match="not found"):
        VGGFeatures("vgg16", ["relu1_1"], str(tmp_path / "missing.pth"))


def test_imagenet_missing_names_the_file_to_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(VGGWeightsError) as err:
        VGGFeatures("vgg16", ["relu1_1"], "imagenet", allow_download=False)
    expected = imagenet_weights_path("vgg16")
    assert expected.startswith(str(tmp_path)) and expected.endswith("vgg16-397923af.pth")
    assert expected in str(err.value)
    # staged in TORCH_HOME, it loads offline
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(_torchvision_vgg16_state(), expected)
    assert VGGFeatures("vgg16", ["relu1_1"], "imagenet", allow_download=False).loss_model == "vgg16/imagenet"


def test_the_imagenet_files_are_torchvisions_and_looked_up_without_importing_it():
    """The URLs written in stylize_core.vgg are torchvision's own; and a process that builds the
    ImageNet VGG's path (every actor and CLI start on the default path) does not import torchvision."""
    import subprocess
    import sys

    import torchvision

    from stylize_core.vgg import IMAGENET_WEIGHTS_URL

    assert IMAGENET_WEIGHTS_URL == {"vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1.url,
                                    "vgg19": torchvision.models.VGG19_Weights.IMAGENET1K_V1.url}
    code = ("import sys\nfrom stylize_core.vgg import imagenet_weights_path\n"
            "print(imagenet_weights_path('vgg19'))\nprint('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0].endswith("vgg19-dcbb9e9d.pth") and out[1] == "False"


def test_imagenet_is_never_downloaded_unless_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("STYLIZE_ALLOW_DOWNLOAD", raising=False)
    fetched = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, path, **kw: fetched.append(url))
    with pytest.raises(VGGWeightsError, match="STYLIZE_ALLOW_DOWNLOAD=1"):
        VGGFeatures("vgg16", ["relu1_1"], "imagenet")
    assert fetched == []
    monkeypatch.setenv("STYLIZE_ALLOW_DOWNLOAD", "1")
    with pytest.raises((OSError, RuntimeError, EOFError, VGGWeightsError)):  # the fake download wrote no file
        VGGFeatures("vgg16", ["relu1_1"], "imagenet")
    assert len(fetched) == 1 and fetched[0].endswith("vgg16-397923af.pth")


def test_gram_matrix_known_values():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)  # C=2, H=1, W=2
    g = gram_matrix(f)
    expected = torch.tensor([[[1 + 4, 3 + 8], [3 + 8, 9 + 16]]]) / (2 * 1 * 2)
    torch.testing.assert_close(g, expected)
    # size-normalised: tiling the same feature map does not change the Gram matrix up to the channel count
    torch.testing.assert_close(gram_matrix(f.repeat(1, 1, 3, 2)), expected)
    # channels_last features (the loss meter's layout) give the same matrix, also as a non-square map
    torch.testing.assert_close(gram_matrix(f.contiguous(memory_format=torch.channels_last)), expected)
    g = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(gram_matrix(g.contiguous(memory_format=torch.channels_last)), gram_matrix(g))


def test_losses_known_values_and_reductions():
    a = torch.zeros(2, 1, 2, 2)
    b = torch.ones(2, 1, 2, 2)
    b[1] *= 3
    torch.testing.assert_close(content_loss(a, b, reduction="none"), torch.tensor([1.0, 9.0]))
    torch.testing.assert_close(content_loss(a, b), torch.tensor(5.0))
    img = torch.zeros(1, 1, 3, 3)
    img[..., :, 1] = 6.0  # one bright column: every horizontal pair differs by 6, vertical pairs by 0
    torch.testing.assert_close(tv_loss(img), torch.tensor(6.0))  # 6 horizontal pairs, each |6|
    feats = {"a": torch.ones(1, 2, 2, 2)}
    targets = {"a": gram_matrix(torch.ones(1, 2, 2, 2))}
    assert style_loss(feats, targets).item() == 0.0
    targets = {"a": torch.zeros(1, 2, 2)}
    # gram of ones: every entry 4/8 = 0.5 -> mse 0.25, weighted x2
    torch.testing.assert_close(style_loss(feats, targets, {"a": 2.0}), torch.tensor(0.5))
    with pytest.raises(ValueError):
        content_loss(a, b, reduction="sum")


def test_style_targets_cached_and_multiscale():
    calls = []

    class OneByOne(nn.Module):  # a 1x1-conv stand-in encoder (pystiche habit)
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            calls.append(x.shape[-1])
            return {"f": torch.relu(self.conv(x / 255))}

    torch.manual_seed(0)
    enc = OneByOne()
    import numpy as np

    style = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    cache = StyleTargetCache()
    g1 = cache.get_targets(enc, style, ["f"]).grams
    g2 = cache.get_targets(enc, style, ["f"]).grams
    assert g1 is g2 and len(cache) == 1 and calls == [32]
    multi = style_grams(enc, torch.from_numpy(style).permute(2, 0, 1)[None].float(), ["f"], scales=(1.0, 0.5))
    assert calls[-2:] == [32, 16] and multi["f"].shape == (1, 4, 4)
    assert not torch.allclose(multi["f"], g1["f"])
