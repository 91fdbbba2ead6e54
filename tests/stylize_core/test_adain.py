"""AdaIN against a reference written from pytorch-AdaIN's published layout (net.py, function.py,
test.py), with random weights scaled so the outputs span the grey range."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import transforms

from stylize_core import adain_checkpoint as ac
from stylize_core.adain import AdaINStylizer
from stylize_core.builder import SetupError, StylizerSpec
from stylize_core.file_errors import FileUnusable
from stylize_core.image_io import encode_image
from stylize_core.registry import build_stylizer

# ---------------------------------------------------------------- the reference, from their layout


def _block(c_in, c_out):
    return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(c_in, c_out, (3, 3)), nn.ReLU()]


def ref_vgg() -> nn.Sequential:
    pool = lambda: nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True)  # noqa: E731
    return nn.Sequential(
        nn.Conv2d(3, 3, (1, 1)), *_block(3, 64), *_block(64, 64), pool(), *_block(64, 128), *_block(128, 128), pool(),
        *_block(128, 256), *_block(256, 256), *_block(256, 256), *_block(256, 256), pool(),
        *_block(256, 512), *_block(512, 512), *_block(512, 512), *_block(512, 512), pool(),
        *_block(512, 512), *_block(512, 512), *_block(512, 512), *_block(512, 512)[:3])


def ref_decoder() -> nn.Sequential:
    up = nn.UpsamplingNearest2d(scale_factor=2)
    return nn.Sequential(
        *_block(512, 256), up, *_block(256, 256), *_block(256, 256), *_block(256, 256), *_block(256, 128), up,
        *_block(128, 128), *_block(128, 64), up, *_block(64, 64), nn.ReflectionPad2d((1, 1, 1, 1)),
        nn.Conv2d(64, 3, (3, 3)))


def ref_mean_std(feat, eps=1e-5):
    n, c = feat.size()[:2]
    var = feat.view(n, c, -1).var(dim=2) + eps
    return feat.view(n, c, -1).mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def ref_adain(content_feat, style_feat):
    size = content_feat.size()
    s_mean, s_std = ref_mean_std(style_feat)
    c_mean, c_std = ref_mean_std(content_feat)
    return (content_feat - c_mean.expand(size)) / c_std.expand(size) * s_std.expand(size) + s_mean.expand(size)


def ref_transfer(vgg, dec, content, style, alpha=1.0, weights=None):
    """Their test.py's style_transfer; ``style`` (N, 3, H, W) with N = len(weights) when interpolating."""
    content_f, style_f = vgg(content), vgg(style)
    if weights:
        base = ref_adain(content_f.expand(len(weights), -1, -1, -1), style_f)
        feat = sum(w * base[i:i + 1] for i, w in enumerate(weights))
        content_f = content_f[:1]
    else:
        feat = ref_adain(content_f, style_f)
    return dec(feat * alpha + content_f * (1 - alpha))


def save_image_u8(t: torch.Tensor) -> np.ndarray:
    """torchvision save_image's rounding of a (1, 3, H, W) tensor."""
    return t[0].mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return transforms.ToTensor()(image)[None]


# ---------------------------------------------------------------- fixtures


