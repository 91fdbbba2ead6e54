"""Tiled stylisation: shared instance-norm statistics, blended overlaps, seams, wrap-around tiles."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from media_samples import periodic_texture  # tests/media_samples.py

from jobs.common.run_settings import demo_checkpoint
from stylize_core.checkpoint import load_style_model
from stylize_core.norm_stats import SharedStats, norm_layers
from stylize_core.stylizer import Stylizer, StylizerConfig
from jobs.common.cli_settings import parse_bytes
from stylize_core.tile_budget import bytes_per_pixel, tile_side
from stylize_core.tiling import (TiledNetwork, axis_windows, seam_positions, seam_ratio, set_padding,
                                 wrap_ratio)
from stylize_core.transformer_net import NetConfig, TransformerNet


@pytest.fixture(scope="module")
def demo():
    return load_style_model(demo_checkpoint()).model.eval()


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """scikit-image's astronaut, (1, 3, 320, 384) float 0..255 (sides multiples of 4)."""
    x = torch.from_numpy(data.astronaut()[96:416, 64:448].copy()).permute(2, 0, 1)[None].float()
    return x.contiguous()


def _hwc(y: torch.Tensor) -> np.ndarray:
    return y[0].clamp(0, 255).round().permute(1, 2, 0).numpy()


@pytest.mark.parametrize("size,tile,wrap", [(1024, 512, False), (1000, 256, True), (300, 512, True), (256, 256, False),
                                             (640, 192, False), (100, 192, True)])
def test_windows_sum_to_one_and_start_on_the_network_grid(size, tile, wrap):
    wins = axis_windows(size, tile, wrap=wrap)
    total = torch.zeros(size, dtype=torch.float64)
    for w in wins:
        assert w.length <= tile and w.length % 4 == 0
        if not wrap:
            assert w.start % 4 == 0 and 0 <= w.start and w.start + w.length <= size
        total.index_add_(0, torch.arange(w.start, w.start + w.length) % size, w.weight.double())
    assert torch.allclose(total, torch.ones(size, dtype=torch.float64), atol=1e-6)
    if len(wins) > 1 or wrap:  # every shared edge discards its margin
        assert all(float(w.weight[:8].max()) == 0 for w in wins[1:] if not wrap)


def test_tile_too_small_for_the_overlap_is_refused():
    with pytest.raises(ValueError, match="tile side"):
        axis_windows(1000, 188)


@torch.inference_mode()
def test_tiles_with_the_whole_images_statistics_equal_the_untiled_output(demo, photo):
    full = demo(photo)
    tiled = TiledNetwork(demo, 192, thumbnail_pixels=photo.shape[-2] * photo.shape[-1])  # thumbnail = the image
    y = tiled(photo)
    assert tiled.last_tiles == 9
    assert float(full.clamp(0, 255).std()) > 20  # the demo network's output spans the range
    assert float((y - full).abs().max()) < 0.05  # the tiles' interiors are the whole image's output


@torch.inference_mode()
def test_tiles_without_shared_statistics_differ(demo, photo):
    """The test above can fail: tiles normalised on their own statistics are far off."""
    full = demo(photo)
    rows, cols = axis_windows(320, 192), axis_windows(384, 192)
    own = torch.zeros_like(full)
    for rw in rows:
        for cw in cols:
            t = demo(photo[..., rw.start : rw.start + rw.length, cw.start : cw.start + cw.length])
            own[..., rw.start : rw.start + rw.length, cw.start : cw.start + cw.length] += (
                t * rw.weight[:, None] * cw.weight[None, :])
    assert float((own.clamp(0, 255) - full.clamp(0, 255)).abs().mean()) > 3


@torch.inference_mode()
def test_thumbnail_statistics_stay_within_the_goal_and_show_no_seams(demo, photo):
    full = _hwc(demo(photo))
    tiled = TiledNetwork(demo, 192, thumbnail_pixels=240 * 288)  # statistics from a 3/4-side copy
    y = _hwc(tiled(photo))
    # 3.05 grey levels measured on this native-resolution crop with the demo network (trained with the
    # texture loss: its statistics change with scale; a half-side copy gives 11.2, the whole image 0)
    assert np.abs(y - full).mean() <= 4.0
    rows, cols = tiled.windows(320, 384)
    ratio = seam_ratio(y, seam_positions(rows, 320), seam_positions(cols, 384))
    assert ratio <= 1.15, ratio


