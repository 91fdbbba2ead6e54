"""Gatys image optimisation: random-weight VGG19 and a 1x1-conv stand-in, tiny images, CPU."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from stylize_core.color import rgb_to_yiq
from stylize_core.gatys import GatysConfig, GatysResult, gatys_vgg, optimize_image, pyramid_sizes
from stylize_core.losses import image_to_tensor
from stylize_core.vgg import VGGFeatures

TRACE_KEYS = {"level", "step", "size", "content", "style", "tv", "total"}


def _image(h: int, w: int, seed: int, lo: int = 0, hi: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core box OpenMP's spinning
    threads made these tests ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vgg() -> VGGFeatures:
    return gatys_vgg("vgg19", "random:0")


class StandIn(nn.Module):
    """Two 1x1-conv 'layers' named like VGG's; records the sizes it is called with."""

    def __init__(self, out: str = "finite") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 1)
        self.conv2 = nn.Conv2d(8, 16, 1)
        self.out = out
        self.seen: list[tuple[int, int]] = []
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append((int(x.shape[-2]), int(x.shape[-1])))
        a = torch.relu(self.conv1(x / 127.5 - 1.0))  # (B, 8, H, W)
        b = torch.relu(self.conv2(nn.functional.avg_pool2d(a, 2)))  # (B, 16, H/2, W/2)
        if self.out == "nan":
            b = b * float("nan")
        return {"relu1_1": a, "relu2_1": b}


STAND_IN = dict(content_layers=("relu1_1",), style_layers=("relu1_1", "relu2_1"))


def test_gatys_vgg_builds_exactly_the_needed_layers(vgg: VGGFeatures) -> None:
    assert set(vgg.layers) == set(GatysConfig().for_network("vgg19").layers) and not GatysConfig().layers
    assert vgg.loss_model == "vgg19/random:0"
    small = gatys_vgg("vgg16", "random:1", GatysConfig(content_layers=("relu2_2",), style_layers=("relu1_2",)))
    assert small.layers == ("relu1_2", "relu2_2")


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_loss_goes_down(vgg: VGGFeatures, optimizer: str) -> None:
    content, style = _image(32, 32, 0), _image(40, 48, 1)
    cfg = GatysConfig(optimizer=optimizer, steps=12, init="noise")
    result = optimize_image(content, style, vgg, cfg)
    assert isinstance(result, GatysResult) and result.loss_model == "vgg19/random:0"
    assert result.image.dtype == np.uint8 and result.image.shape == (32, 32, 3)
    assert len(result.trace) == 12 and all(set(e) == TRACE_KEYS for e in result.trace)
    first, last = result.trace[0], result.trace[-1]
    assert last["total"] < {"lbfgs": 0.8, "adam": 0.95}[optimizer] * first["total"]
    assert [e["step"] for e in result.trace] == list(range(12))
    # total is the weighted sum of the unweighted terms
    assert last["total"] == pytest.approx(
        last["content"] * cfg.content_weight + last["style"] * cfg.style_weight + last["tv"] * cfg.tv_weight, rel=1e-4
    )


def test_inits(vgg: VGGFeatures) -> None:
    content, style = _image(24, 24, 2), _image(24, 24, 3)  # same size: "style" init is the style itself
    firsts = {}
    for init in ("content", "noise", "style"):
        result = optimize_image(content, style, vgg, GatysConfig(init=init, steps=1))
        assert result.image.shape == (24, 24, 3) and result.image.dtype == np.uint8
        firsts[init] = result.trace[0]
    assert firsts["content"]["content"] == 0.0 and firsts["content"]["style"] > 0
    assert firsts["style"]["style"] == pytest.approx(0.0, abs=1e-12) and firsts["style"]["content"] > 0
    assert firsts["noise"]["content"] > 0 and firsts["noise"]["style"] > 0


def test_noise_init_is_deterministic_per_seed() -> None:
    content, style = _image(24, 20, 4), _image(16, 16, 5)
    run = lambda seed: optimize_image(content, style, StandIn(), GatysConfig(**STAND_IN, init="noise", seed=seed, steps=5))  # noqa: E731
    a, b, c = run(7), run(7), run(8)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.trace == b.trace
    assert a.trace[0]["total"] != c.trace[0]["total"]
    assert not np.array_equal(a.image, c.image)


