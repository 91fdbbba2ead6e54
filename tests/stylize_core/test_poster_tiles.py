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
from stylize_core.poster import area_thumbnail, padded_input, plan_poster, record_stats, run_tile
from stylize_core.poster_plan import assemble
from stylize_core.tiling import TiledNetwork, thumbnail_size

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def demo():
    return load_style_model(demo_checkpoint()).model.eval()


def test_area_thumbnail_matches_torch_area_interpolation():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (301, 437, 3), dtype=np.uint8)
    for size in [(100, 150), (37, 211), (301, 437)]:
        ours = area_thumbnail(image, size, band=64)
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        ref = F.interpolate(x, size=size, mode="area")[0].permute(1, 2, 0).numpy()
        assert np.abs(ours - ref).max() < 1e-3


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
    stats = record_stats(demo, area_thumbnail(padded, size), CPU)
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
