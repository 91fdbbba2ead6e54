"""Masks: decoding (grey, RGB, RGBA, labels), size checks, feathering, and composites of the shipped demo
network's output over a real photograph, checked pixel for pixel."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data

from jobs.common.run_settings import demo_checkpoint
from stylize_core.checkpoint import load_style_model
from stylize_core.masks import (MaskError, check_size, composite, composite_labels, decode_mask, feather, fit_mask,
                                label_weights, region_weights)
from stylize_core.stylizer import Stylizer, StylizerConfig

H, W = 128, 160


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """(the astronaut's face, the demo network's output of it), both (128, 160, 3) uint8."""
    image = np.ascontiguousarray(data.astronaut()[40:40 + H, 150:150 + W])
    styles = {"demo": load_style_model(demo_checkpoint())}
    styled = Stylizer(styles, None, StylizerConfig(device="cpu", metrics=False)).stylize([image], "demo")[0].image
    diff = np.abs(image.astype(int) - styled.astype(int))
    assert styled.std() > 20 and diff.mean() > 20  # the two differ enough for a wrong blend to show
    return image, styled


def _halves() -> np.ndarray:
    m = np.zeros((H, W), np.float32)
    m[:, W // 2:] = 1
    return m


def test_black_and_white_masks_give_the_input_and_the_output_exactly(pair):
    image, styled = pair
    assert np.array_equal(composite(image, styled, np.zeros((H, W))), image)
    assert np.array_equal(composite(image, styled, np.ones((H, W))), styled)
    out = composite(image, styled, _halves())
    assert np.array_equal(out[:, : W // 2], image[:, : W // 2]) and np.array_equal(out[:, W // 2:], styled[:, W // 2:])


def test_grey_is_the_rounded_halfway_blend(pair):
    image, styled = pair
    out = composite(image, styled, np.full((H, W), 0.5, np.float32))
    want = np.floor((image.astype(np.float64) + styled) / 2 + 0.5)
    assert np.array_equal(out, want.astype(np.uint8))
    assert decode_mask(_png(Image.new("L", (4, 4), 128)))[0, 0] == pytest.approx(128 / 255)


def test_feathering_is_a_band_of_width_px_around_the_edge(pair):
    image, styled = pair
    px = 12
    weights = feather(_halves(), px)
    out = composite(image, styled, weights).astype(int)
    edge = W // 2
    assert np.abs(out[:, : edge - px] - image[:, : edge - px]).max() <= 1  # black side, past the band
    assert np.abs(out[:, edge + px:] - styled[:, edge + px:]).max() <= 1  # white side, past the band
    band = weights[0, edge - px: edge + px]
    assert np.all(np.diff(band) > 0) and 0.4 < weights[0, edge - 1] < 0.5 < weights[0, edge] < 0.6  # smooth, centred
    mid = out[:, edge - 2: edge + 2]  # inside the band: strictly between input and output where they differ
    lo, hi = np.minimum(image, styled)[:, edge - 2: edge + 2], np.maximum(image, styled)[:, edge - 2: edge + 2]
    assert np.all((mid >= lo) & (mid <= hi))
    assert np.array_equal(feather(_halves(), 0), _halves())
    with pytest.raises(ValueError):
        feather(_halves(), -1)


def test_labels_put_each_style_in_its_region(pair):
    image, styled = pair
    other = 255 - styled  # a second "style" that differs from both
    labels = np.zeros((H, W), np.int32)
    labels[:, 60:110] = 1
    labels[:, 110:] = 2
    out = composite_labels(image, [styled, other], labels)
    assert np.array_equal(out[:, :60], image[:, :60])
    assert np.array_equal(out[:, 60:110], styled[:, 60:110])
    assert np.array_equal(out[:, 110:], other[:, 110:])
    weights = label_weights(labels, 2, 6)
    assert np.allclose(weights.sum(0), 1, atol=1e-5)  # feathered one-hot weights still sum to one
    soft = composite_labels(image, [styled, other], labels, 6).astype(int)
    assert np.abs(soft[:, 75:95] - styled[:, 75:95]).max() <= 1  # farther than 6 px from both borders
    assert np.abs(soft[:, :54] - image[:, :54]).max() <= 1
    # one file per style: style 2's region, the input elsewhere
    region = composite(image, other, region_weights(labels, "labels", 0, 1, 2))
    assert np.array_equal(region[:, 110:], other[:, 110:]) and np.array_equal(region[:, :110], image[:, :110])
    with pytest.raises(MaskError, match="values up to 2 but there are 1 style"):
        composite_labels(image, [styled], labels)


def test_a_wrong_sized_mask_is_an_error_not_a_resize(pair):
    image, styled = pair
    with pytest.raises(MaskError, match="the mask is 159x128 but the input is 160x128"):
        composite(image, styled, np.ones((H, W - 1)))
    with pytest.raises(MaskError, match="not resized"):
        check_size(np.ones((10, 10)), 10, 11)
    assert fit_mask(np.ones((20, 30), np.float32), 10, 15).shape == (10, 15)  # --max-side after the check
    assert fit_mask(np.full((20, 30), 3, np.int32), 10, 15).dtype == np.int32


def test_decoding_grey_rgb_rgba_and_labels():
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))  # (4, 16)
    grey = decode_mask(_png(Image.fromarray(ramp)))
    assert grey.dtype == np.float32 and grey.shape == (4, 16) and np.allclose(grey, ramp / 255)
    rgb = decode_mask(_png(Image.fromarray(np.stack([ramp] * 3, -1))))
    assert np.allclose(rgb, ramp / 255, atol=1 / 255)
    red = decode_mask(_png(Image.new("RGB", (2, 2), (255, 0, 0))))
    assert red[0, 0] == pytest.approx(76 / 255)  # luminance (ITU-R 601), not the first channel
    alpha = np.stack([np.zeros_like(ramp)] * 3 + [ramp], -1)  # black paint, transparency varies
    assert np.allclose(decode_mask(_png(Image.fromarray(alpha, "RGBA"))), ramp / 255)  # alpha when it varies
    opaque = np.stack([ramp] * 3 + [np.full_like(ramp, 255)], -1)
    assert np.allclose(decode_mask(_png(Image.fromarray(opaque, "RGBA"))), ramp / 255, atol=1 / 255)  # else luminance
    labels = decode_mask(_png(Image.fromarray(np.array([[0, 1], [2, 3]], np.uint8))), "labels")
    assert labels.dtype == np.int32 and labels.tolist() == [[0, 1], [2, 3]]
    palette = Image.fromarray(np.array([[0, 2]], np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])  # an editor's colours; the index is the label
    assert decode_mask(_png(palette), "labels").tolist() == [[0, 2]]
    with pytest.raises(MaskError, match="greyscale or a palette"):
        decode_mask(_png(Image.new("RGB", (2, 2), (255, 0, 0))), "labels")
    with pytest.raises(MaskError, match="not a readable image"):
        decode_mask(b"not an image")
    with pytest.raises(MaskError, match="empty"):
        decode_mask(b"")
