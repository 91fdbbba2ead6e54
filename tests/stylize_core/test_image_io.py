"""Tests for stylize_core.image_io: every image is built in memory with Pillow/NumPy."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageFile

from stylize_core.image_io import (
    DEFAULT_MAX_PIXELS,
    FORMAT_EXTENSIONS,
    IMAGE_EXTENSIONS,
    CorruptImageError,
    DecompressionBombError,
    EmptyImageError,
    ImageDecodeError,
    TruncatedImageError,
    UnidentifiedImageError,
    decode_image,
    encode_image,
    resize_max_side,
    resize_short_side,
)


def _save(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: list[bytes]) -> bytes:
    """A PNG written by hand, for layouts Pillow cannot save (16-bit RGB/LA) or lies (huge IHDR)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\x00" + row for row in rows))  # filter type 0 per row
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()  # (512, 512, 3) uint8


def _assert_rgb(out: np.ndarray, height: int, width: int) -> None:
    assert out.dtype == np.uint8
    assert out.shape == (height, width, 3)
    assert out.flags.c_contiguous
    assert out.flags.writeable


# --- constants and error types ------------------------------------------------------------------


def test_constants() -> None:
    assert DEFAULT_MAX_PIXELS == 64_000_000
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
    assert FORMAT_EXTENSIONS == {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}


def test_error_types_are_stable_value_errors() -> None:
    expected = {
        EmptyImageError: "empty",
        UnidentifiedImageError: "unidentified",
        TruncatedImageError: "truncated",
        DecompressionBombError: "too_large",
        CorruptImageError: "corrupt",
    }
    for cls, name in expected.items():
        assert issubclass(cls, ImageDecodeError) and issubclass(cls, ValueError)
        assert cls.error_type == name


# --- decode: formats and modes ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_photo_round_trip(astronaut: np.ndarray, fmt: str) -> None:
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    out = decode_image(_save(Image.fromarray(astronaut), fmt, **kwargs))
    _assert_rgb(out, 512, 512)
    np.testing.assert_array_equal(out, astronaut)


def test_jpeg_photo_decodes_close(astronaut: np.ndarray) -> None:
    out = decode_image(_save(Image.fromarray(astronaut), "JPEG", quality=95))
    _assert_rgb(out, 512, 512)
    assert np.abs(out.astype(int) - astronaut).mean() < 3


def test_bilevel_mode_1() -> None:
    img = Image.new("1", (3, 2), 0)
    img.putpixel((1, 0), 1)
    out = decode_image(_save(img, "PNG"))
    _assert_rgb(out, 2, 3)
    assert out[0, 1].tolist() == [255, 255, 255]
    assert out[0, 0].tolist() == [0, 0, 0]


def test_greyscale_l() -> None:
    out = decode_image(_save(Image.new("L", (4, 3), 77), "PNG"))
    _assert_rgb(out, 3, 4)
    assert (out == 77).all()


def test_la_composited_on_white() -> None:
    arr = np.array([[[0, 0], [0, 128], [200, 255]]], dtype=np.uint8)  # (1, 3, 2) L, A
    out = decode_image(_save(Image.fromarray(arr, mode="LA"), "PNG"))
    assert out[0, 0].tolist() == [255, 255, 255]  # transparent black -> white, not black
    assert np.abs(out[0, 1].astype(int) - 127.5).max() <= 1  # half-alpha black over white
    assert out[0, 2].tolist() == [200, 200, 200]


def test_rgba_composited_on_white() -> None:
    arr = np.array(
        [[[255, 0, 0, 0], [0, 0, 0, 0], [255, 0, 0, 128], [10, 20, 30, 255]]], dtype=np.uint8
    )
    out = decode_image(_save(Image.fromarray(arr, mode="RGBA"), "PNG"))
    _assert_rgb(out, 1, 4)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [255, 255, 255]  # the hidden colour must not leak
    assert np.abs(out[0, 2].astype(int) - [255, 127.5, 127.5]).max() <= 1
    assert out[0, 3].tolist() == [10, 20, 30]


def test_rgba_in_webp_composited_on_white() -> None:
    arr = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent black
    out = decode_image(_save(Image.fromarray(arr, mode="RGBA"), "WEBP", lossless=True))
    assert (out == 255).all()


def _palette_image() -> Image.Image:
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2])
    return img