def test_pyramid_sizes() -> None:
    assert pyramid_sizes(45, 37, 3, 16) == [(19, 16), (23, 19), (45, 37)]
    assert pyramid_sizes(256, 128, 3, 16) == [(64, 32), (128, 64), (256, 128)]
    assert pyramid_sizes(256, 128, 3, 48) == [(96, 48), (128, 64), (256, 128)]
    assert pyramid_sizes(32, 32, 3, 64) == [(32, 32)]  # levels that would not differ are merged
    assert pyramid_sizes(37, 45, 1, 64) == [(37, 45)]


@pytest.mark.parametrize("shape", [(45, 37), (37, 45)])
def test_pyramid_run_keeps_exact_size(vgg: VGGFeatures, shape: tuple[int, int]) -> None:
    content, style = _image(*shape, 6), _image(32, 32, 7)
    cfg = GatysConfig(pyramid_levels=3, pyramid_min_side=16, steps=2, init="noise")
    result = optimize_image(content, style, vgg, cfg)
    assert result.image.shape == (*shape, 3) and result.image.dtype == np.uint8
    levels = [e["level"] for e in result.trace]
    assert levels == [0, 0, 1, 1, 2, 2]
    sizes = [tuple(result.trace[i]["size"]) for i in (0, 2, 4)]
    assert sizes[-1] == shape
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(sizes, sizes[1:]))
    assert min(sizes[0]) >= 16


def test_preserve_color_keeps_content_chrominance(vgg: VGGFeatures) -> None:
    content = _image(24, 24, 8, 70, 190)
    style = np.zeros((24, 24, 3), np.uint8)
    style[..., 0], style[..., 2] = 230, 40  # strongly coloured, so a colour-keeping bug shows
    base = dict(steps=3, init="style")
    plain = optimize_image(content, style, vgg, GatysConfig(**base))
    kept = optimize_image(content, style, vgg, GatysConfig(**base, preserve_color=True))
    yiq = lambda img: rgb_to_yiq(image_to_tensor(img))[0]  # noqa: E731  (3, H, W)
    c, p, k = yiq(content), yiq(plain.image), yiq(kept.image)
    kept_err = (k[1:] - c[1:]).abs().mean().item()
    plain_err = (p[1:] - c[1:]).abs().mean().item()
    assert kept_err < 1.5, kept_err
    assert plain_err > 20 * kept_err
    # luminance is the optimised result's (same deterministic run)
    assert (k[0] - p[0]).abs().mean().item() < 2.0
    assert plain.trace == kept.trace


def test_missing_layers_raise() -> None:
    partial = VGGFeatures("vgg19", layers=("relu1_1", "relu2_1"), weights="random:0")
    with pytest.raises(ValueError, match="relu4_2"):
        optimize_image(_image(32, 32, 0), _image(32, 32, 1), partial, GatysConfig(steps=1))
    with pytest.raises(ValueError, match="relu3_1"):  # an extractor without `.layers`: checked on use
        optimize_image(_image(16, 16, 0), _image(16, 16, 1), StandIn(),
                       GatysConfig(content_layers=("relu1_1",), style_layers=("relu3_1",), steps=1))


def test_callback_receives_every_entry() -> None:
    seen: list[dict] = []
    result = optimize_image(_image(16, 16, 0), _image(16, 16, 1), StandIn(),
                            GatysConfig(**STAND_IN, steps=6, init="noise"), callback=seen.append)
    assert len(seen) == 6 and seen == result.trace


def test_log_every(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="stylize_core.gatys"):
        optimize_image(_image(16, 16, 0), _image(16, 16, 1), StandIn(),
                       GatysConfig(**STAND_IN, steps=5, optimizer="adam", log_every=2))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"gatys level 0 [16, 16] step {i}" for i in (0, 2, 4)]


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_runs_inside_inference_mode(vgg: VGGFeatures, optimizer: str) -> None:
    with torch.inference_mode():
        result = optimize_image(_image(24, 24, 9), _image(24, 24, 10), vgg,
                                GatysConfig(optimizer=optimizer, steps=3, init="noise"))
        assert torch.is_inference_mode_enabled()
    assert result.image.shape == (24, 24, 3) and result.image.dtype == np.uint8
    assert result.trace[-1]["total"] < result.trace[0]["total"]


def test_loss_network_built_in_inference_mode_is_refused() -> None:
    with torch.inference_mode():
        net = StandIn()
    with pytest.raises(ValueError, match="inference_mode"):
        optimize_image(_image(16, 16, 0), _image(16, 16, 1), net, GatysConfig(**STAND_IN, steps=1))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_content_only_reconstructs_content(optimizer: str) -> None:
    content = _image(16, 16, 11)
    cfg = GatysConfig(**STAND_IN, style_weight=0.0, tv_weight=0.0, init="noise", steps=40, optimizer=optimizer,
                      lr=10.0 if optimizer == "adam" else None)
    result = optimize_image(content, _image(16, 16, 12), StandIn(), cfg)
    err = np.abs(result.image.astype(int) - content.astype(int)).mean()
    assert err < 20, err  # two independent uniform images differ by ~85 on average
    assert result.trace[-1]["content"] < 0.2 * result.trace[0]["content"]