def test_seam_ratio_sees_a_seam():
    img = np.tile(np.linspace(0, 100, 64)[None, :], (64, 1))
    img[:, 32:] += 30  # a step at column 32
    assert seam_ratio(img, [], [32]) > 5
    assert seam_ratio(img, [], [20]) == pytest.approx(1.0)


@torch.inference_mode()
def test_accumulated_statistics_over_tiles(demo, photo):
    """The first layer's statistics accumulated over the tiles' owned regions are the whole image's.
    212 rows: tiles whose owned parts, cut where they fall, would not meet on whole pixels at a
    quarter of the resolution (rows counted twice or not at all); cut at multiples of 4 they do."""
    photo = photo[..., :212, :].contiguous()
    shared, exact = SharedStats(), SharedStats()
    sizes = {}  # each norm layer's map size over the whole image
    def size(m, args):  # a pre-hook that returns nothing leaves the input as it is
        sizes.setdefault(m, args[0].shape[-2] * args[0].shape[-1])

    hooks = [m.register_forward_pre_hook(size) for m in norm_layers(demo)]
    with exact.recording(demo):
        demo(photo)
    for hook in hooks:
        hook.remove()
    tiled = TiledNetwork(demo, 192)
    with shared.recording(demo):
        demo(tiled.thumbnail(photo))
    first = norm_layers(demo)[0]
    assert not torch.allclose(shared.stats[first][0], exact.stats[first][0], atol=0.1)
    rows, cols = tiled.windows(212, 384)
    with shared.accumulating(demo):
        for rw in rows:
            for cw in cols:
                (top, bottom), (left, right) = rw.owned(), cw.owned()
                shared.own(top / rw.length, bottom / rw.length, left / cw.length, right / cw.length)
                demo(tiled._tile(photo, rw, cw))
    # every pixel of every layer counted once, at half and quarter resolution too
    assert {m: n for m, (n, _, _) in shared._sums.items()} == sizes and len(set(sizes.values())) == 3
    shared.finish_accumulation()
    torch.testing.assert_close(shared.stats[first][0], exact.stats[first][0], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(shared.stats[first][1], exact.stats[first][1], atol=1e-2, rtol=1e-4)
    out = TiledNetwork(demo, 192, stats="accumulate")(photo)
    assert out.shape == photo.shape and torch.isfinite(out).all()


@torch.inference_mode()
def test_exact_statistics_over_tiles_give_the_untiled_output(demo, photo):
    """Layer by layer over 2 x 2 forced tiles of a 196 x 196 crop: the whole image's statistics, so
    the untiled output (a 3/4-side thumbnail's statistics are 3 grey levels off on this photo, above)."""
    x = photo[..., 60:256, 100:296].contiguous()
    whole = SharedStats()
    with whole.recording(demo):  # normalises with its own statistics: the plain forward pass
        full = demo(x)
    tiled = TiledNetwork(demo, 192, stats="exact", cache_bytes=2**30)
    y = tiled(x)
    assert tiled.last_tiles == 4 and tiled.last_stage_runs == 4 * (len(norm_layers(demo)) + 1)  # one pass
    for layer in norm_layers(demo):  # the whole image's statistics, every layer
        mean, var = tiled.last_stats.stats[layer]
        torch.testing.assert_close(mean, whole.stats[layer][0], atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(var, whole.stats[layer][1], atol=1e-2, rtol=1e-3)
    assert float(full.clamp(0, 255).std()) > 20  # the demo network's output spans the range
    assert float((y.clamp(0, 255) - full.clamp(0, 255)).abs().mean()) < 0.05


def test_auto_statistics_are_exact_where_the_tiles_states_fit():
    from stylize_core.tiled_forward import TiledForward

    styles = {"demo": load_style_model(demo_checkpoint())}
    forward = TiledForward(StylizerConfig(device="cpu"), torch.device("cpu"), styles, {})  # 512 MiB, auto
    net = styles["demo"].model
    # the benchmark's photo: tiles of half the budget, the other half holds their states
    assert forward.side("demo", 1364, 2048) == 588
    assert forward._tiled(net, "demo", 588, 0, (1364, 2048)).stats_mode == "exact"
    # 24 MP: no states would fit (exact: ~5x thumbnail's time), so thumbnail, with tiles of the budget
    assert forward.side("demo", 4000, 6000) == 832
    assert forward._tiled(net, "demo", 832, 0, (4000, 6000)).stats_mode == "thumbnail"


def test_statistics_must_be_recorded_first(demo, photo):
    with pytest.raises(RuntimeError, match="record them first"), SharedStats().applying(demo), torch.inference_mode():
        demo(photo[..., :64, :64])
    assert all(m.shared_stats is None for m in norm_layers(demo))  # the hook is always removed


@torch.inference_mode()
def test_multi_style_network_with_conditional_instance_norm():
    torch.manual_seed(0)
    net = TransformerNet(NetConfig(width=0.25, num_styles=3)).eval()
    for m in norm_layers(net):  # non-trivial per-style scales and shifts
        m.weight.normal_(1.0, 0.5)
        m.bias.normal_(0.0, 0.5)
    x = torch.rand(1, 3, 192, 320) * 255
    style = torch.tensor([0.2, 0.5, 0.3])
    full = net(x, style)
    y = TiledNetwork(net, 192, thumbnail_pixels=192 * 320)(x, style)
    assert float(full.std()) > 0.1
    assert float((y - full).abs().max()) < 1e-3 * float(full.abs().max())
    exact = TiledNetwork(net, 192, stats="exact", cache_bytes=2**30)  # the same, layer by layer
    assert float((exact(x, style) - full).abs().max()) < 1e-3 * float(full.abs().max())
    # nothing kept between layers: every layer recomputed from the input tiles, the same output
    recomputed = TiledNetwork(net, 192, stats="exact", cache_bytes=0)
    assert float((recomputed(x, style) - exact(x, style)).abs().max()) < 1e-4 * float(full.abs().max())
    assert recomputed.last_stage_runs > 5 * exact.last_stage_runs


SEAMLESS = 1.6  # wrap_ratio bound for the demo network's outputs


@torch.inference_mode()
def test_wrap_tiles_and_circular_padding_give_seamless_output(demo):
    texture = torch.from_numpy(periodic_texture(206, 238))[None]  # sides not multiples of 4
    assert wrap_ratio(_hwc(texture)) <= 1.3  # the input repeats without a seam
    plain = _hwc(demo(F.pad(texture, (0, 2, 0, 2), mode="reflect"))[..., :206, :238])
    circular = set_padding(copy.deepcopy(demo), "circular")  # a copy: the module's demo stays reflective
    tiled = TiledNetwork(circular, 192, wrap=True)
    seamless = _hwc(tiled(texture))
    assert tiled.last_tiles == tiled.count(206, 238) > 1
    assert seamless.std() > 20
    # One column's gradient against the mean of all is noisy on the demo's sharp mosaic: measured 1.44
    # here (the input's own 1.21), 1.30 whole, against 9.6 where reflection padding meets its copy
    assert wrap_ratio(seamless) <= SEAMLESS
    assert wrap_ratio(plain) > 3 * SEAMLESS  # reflection padding shows where copies meet
    whole = _hwc(circular(torch.from_numpy(periodic_texture(204, 236, seed=1))[None]))  # multiples of 4: exact
    assert wrap_ratio(whole) <= SEAMLESS


def test_set_padding_round_trip(demo):
    net = set_padding(load_style_model(demo_checkpoint()).model, "circular")
    assert not any(isinstance(m, torch.nn.ReflectionPad2d) for m in net.modules())
    set_padding(net, "reflect")
    assert not any(isinstance(m, torch.nn.CircularPad2d) for m in net.modules())
    with pytest.raises(ValueError):
        set_padding(net, "zeros")


def test_budget_model():
    assert parse_bytes("2GiB") == 2 * 2**30 and parse_bytes("1.5GB") == 1_500_000_000 and parse_bytes(4096) == 4096
    for bad in ("lots", "-1", "5 parsecs"):
        with pytest.raises(ValueError):
            parse_bytes(bad)
    per = bytes_per_pixel()
    assert 700 <= per <= 900  # the measured ~800 B/px of the default network (tile_budget.MEASURED)
    assert bytes_per_pixel(NetConfig(width=0.25)) < per / 3 and bytes_per_pixel(bf16=True) == per // 2
    budget = 512 * 2**20
    assert tile_side(1000, 600, per_pixel=per, budget=budget) == 0  # fits
    side = tile_side(6000, 4000, per_pixel=per, budget=budget)
    assert side % 4 == 0 and side * side * per <= budget < (side + 8) ** 2 * per
    assert tile_side(300, 200, per_pixel=per, budget=budget, forced=256) == 256
    assert tile_side(200, 200, per_pixel=per, budget=budget, forced=256) == 0


def test_stylizer_tiles_with_forced_tile_and_budget(photo):
    from stylize_core.checkpoint import load_style_model as load

    image = photo[0].permute(1, 2, 0).round().to(torch.uint8).numpy()[:318, :381]  # odd sizes: padded
    styles = {"demo": load(demo_checkpoint())}
    plain = Stylizer(styles, None, StylizerConfig(device="cpu", metrics=False)).stylize([image], "demo")[0]
    forced = Stylizer(styles, None, StylizerConfig(device="cpu", metrics=False, tile=192)).stylize([image], "demo")[0]
    budget = Stylizer(styles, None, StylizerConfig(device="cpu", metrics=False, max_memory=200 * 200 * 830)
                      ).stylize([image, image[:100, :100]], "demo")
    assert plain.tiles == 1 and forced.tiles == 9 and budget[0].tiles > 1 and budget[1].tiles == 1
    assert forced.image.shape == budget[0].image.shape == image.shape
    # forced tiles take the whole image's statistics (it fits the default budget): the same output
    assert np.abs(forced.image.astype(float) - plain.image).mean() <= 0.05
    # the small budget's statistics come from a ~0.57-side thumbnail: 3.8 grey levels measured with the
    # demo network (its texture changes with scale; docs/benchmarks_large.md)
    assert np.abs(budget[0].image.astype(float) - plain.image).mean() <= 6.0
    assert budget[1].image.shape == (100, 100, 3)
    texture = periodic_texture(206, 238).round().astype(np.uint8).transpose(1, 2, 0)
    seamless = Stylizer(styles, None, StylizerConfig(device="cpu", metrics=False, tileable=True)).stylize([texture], "demo")[0]
    reflected = Stylizer(styles, None, StylizerConfig(device="cpu", metrics=False)).stylize([texture], "demo")[0]
    assert seamless.image.shape == texture.shape and wrap_ratio(seamless.image) <= SEAMLESS < wrap_ratio(reflected.image)


ASSETS = __import__("pathlib").Path(__file__).resolve().parents[2] / "stylize_core" / "assets"


@torch.inference_mode()
def test_enhancement_network_tiles_are_placed_at_the_output_scale(photo):
    """sr2 (no norm layers: nothing shared) in 9 forced tiles: its output, at twice the input's sides."""
    sm = load_style_model(str(ASSETS / "enhance_sr2.pth"))
    net = sm.model.eval()
    assert not norm_layers(net)  # no statistics to share
    x = photo[..., :240, :256]  # (1, 3, 240, 256)
    full = net(x)  # (1, 3, 480, 512)
    tiled = TiledNetwork(net, 192)
    y = tiled(x)
    assert tiled.last_tiles == 4 and y.shape == full.shape == (1, 3, 480, 512)
    assert float((full - net.base(x)).std()) > 1  # the network adds detail to the bicubic upscale
    assert float((y - full).abs().max()) < 0.05
    windows = axis_windows(256, 192, scale=2)
    assert [(w.start, w.length) for w in windows] == [(2 * w.start, 2 * w.length) for w in axis_windows(256, 192)]
    total = torch.zeros(512, dtype=torch.float64)
    for w in windows:
        total[w.start : w.start + w.length] += w.weight.double()
    assert torch.allclose(total, torch.ones(512, dtype=torch.float64), atol=1e-6)


def test_stylizer_tiles_enhancement_networks_by_their_budget(photo):
    """--tile and --max-memory reach sr2: tiles of the input, an output at twice its size."""
    from stylize_core.tile_budget import enhance_bytes_per_pixel

    sm = load_style_model(str(ASSETS / "enhance_sr2.pth"))
    image = photo[0].permute(1, 2, 0).round().to(torch.uint8).numpy()[:318, :381]  # odd sizes: padded
    plain = Stylizer({"sr2": sm}, None, StylizerConfig(device="cpu", metrics=False)).stylize([image], "sr2")[0]
    budget = 200 * 200 * enhance_bytes_per_pixel(sm.model.arch)
    small = Stylizer({"sr2": sm}, None, StylizerConfig(device="cpu", metrics=False, max_memory=budget)
                     ).stylize([image], "sr2")[0]
    assert plain.tiles == 1 and small.tiles == 4
    assert small.image.shape == plain.image.shape == (636, 762, 3)
    assert np.abs(small.image.astype(float) - plain.image).max() <= 1