def test_palette_without_transparency() -> None:
    out = decode_image(_save(_palette_image(), "PNG"))
    assert out[0].tolist() == [[255, 0, 0], [0, 0, 255], [0, 255, 0]]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparent_index(fmt: str) -> None:
    out = decode_image(_save(_palette_image(), fmt, transparency=1))
    assert out[0].tolist() == [[255, 0, 0], [255, 255, 255], [0, 255, 0]]


def test_palette_with_partial_alpha_entries() -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 128, 0, 0, 255, 255], rawmode="RGBA")
    img.putdata([0, 1])
    out = decode_image(_save(img, "PNG"))  # written as PLTE + tRNS
    assert np.abs(out[0, 0].astype(int) - [255, 127.5, 127.5]).max() <= 1
    assert out[0, 1].tolist() == [0, 0, 255]


def test_rgb_with_transparent_colour_key() -> None:
    img = Image.new("RGB", (2, 1), (10, 20, 30))
    img.putpixel((1, 0), (1, 2, 3))
    out = decode_image(_save(img, "PNG", transparency=(1, 2, 3)))
    assert out[0].tolist() == [[10, 20, 30], [255, 255, 255]]


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk(fmt: str) -> None:
    colours = [(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)]  # white, cyan, black
    img = Image.new("CMYK", (3 * 16, 16))
    for i, colour in enumerate(colours):
        img.paste(colour, (16 * i, 0, 16 * (i + 1), 16))
    data = _save(img, fmt, quality=95) if fmt == "JPEG" else _save(img, fmt)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data)
    _assert_rgb(out, 16, 48)
    centres = [out[8, 16 * i + 8].astype(int) for i in range(3)]
    tol = 0 if fmt == "TIFF" else 4
    for got, want in zip(centres, [(255, 255, 255), (0, 255, 255), (0, 0, 0)]):
        assert np.abs(got - want).max() <= tol