def test_content_only_from_content_is_a_fixed_point() -> None:
    content = _image(16, 16, 13)
    for optimizer in ("lbfgs", "adam"):
        cfg = GatysConfig(**STAND_IN, style_weight=0.0, tv_weight=0.0, steps=5, optimizer=optimizer)
        result = optimize_image(content, _image(16, 16, 14), StandIn(), cfg)
        np.testing.assert_array_equal(result.image, content)
        assert all(e["total"] == 0.0 for e in result.trace)


def test_a_float_content_is_optimised_and_returned_in_float() -> None:
    """A 16-bit input's content (float32 between the 8-bit steps) comes back float32, not rounded: with
    only the content loss, starting from the content, the result is the content itself."""
    content = _image(16, 16, 13).astype(np.float32) + np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    cfg = GatysConfig(**STAND_IN, style_weight=0.0, tv_weight=0.0, steps=3)
    result = optimize_image(content, _image(16, 16, 14), StandIn(), cfg)
    assert result.image.dtype == np.float32 and np.abs(result.image - content).mean() < 0.05
    assert np.abs(result.image - np.rint(content)).mean() > 0.2  # not its 8-bit rounding (0.25 apart on average)
    styled = optimize_image(content, _image(16, 16, 14), StandIn(), GatysConfig(**STAND_IN, steps=3))
    assert styled.image.dtype == np.float32 and np.abs(styled.image - np.rint(styled.image)).mean() > 0.1  # unrounded


def test_lbfgs_is_insensitive_to_the_overall_loss_scale() -> None:
    """The L-BFGS objective is rescaled per level, so multiplying every weight changes little."""
    content, style = _image(16, 16, 15), _image(16, 16, 16)
    base = dict(**STAND_IN, init="noise", steps=15)
    a = optimize_image(content, style, StandIn(), GatysConfig(**base, content_weight=1.0, style_weight=1e3, tv_weight=1e-2))
    b = optimize_image(content, style, StandIn(), GatysConfig(**base, content_weight=1e-6, style_weight=1e-3, tv_weight=1e-8))
    ratio_a = a.trace[-1]["total"] / a.trace[0]["total"]
    ratio_b = b.trace[-1]["total"] / b.trace[0]["total"]
    assert ratio_a < 0.5 and ratio_b == pytest.approx(ratio_a, rel=0.05)


def test_style_size_and_scales_reach_the_extractor() -> None:
    net = StandIn()
    optimize_image(_image(16, 16, 0), _image(60, 40, 1), net,
                   GatysConfig(**STAND_IN, steps=1, style_size=30, style_scales=(1.0, 0.5)))
    assert net.seen[:2] == [(30, 20), (16, 16)]  # style at long side 30, then at half scale (min 16)


def test_non_finite_loss_raises() -> None:
    with pytest.raises(FloatingPointError, match="non-finite"):
        optimize_image(_image(16, 16, 0), _image(16, 16, 1), StandIn(out="nan"), GatysConfig(**STAND_IN, steps=3))


def test_bad_inputs_and_config() -> None:
    with pytest.raises(ValueError, match="optimizer"):
        GatysConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="init"):
        GatysConfig(init="zeros")
    assert GatysConfig(optimizer="adam").learning_rate == 2.0
    assert GatysConfig().learning_rate == 1.0 and GatysConfig(lr=0.5).learning_rate == 0.5
    with pytest.raises(ValueError, match="uint8 or float32"):
        optimize_image(_image(16, 16, 0).astype(np.float64), _image(16, 16, 1), StandIn(), GatysConfig(**STAND_IN))
    with pytest.raises(ValueError, match="style must be an .H, W, 3. uint8 RGB"):
        optimize_image(_image(16, 16, 0), _image(16, 16, 1).astype(np.float32), StandIn(), GatysConfig(**STAND_IN))
    readonly = _image(16, 16, 2)
    readonly.flags.writeable = False  # Ray batches are read-only
    result = optimize_image(readonly, _image(16, 16, 3), StandIn(), GatysConfig(**STAND_IN, steps=2))
    assert result.image.shape == (16, 16, 3)
