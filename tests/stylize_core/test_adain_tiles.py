"""AdaIN in tiles (stylize_core.adain_tiles): the whole image's content statistics summed over the
tiles, so the tiled output is the one-pass output; the demo model, whose outputs span the range."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from stylize_core.adain import AdaINStylizer
from stylize_core.adain_checkpoint import load_adain
from stylize_core.adain_tiles import (TiledAdaIN, adain_bytes_per_pixel, adain_tile_side, grid_windows,
                                      smallest_tile)
from stylize_core.demo_assets import demo_adain


@pytest.fixture(scope="module")
def weights():
    return load_adain(None, demo_adain(), lambda uri: open(uri, "rb").read())


def _photo(w: int, h: int) -> np.ndarray:
    return np.array(Image.fromarray(data.astronaut()).resize((w, h), Image.Resampling.LANCZOS))


def _stylizer(weights, **kw) -> AdaINStylizer:
    return AdaINStylizer(weights.encoder, weights.decoder, {"c": data.coffee()[::4, ::4].copy()}, {"c": [("c", 1.0)]},
                         device="cpu", alpha=0.8, **kw)


def test_tiles_with_the_whole_images_statistics_give_the_one_pass_output(weights):
    photo = _photo(456, 336)  # multiples of 8: the same pooling grid as one pass
    whole = _stylizer(weights).stylize([photo], "c")[0]
    tiled = _stylizer(weights, tile=smallest_tile()).stylize([photo], "c")[0]
    assert whole.tiles == 1 and tiled.tiles == 4
    assert whole.image.std() > 30 and np.abs(whole.image.astype(int) - photo).mean() > 20  # it styles
    diff = np.abs(tiled.image.astype(int) - whole.image)
    assert diff.max() <= 1 and diff.mean() < 0.01  # rounding only


def test_other_sizes_differ_only_near_the_bottom_and_right_edges(weights):
    photo = _photo(459, 341)  # padded to 464 x 344 for the tiles; one pass pools with ceil_mode instead
    whole = _stylizer(weights).stylize([photo], "c")[0].image.astype(int)
    tiled = _stylizer(weights, tile=smallest_tile()).stylize([photo], "c")[0].image
    diff = np.abs(tiled - whole)
    # measured: 0.72 overall (issue 19's goal for tiles against one pass: <= 1.5), 0.19 (max 8) farther than
    # 48 px from those edges, where the statistics' small shift is all that differs
    assert diff.shape == (341, 459, 3) and diff.mean() < 1.5
    assert diff[:-48, :-48].mean() < 0.4


def test_features_not_kept_are_encoded_again_with_the_same_result(weights):
    x = torch.from_numpy(_photo(456, 336)).permute(2, 0, 1)[None].float() / 255
    s = _stylizer(weights)
    kept = TiledAdaIN(s.encoder, s.decoder, smallest_tile(), keep_bytes=1 << 30)
    again = TiledAdaIN(s.encoder, s.decoder, smallest_tile(), keep_bytes=0)
    with torch.inference_mode():
        a, = kept(x, [s._target("c")])
        b, = again(x, [s._target("c")])
    assert kept.encodes == 4 and again.encodes == 8
    assert torch.equal(a, b)


def test_tile_side_from_the_budget_or_forced():
    per_pixel = adain_bytes_per_pixel(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.Conv2d(3, 16, 3)))
    assert per_pixel == 11 * 16 + 150
    assert adain_tile_side(1000, 1000, per_pixel=per_pixel, budget=per_pixel * 10**6) == 0  # fits
    side = adain_tile_side(2000, 2000, per_pixel=per_pixel, budget=per_pixel * 10**6)
    assert side == 1000 and side % 8 == 0
    assert adain_tile_side(500, 700, per_pixel=per_pixel, budget=1 << 40, forced=413) == 408
    assert adain_tile_side(300, 300, per_pixel=per_pixel, budget=1 << 40, forced=400) == 0  # fits the forced side
    with pytest.raises(ValueError, match=f"at least {smallest_tile()}"):
        adain_tile_side(500, 700, per_pixel=per_pixel, budget=1 << 40, forced=smallest_tile() - 8)
    assert all(w.start % 8 == 0 and w.length % 8 == 0 for w in grid_windows(1208, 400))


def test_a_regions_style_tiles_with_each_regions_statistics_over_the_whole_image(weights):
    """Per-region AdaIN (stylize_core.regions) in tiles: every region's weighted statistics summed over
    the tiles, so the output is the one pass's; bands cross the tiles' seams."""
    from stylize_core.masks import label_weights
    from stylize_core.regions import adain_regions

    photo = _photo(456, 336)
    labels = np.zeros((336, 456), np.int32)
    labels[:, 100:300], labels[:, 300:] = 1, 2  # 0 | 1 | 2 in vertical bands
    planes = label_weights(labels, 2, px=6)
    styles = {"a": data.coffee()[::4, ::4].copy(), "b": data.chelsea()[::4, ::4].copy()}

    def render(**kw):
        s = AdaINStylizer(weights.encoder, weights.decoder, styles, {k: [(k, 1.0)] for k in styles}, device="cpu",
                          alpha=0.9, **kw)
        return adain_regions(s, photo, planes, ["a", "b"]).astype(int), s

    whole, _ = render()
    tiled, s = render(tile=smallest_tile())
    assert s.tiler(336, 456).count(336, 456) == 4
    assert np.abs(whole[:, 110:290] - photo[:, 110:290]).mean() > 20  # the regions are styled
    assert np.array_equal(whole[:, :90], photo[:, :90])  # label 0: the input
    diff = np.abs(tiled - whole)
    assert diff.max() <= 1 and diff.mean() < 0.01