def _image(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3)).astype(np.float32)
    big = np.kron(small, np.ones((4, 4, 1)))[:h, :w]  # blocky structure so features vary
    return np.clip(big + rng.normal(0, 20, big.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def nets():
    """Their vgg (53 modules) and decoder with He-initialised random weights; the decoder's last conv
    rescaled so the test image's output has, per channel, mean 0.5 and std 0.3 (about 76 grey levels)."""
    torch.manual_seed(0)
    vgg, dec = ref_vgg(), ref_decoder()
    for m in [*vgg, *dec]:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    vgg.eval(), dec.eval()
    with torch.no_grad():
        out = ref_transfer(vgg[:31], dec, to_tensor(_image(3, 64, 48)), to_tensor(_image(4, 40, 56)))
        last = dec[-1]
        k = 0.3 / out.std(dim=(0, 2, 3))  # (3,) per output channel
        last.weight.mul_(k.view(3, 1, 1, 1))
        last.bias.copy_(0.5 - (out.mean(dim=(0, 2, 3)) - last.bias) * k)
    return vgg, dec


@pytest.fixture(scope="module")
def files(nets, tmp_path_factory):
    vgg, dec = nets
    d = tmp_path_factory.mktemp("adain")
    torch.save(vgg.state_dict(), d / "vgg_normalised.pth")
    torch.save(dec.state_dict(), d / "decoder.pth")
    return d / "vgg_normalised.pth", d / "decoder.pth"


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def weights(files):
    return ac.load_adain(str(files[0]), str(files[1]), read)


def stylizer(weights, images, styles=None, **kw) -> AdaINStylizer:
    styles = styles or {n: [(n, 1.0)] for n in images}
    return AdaINStylizer(weights.encoder, weights.decoder, images, styles, device="cpu", **kw)


# ---------------------------------------------------------------- interop


@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_matches_their_pipeline_within_one_grey_level(nets, files, weights, alpha):
    vgg, dec = nets
    content, style = _image(3, 64, 48), _image(4, 40, 56)
    with torch.no_grad():
        expected = save_image_u8(ref_transfer(vgg[:31], dec, to_tensor(content), to_tensor(style), alpha))
    assert expected.std() > 20  # the weights' scaling makes a real image, so a wrong pipeline fails
    w = weights
    got = stylizer(w, {"s": style}, alpha=alpha).stylize([content], "s")[0].image
    assert got.shape == content.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_size_not_multiple_of_eight_is_cropped_back(nets, files, weights):
    vgg, dec = nets
    content, style = _image(5, 37, 50), _image(4, 40, 56)
    with torch.no_grad():
        theirs = save_image_u8(ref_transfer(vgg[:31], dec, to_tensor(content), to_tensor(style)))
    assert theirs.shape == (40, 56, 3)  # ceil_mode pooling: their output grows to multiples of 8
    w = weights
    got = stylizer(w, {"s": style}).stylize([content], "s")[0].image
    assert got.shape == content.shape
    assert np.abs(got.astype(int) - theirs[:37, :50].astype(int)).max() <= 1  # the top-left crop


def test_a_16_bit_input_is_stylised_in_float(weights):
    """A float32 input (a 16-bit file's samples / 257) comes back float32, between the 8-bit steps; the
    same pixels as uint8 give that output rounded."""
    content, style = _image(3, 64, 48), _image(4, 40, 56)
    s = stylizer(weights, {"s": style})
    eight = s.stylize([content], "s")[0].image
    same = s.stylize([content.astype(np.float32)], "s")[0].image
    assert same.dtype == np.float32 and eight.dtype == np.uint8 and eight.std() > 20
    assert np.abs(same - eight).max() <= 0.5 + 1e-3  # uint8 values as float: the unrounded output
    deep = content.astype(np.float32) + np.random.default_rng(0).random(content.shape, dtype=np.float32)
    out = s.stylize([deep], "s")[0].image
    assert out.dtype == np.float32 and len(np.unique(out)) > 4 * len(np.unique(np.rint(out)))
    assert np.abs(out - eight).mean() < 3  # the same style, finer


def test_alpha_zero_decodes_the_content(nets, files, weights):
    vgg, dec = nets
    content = _image(6, 32, 40)
    with torch.no_grad():
        decoded = save_image_u8(dec(vgg[:31](to_tensor(content))))
    w = weights
    got = stylizer(w, {"s": _image(4, 40, 56)}, alpha=0.0).stylize([content], "s")[0].image
    assert np.abs(got.astype(int) - decoded.astype(int)).max() <= 1


def test_interpolation_weights_match_their_sum_of_adain_features(nets, files, weights):
    vgg, dec = nets
    content, a, b = _image(7, 32, 32), _image(8, 32, 32), _image(9, 32, 32)
    with torch.no_grad():
        expected = save_image_u8(ref_transfer(vgg[:31], dec, to_tensor(content),
                                              torch.cat([to_tensor(a), to_tensor(b)]), weights=[0.3, 0.7]))
    w = weights
    s = stylizer(w, {"a": a, "b": b}, {"a": [("a", 1.0)], "mix": [("a", 0.3), ("b", 0.7)]})
    out = s.stylize_many([content])
    assert np.abs(out["mix"][0].image.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(out["mix"][0].image.astype(int) - out["a"][0].image.astype(int)).max() > 5


def test_each_style_image_is_encoded_once(files, weights):
    w = weights
    s = stylizer(w, {"a": _image(8, 16, 16), "b": _image(9, 16, 16)},
                 {"a": [("a", 1.0)], "b": [("b", 1.0)], "mix": [("a", 0.5), ("b", 0.5)]})
    assert s.style_encodes == 2
    for _ in range(2):
        out = s.stylize_many([_image(1, 16, 16), _image(2, 16, 16)])
        assert [len(v) for v in out.values()] == [2, 2, 2]
    assert s.style_encodes == 2  # cached mean/std, however many images and styles
    assert s.content_encodes == 4  # one per image per call, shared by the three styles


def test_preserve_color_keeps_the_inputs_chrominance(files, weights):
    from stylize_core.color import rgb_to_yiq

    w = weights
    content = _image(3, 32, 32)
    got = stylizer(w, {"s": _image(4, 32, 32)}, preserve_color=True).stylize([content], "s")[0].image
    yiq = lambda x: rgb_to_yiq(torch.from_numpy(x).permute(2, 0, 1)[None].float())  # noqa: E731
    unclamped = (yiq(got)[:, 1:] - yiq(content)[:, 1:]).abs()
    assert unclamped.median() < 3  # clamping to 0..255 may move a few pixels' chrominance


# ---------------------------------------------------------------- files


def test_strict_load_of_full_and_truncated_encoder_files(nets, tmp_path):
    vgg, _ = nets
    full = vgg.state_dict()
    enc, tail = ac.encoder_from_state(full)
    assert tail and all(int(k.split(".")[0]) >= 31 for k in tail)
    short = {k: v for k, v in full.items() if int(k.split(".")[0]) < 31}
    enc2, tail2 = ac.encoder_from_state(short)
    assert tail2 == {}
    for a, b in zip(enc.state_dict().values(), enc2.state_dict().values()):
        assert torch.equal(a, b)
    bad = dict(short)
    bad["2.weight"] = bad["2.weight"][:32]
    with pytest.raises(FileUnusable, match="shape"):
        ac.encoder_from_state(bad, "x.pth")


def test_export_round_trip_loads_strictly_into_their_layouts(nets, files, weights):
    vgg, dec = nets
    w = weights
    theirs_vgg, theirs_dec = ref_vgg(), ref_decoder()
    theirs_vgg.load_state_dict(ac.export_encoder(w.encoder, w.encoder_tail), strict=True)
    theirs_dec.load_state_dict(ac.export_decoder(w.decoder), strict=True)
    for a, b in zip(theirs_vgg.state_dict().values(), vgg.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(theirs_dec.state_dict().values(), dec.state_dict().values()):
        assert torch.equal(a, b)
    ref_vgg().load_state_dict(ac.export_encoder(w.encoder), strict=True)  # without the tail: zeros after relu4_1


def test_one_file_format(files, weights, tmp_path):
    w = weights
    data = ac.adain_checkpoint_bytes(w.encoder, w.decoder, {"trained_by": "test", "steps": 3})
    path = tmp_path / "adain.pth"
    path.write_bytes(data)
    one = ac.load_adain(None, str(path), read)
    assert one.metadata == {"trained_by": "test", "steps": 3}
    assert one.model_id == hashlib.sha256(data).hexdigest() != w.model_id
    content, style = _image(3, 32, 32), _image(4, 32, 32)
    a = stylizer(w, {"s": style}).stylize([content], "s")[0].image
    b = stylizer(one, {"s": style}).stylize([content], "s")[0].image
    assert np.array_equal(a, b)
    with pytest.raises(FileUnusable, match="drop --encoder"):
        ac.load_adain(str(files[0]), str(path), read)


def _spec(tmp_path, encoder, decoder, **kw) -> StylizerSpec:
    style = tmp_path / "style.png"
    style.write_bytes(encode_image(_image(4, 32, 32), "png"))
    return StylizerSpec(styles={}, style_images={"s": str(style)}, method="adain", adain_encoder=encoder,
                        adain_decoder=decoder, metrics=False, device="cpu", **kw)


@pytest.mark.parametrize("which, content, expect", [
    ("encoder", b"", "empty"),
    ("encoder", b"<!DOCTYPE html><html>", "HTML"),
    ("encoder", None, "not found"),
    ("decoder", "swap", "AdaIN decoder"),
    ("encoder", "transformer", "AdaIN encoder"),
])
def test_bad_files_are_one_line_setup_errors(files, tmp_path, which, content, expect):
    enc, dec = str(files[0]), str(files[1])
    bad = tmp_path / "bad.pth"
    if content == "swap":
        bad.write_bytes(read(files[0]))  # an encoder given as the decoder
    elif content == "transformer":
        from stylize_core.transformer_net import TransformerNet

        buf = io.BytesIO()
        torch.save(TransformerNet().state_dict(), buf)
        bad.write_bytes(buf.getvalue())
    elif content is not None:
        bad.write_bytes(content)
    spec = _spec(tmp_path, str(bad) if which == "encoder" else enc, str(bad) if which == "decoder" else dec)
    with pytest.raises(SetupError) as info:
        build_stylizer(spec, read)
    message = str(info.value)
    assert "\n" not in message and expect in message and str(bad) in message
    assert ("--encoder" if which == "encoder" else "--decoder") in message


def test_registry_builds_adain_with_identity_per_style_and_alpha(files, tmp_path):
    spec = _spec(tmp_path, str(files[0]), str(files[1]))
    built = build_stylizer(spec, read)
    again = build_stylizer(_spec(tmp_path, str(files[0]), str(files[1]), alpha=0.5), read)
    assert built.model_sha256["s"] != again.model_sha256["s"]
    assert built.stylizer.stylize([_image(1, 24, 24)], "s")[0].image.shape == (24, 24, 3)
    with pytest.raises(SetupError, match="decoder.pth"):  # pytorch-AdaIN's encoder needs its decoder
        build_stylizer(_spec(tmp_path, str(files[0]), ""), read)
    demo = build_stylizer(_spec(tmp_path, "", ""), read)  # neither: the shipped demo model
    assert demo.stylizer.stylize([_image(1, 24, 24)], "s")[0].image.shape == (24, 24, 3)
