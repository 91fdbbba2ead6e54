"""A poster's tiles run apart (stylize_core.poster, stylize_core.poster_plan) equal TiledNetwork's
thumbnail-statistics pass over the whole image; the writer's band-wise sum needs only the tiles."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from jobs.common.run_settings import demo_checkpoint
from stylize_core.bucketing import pad_to
from stylize_core.checkpoint import load_style_model
from stylize_core.poster import padded_input, plan_poster, record_stats, run_tile
from stylize_core.losses import tv_loss
from stylize_core.poster_plan import Thumbnail, TotalVariation, assemble, metric_thumbnail_size, thumbnail
from stylize_core.tiling import TiledNetwork, thumbnail_size

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def demo():
    return load_style_model(demo_checkpoint()).model.eval()


def test_thumbnail_matches_torch_area_interpolation():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (301, 437, 3), dtype=np.uint8)
    for size in [(100, 150), (37, 211), (301, 437)]:
        ours = thumbnail(image, size, band=64)
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        ref = F.interpolate(x, size=size, mode="area")[0].permute(1, 2, 0).numpy()
        assert np.abs(ours - ref).max() < 1e-3


def test_band_thumbnails_and_total_variation_equal_the_loss_meters_on_the_whole_image():
    """The writer's metrics of a poster, made from bands of rows of odd heights, equal what the loss
    meter computes on the whole float image: its antialiased bilinear resize, and tv_loss."""
    rng = np.random.default_rng(1)
    image = rng.random((503, 777, 3)) * 20 + np.linspace(0, 60, 777)[None, :, None]
    image[[1, 97, 98, 400]] += 150  # steps where the bands meet: pairs a band-by-band sum could miss
    image = image.astype(np.float32)
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    bands = [image[a:b] for a, b in [(0, 1), (1, 97), (97, 98), (98, 400), (400, 503)]]
    for size in [(128, 198), (503, 256), (40, 777), (17, 23)]:
        thumb, tv = Thumbnail(size, "bilinear"), TotalVariation()
        for band in bands:
            thumb.add(band, chunk=50)
            tv.add(band, chunk=50)
        ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)[0].permute(1, 2, 0)
        assert np.abs(thumb.result() - ref.numpy()).max() < 0.02  # of 0..255: float32 weights in torch
        assert abs(tv.value - tv_loss(x).item()) < 1e-4 * tv.value
    flat = TotalVariation()
    flat.add(np.full((1, 5, 3), 7.0, np.float32))
    assert flat.value == 0.0  # one row: no vertical pairs, as tv_loss
    assert metric_thumbnail_size(300, 900, (256, 768)) == (256, 768)
    assert metric_thumbnail_size(10, 900, (16, 1440)) == (10, 900)  # the meter scales tiny images up itself


def test_plan_pads_like_the_stylizer_and_tiles_cover_the_padded_image():
    plan = plan_poster(298, 317, 192)
    assert plan.padded == (300, 320) and plan.tiles == 9  # as the CLI tiles it (test_tiles_jobs)
    image = np.random.default_rng(1).integers(0, 256, (298, 317, 3), dtype=np.uint8)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    ref, pads = pad_to(x, plan.padded)
    assert pads == (plan.pads[2], plan.pads[3], plan.pads[0], plan.pads[1])
    assert np.array_equal(padded_input(image, plan), ref[0].permute(1, 2, 0).numpy().astype(np.uint8))
    assert pickle.loads(pickle.dumps(plan)) == plan  # travels between processes


def test_tiles_run_apart_equal_the_tiled_network(demo):
    image = np.ascontiguousarray(data.astronaut()[40:338, 60:377])  # 298 x 317, not multiples of 4
    plan = plan_poster(*image.shape[:2], 192)
    padded = padded_input(image, plan)
    size = thumbnail_size(*plan.padded, 200 * 200)  # a real thumbnail: statistics of a downscaled copy
    stats = record_stats(demo, thumbnail(padded, size), CPU)
    stats = pickle.loads(pickle.dumps(stats))  # as a Ray object would carry them
    calls = []

    def tile(t: int) -> np.ndarray:
        calls.append(t)
        return run_tile(demo, plan.tile_of(padded, t), stats, plan, t, CPU)

    out = assemble(plan, tile, lambda rows: np.clip(rows, 0, 255))
    assert sorted(calls) == list(range(plan.tiles)) and out.shape == (298, 317, 3)

    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        whole = TiledNetwork(demo, 192, stats="thumbnail", thumbnail_pixels=200 * 200)(x)
    top, _, left, _ = plan.pads
    ref = whole[0].clamp(0, 255).permute(1, 2, 0).numpy()[top : top + 298, left : left + 317]
    assert ref.std() > 20  # the demo network's output spans the range: equality means something
    assert np.abs(out - ref).max() < 0.05


def test_assemble_sums_weighted_tiles_to_the_constant():
    plan = plan_poster(500, 260, 192)  # three rows of tiles, two columns
    ones = np.ones((*plan.padded, 3), np.float32) * 100
    out = assemble(plan, lambda t: run_weights(plan, t) * plan.tile_of(ones, t),
                   lambda rows: np.rint(rows).astype(np.uint8))
    assert out.shape == (500, 260, 3) and out.dtype == np.uint8 and (out == 100).all()


def run_weights(plan, t):
    from stylize_core.tiling import axis_windows

    (r0, _), (c0, _) = plan.window(t)
    rw = next(w for w in axis_windows(plan.padded[0], plan.side) if w.start == r0)
    cw = next(w for w in axis_windows(plan.padded[1], plan.side) if w.start == c0)
    return (rw.weight[:, None] * cw.weight[None, :]).numpy()[:, :, None]