def test_ycbcr_tiff() -> None:
    data = _save(Image.new("YCbCr", (4, 2), (128, 128, 128)), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "YCbCr"
    out = decode_image(data)
    _assert_rgb(out, 2, 4)
    assert np.abs(out.astype(int) - 128).max() <= 1  # neutral chroma -> mid grey


_GREY16 = [0, 1000, 32768, 65535]
_GREY16_EXPECTED = [0, 4, 128, 255]  # scaled by 255/65535, rounded; never clipped at 255


def test_16bit_greyscale_png_scaled_by_bit_depth() -> None:
    img = Image.fromarray(np.array([_GREY16], dtype=np.uint16))
    data = _save(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = decode_image(data)
    _assert_rgb(out, 1, 4)
    assert out[0, :, 0].tolist() == _GREY16_EXPECTED
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_16bit_big_endian_tiff() -> None:
    img = Image.frombytes("I;16B", (4, 1), np.array(_GREY16, dtype=">u2").tobytes())
    data = _save(img, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I;16B"
    assert decode_image(data)[0, :, 0].tolist() == _GREY16_EXPECTED


def test_16bit_pgm_in_mode_i() -> None:
    data = b"P5\n4 1\n65535\n" + np.array(_GREY16, dtype=">u2").tobytes()
    assert Image.open(io.BytesIO(data)).mode == "I"
    assert decode_image(data)[0, :, 0].tolist() == _GREY16_EXPECTED


def test_32bit_integer_tiff() -> None:
    values = np.array([[-5, 0, 2**30, 2**31 - 1]], dtype=np.int32)
    data = _save(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    assert decode_image(data)[0, :, 0].tolist() == [0, 0, 128, 255]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 0.5, 1.0], [0, 128, 255]),  # unit range
        ([0.0, 100.0, 255.0], [0, 100, 255]),  # already 8-bit range
        ([0.0, 500.0, 1000.0], [0, 128, 255]),  # wider range scaled by its max
        ([-1.0, float("nan"), 0.25], [0, 0, 64]),  # negatives clipped, NaN -> 0
    ],
)
def test_float_tiff(values: list[float], expected: list[int]) -> None:
    data = _save(Image.fromarray(np.array([values], dtype=np.float32)), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    assert decode_image(data)[0, :, 0].tolist() == expected


def test_16bit_rgb_png() -> None:
    row = np.array([65535, 32768, 0, 0, 65535, 0], dtype=">u2").tobytes()
    out = decode_image(_raw_png(2, 1, 16, 2, [row]))
    assert out[0].tolist() == [[255, 128, 0], [0, 255, 0]]


def test_16bit_grey_alpha_png_composited() -> None:
    row = np.array([0, 0, 0, 65535], dtype=">u2").tobytes()  # transparent black, opaque black
    out = decode_image(_raw_png(2, 1, 16, 4, [row]))
    assert out[0].tolist() == [[255, 255, 255], [0, 0, 0]]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_takes_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (8, 6), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    data = _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    out = decode_image(data)
    _assert_rgb(out, 6, 8)
    assert np.abs(out.astype(int) - [255, 0, 0]).max() <= 2


def test_accepts_bytearray_and_memoryview() -> None:
    data = _save(Image.new("RGB", (3, 2), (1, 2, 3)), "PNG")
    for view in (bytearray(data), memoryview(data)):
        assert decode_image(view)[1, 2].tolist() == [1, 2, 3]


# --- EXIF orientation ---------------------------------------------------------------------------


def test_exif_orientation_6_rotates_clockwise() -> None:
    arr = np.zeros((32, 64, 3), dtype=np.uint8)  # (H, W, 3): left half red, right half blue
    arr[:, :32] = (255, 0, 0)
    arr[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; display needs a 90 degree clockwise turn
    data = _save(Image.fromarray(arr), "JPEG", quality=95, exif=exif)
    out = decode_image(data)
    _assert_rgb(out, 64, 32)
    expected = np.rot90(arr, k=-1)  # clockwise: the left (red) half ends up on top
    assert np.abs(out.astype(int) - expected).mean() < 4
    assert out[8, 16, 0] > 200 and out[56, 16, 2] > 200


def test_no_exif_keeps_shape() -> None:
    out = decode_image(_save(Image.new("RGB", (64, 32)), "JPEG"))
    _assert_rgb(out, 32, 64)


# --- decompression-bomb guard -------------------------------------------------------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 RGB PNG whose IHDR is patched (CRC recomputed) to claim width x height."""
    return _raw_png(width, height, 8, 2, [b"\x00\x00\x00"])


@pytest.fixture()
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything decodes pixel data: the guard must act on the header alone."""

    def forbidden(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixel data decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)


def test_bomb_over_our_limit_rejected_from_header(no_pixel_decoding: None) -> None:
    # 81M pixels: above our default, below Pillow's own warning threshold, so it is our check.
    with pytest.raises(DecompressionBombError, match=r"9000x9000 = 81000000 pixels.*64000000"):
        decode_image(_png_claiming(9000, 9000))


def test_huge_bomb_rejected(no_pixel_decoding: None) -> None:
    with pytest.raises(DecompressionBombError, match="10000000000 pixels") as info:
        decode_image(_png_claiming(100_000, 100_000))
    assert info.value.error_type == "too_large"


def test_small_max_pixels(astronaut: np.ndarray, no_pixel_decoding: None) -> None:
    data = _save(Image.fromarray(astronaut), "JPEG")
    with pytest.raises(DecompressionBombError, match="512x512"):
        decode_image(data, max_pixels=512 * 512 - 1)


def test_limit_is_inclusive() -> None:
    data = _save(Image.new("RGB", (10, 10)), "PNG")
    assert decode_image(data, max_pixels=100).shape == (10, 10, 3)


def test_pillow_bomb_error_and_warning_become_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _save(Image.new("RGB", (20, 20)), "PNG")  # 400 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow errors above 200
    with pytest.raises(DecompressionBombError):
        decode_image(data)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # Pillow only warns (300 < 400 <= 600)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(DecompressionBombError):
            decode_image(data)


def test_bad_max_pixels() -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        decode_image(b"x", max_pixels=0)


# --- broken input -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_truncated_file(astronaut: np.ndarray, fmt: str) -> None:
    data = _save(Image.fromarray(astronaut), fmt)
    with pytest.raises(TruncatedImageError, match="truncated") as info:
        decode_image(data[: len(data) // 2])
    assert info.value.error_type == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_empty_bytes() -> None:
    with pytest.raises(EmptyImageError, match="0 bytes"):
        decode_image(b"")


def test_text_is_unidentified() -> None:
    with pytest.raises(UnidentifiedImageError, match="not a recognised image format"):
        decode_image(b"this is a plain text file that someone named photo.jpg\n" * 4)


def test_zero_dimension_png_is_an_error() -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(_png_claiming(0, 5))


def test_damaged_png_data_is_corrupt_not_truncated() -> None:
    data = bytearray(_save(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG"))
    data[data.find(b"IDAT") + 10] ^= 0xFF  # complete file, bad compressed stream
    with pytest.raises(CorruptImageError) as info:
        decode_image(bytes(data))
    assert info.value.error_type == "corrupt"


def test_damaged_png_header_is_corrupt() -> None:
    data = bytearray(_save(Image.new("RGB", (8, 8)), "PNG"))
    data[20] ^= 0xFF  # inside IHDR, so its CRC no longer matches
    with pytest.raises(CorruptImageError, match="PNG"):
        decode_image(bytes(data))


# --- encode -------------------------------------------------------------------------------------


def test_encode_png_is_exact(astronaut: np.ndarray) -> None:
    data = encode_image(astronaut, "png")
    assert data.startswith(b"\x89PNG")
    np.testing.assert_array_equal(decode_image(data), astronaut)


@pytest.mark.parametrize(("fmt", "magic"), [("jpeg", b"\xff\xd8\xff"), ("webp", b"RIFF")])
def test_encode_lossy_round_trip_is_close(astronaut: np.ndarray, fmt: str, magic: bytes) -> None:
    data = encode_image(astronaut, fmt, quality=95)
    assert data.startswith(magic)
    out = decode_image(data)
    assert out.shape == astronaut.shape
    assert np.abs(out.astype(int) - astronaut).mean() < 3


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_quality_changes_size(astronaut: np.ndarray, fmt: str) -> None:
    assert len(encode_image(astronaut, fmt, quality=20)) < len(encode_image(astronaut, fmt, quality=95))


def test_encode_format_names_are_case_insensitive(astronaut: np.ndarray) -> None:
    small = astronaut[:16, :16]
    assert encode_image(small, "JPEG").startswith(b"\xff\xd8")
    assert encode_image(small, "jpg").startswith(b"\xff\xd8")


def test_encode_accepts_non_contiguous_view(astronaut: np.ndarray) -> None:
    view = astronaut[::2, ::3]
    np.testing.assert_array_equal(decode_image(encode_image(view, "png")), view)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((4, 4, 3), dtype=np.float32),
        np.zeros((4, 4), dtype=np.uint8),
        np.zeros((4, 4, 4), dtype=np.uint8),
        np.zeros((0, 4, 3), dtype=np.uint8),
        [[[0, 0, 0]]],
    ],
)
def test_encode_rejects_bad_arrays(image: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode_image(image, "png")


@pytest.mark.parametrize(("fmt", "quality"), [("gif", 90), ("bmp", 90), ("jpeg", 0), ("jpeg", 101)])
def test_encode_rejects_bad_format_or_quality(fmt: str, quality: int) -> None:
    with pytest.raises(ValueError):
        encode_image(np.zeros((4, 4, 3), dtype=np.uint8), fmt, quality)


# --- resize -------------------------------------------------------------------------------------


def test_resize_max_side_downscales_keeping_aspect(astronaut: np.ndarray) -> None:
    wide = astronaut[:200, :400]  # (200, 400, 3)
    out = resize_max_side(wide, 100)
    _assert_rgb(out, 50, 100)
    tall = astronaut[:300, :100]
    assert resize_max_side(tall, 150).shape == (150, 50, 3)
    expected = np.asarray(Image.fromarray(wide).resize((100, 50), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(out, expected)


def test_resize_max_side_never_upscales(astronaut: np.ndarray) -> None:
    assert resize_max_side(astronaut, 512) is astronaut
    assert resize_max_side(astronaut, 4096) is astronaut
    assert resize_max_side(astronaut, None) is astronaut
    assert resize_max_side(astronaut, 0) is astronaut


def test_resize_max_side_keeps_thin_images_non_empty() -> None:
    line = np.zeros((1, 1000, 3), dtype=np.uint8)
    assert resize_max_side(line, 10).shape == (1, 10, 3)


def test_resize_max_side_rejects_negative(astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError):
        resize_max_side(astronaut, -1)


def test_resize_short_side_up_and_down(astronaut: np.ndarray) -> None:
    wide = astronaut[:100, :200]
    assert resize_short_side(wide, 50).shape == (50, 100, 3)
    up = resize_short_side(wide[:10, :20], 40)
    _assert_rgb(up, 40, 80)
    tall = astronaut[:300, :120]
    assert resize_short_side(tall, 60).shape == (150, 60, 3)
    assert resize_short_side(wide, 100) is wide


def test_resize_short_side_rejects_non_positive(astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError):
        resize_short_side(astronaut, 0)
