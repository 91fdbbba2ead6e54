"""decode_image(max_side=...): JPEGs decoded at a reduced DCT scale (Pillow's draft mode), with the
output size of the full-decode-then-resize path and the header's size and pixel guard."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile

from stylize_core.image_io import DecompressionBombError, decode_image, decode_image_sized, resize_max_side


def _jpeg(img: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(skimage.data.astronaut()).resize((2048, 1536), Image.Resampling.LANCZOS)


@pytest.fixture
def draft_scales(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The DCT scale each JPEG decode used (1 = full size)."""
    scales: list[int] = []
    original = JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        scales.append(self.decoderconfig[0] if self.decoderconfig else 1)
        return result

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    return scales


@pytest.mark.parametrize("max_side", [1024, 512, 256, 100])
def test_draft_decode_matches_the_full_decode_path(photo, draft_scales, max_side):
    data = _jpeg(photo)
    reference = resize_max_side(decode_image(data), max_side)
    assert draft_scales == []  # no max_side: no draft
    out, full = decode_image_sized(data, max_side=max_side)
    assert out.shape == reference.shape and full == (1536, 2048)
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    assert draft_scales and draft_scales[-1] == min(8, 2048 // max_side)  # decoded at 1/2 .. 1/8 size
    diff = np.abs(out.astype(np.int16) - reference.astype(np.int16))
    # Measured on this photo: mean 0.4-1.4 grey levels, 99th percentile <= 10 (README "Decoding").
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 16


@pytest.mark.parametrize("size", [(1001, 333), (333, 1001), (999, 1003), (17, 4000), (4000, 17), (257, 256)])
def test_output_size_is_identical_for_awkward_sizes(size):
    rng = np.random.default_rng(0)
    data = _jpeg(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)))
    for max_side in (256, 100, 33, 7):
        expected = resize_max_side(decode_image(data), max_side).shape
        out, full = decode_image_sized(data, max_side=max_side)
        assert out.shape == expected and full == (size[1], size[0]), (size, max_side)


def test_exif_rotation_is_applied_after_the_draft(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: the output is portrait
    data = _jpeg(photo, exif=exif)
    out, full = decode_image_sized(data, max_side=300)
    assert full == (2048, 1536)
    assert out.shape == resize_max_side(decode_image(data), 300).shape == (300, 225, 3)


def test_small_images_and_other_formats_decode_exactly_as_before(photo):
    small = _jpeg(photo.resize((200, 150)))
    assert np.array_equal(decode_image(small, max_side=512), decode_image(small))
    buf = io.BytesIO()
    photo.resize((640, 480)).save(buf, "PNG")
    png = buf.getvalue()
    assert np.array_equal(decode_image(png, max_side=320), resize_max_side(decode_image(png), 320))


def test_pixel_limit_still_comes_from_the_header(photo):
    data = _jpeg(photo)
    with pytest.raises(DecompressionBombError, match="2048x1536"):
        decode_image(data, max_pixels=2048 * 1536 - 1, max_side=64)  # even though 64 px would fit
