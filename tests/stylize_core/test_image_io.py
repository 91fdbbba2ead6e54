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
    chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()  # (512, 512, 3) uint8


def _assert_rgb(out: np.ndarray, height: int, width: int) -> None:
    assert out.dtype == np.uint8
    assert out.shape == (height, width, 3)
    assert out.flags.c_contiguous
    assert out.flags.writeable


def test_constants() -> None:
    assert DEFAULT_MAX_PIXELS == 64_000_000
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
    assert FORMAT_EXTENSIONS == {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "tiff": ".tif"}


def test_error_types_are_stable_value_errors() -> None:
    expected = {EmptyImageError: "empty", UnidentifiedImageError: "unidentified",
                TruncatedImageError: "truncated", DecompressionBombError: "too_large",
                CorruptImageError: "corrupt"}
    for cls, name in expected.items():
        assert issubclass(cls, ImageDecodeError) and issubclass(cls, ValueError)
        assert cls.error_type == name


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


def _img(arr: list, mode: str | None = None, dtype: str = "uint8") -> Image.Image:
    return Image.fromarray(np.array(arr, dtype=dtype), mode=mode)


def _palette_image(rgba_palette: bool = False) -> Image.Image:
    img = Image.new("P", (3, 1))
    if rgba_palette:  # entry 0 is half-transparent red; saved as PLTE + tRNS
        img.putpalette([255, 0, 0, 128, 0, 0, 255, 255, 0, 255, 0, 255], rawmode="RGBA")
    else:
        img.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0])
    img.putdata([0, 1, 2])
    return img


def _colour_key_png() -> bytes:
    img = Image.new("RGB", (2, 1), (10, 20, 30))
    img.putpixel((1, 0), (1, 2, 3))
    return _save(img, "PNG", transparency=(1, 2, 3))


def _u16(values: list[int]) -> bytes:
    return np.array(values, dtype=">u2").tobytes()


def _tiff12(packed: bytes, width: int) -> bytes:
    """A 12-bit greyscale TIFF (one strip), which Pillow cannot write."""
    tags = [(256, width), (257, 1), (258, 12), (259, 1), (262, 1), (273, 122), (277, 1),
            (278, 1), (279, len(packed))]  # 122 = 8-byte header + 2 + 9 * 12 + 4 (the IFD)
    ifd = b"".join(struct.pack("<HHII", tag, 4, 1, value) for tag, value in tags)
    return b"II*\x00" + struct.pack("<IH", 8, len(tags)) + ifd + b"\0\0\0\0" + packed


def _cmyk(fmt: str) -> bytes:
    img = Image.new("CMYK", (48, 16))
    for i, colour in enumerate([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)]):
        img.paste(colour, (16 * i, 0, 16 * (i + 1), 16))  # white, cyan, black
    return _save(img, fmt, quality=95)


W, HALF = 255, 127.5  # HALF: alpha 128 over white, 255 * (1 - 128/255); tolerance covers rounding
G16 = [0, 1000, 32768, 65535]
G16_OUT = [0, 4, 128, 255]  # * 255/65535, rounded; 1000 must not clip to 255
# id -> (bytes builder, mode Pillow opens it in, expected RGB (or grey) of row 0, tolerance)
_MODE_CASES = {
    "1": (lambda: _save(_img([[0, 1, 0]], dtype="bool"), "PNG"), "1", [0, W, 0], 0),
    "L": (lambda: _save(_img([[77, 0]]), "PNG"), "L", [77, 0], 0),
    "LA": (lambda: _save(_img([[[0, 0], [0, 128], [200, 255]]], "LA"), "PNG"), "LA",
           [W, HALF, 200], 1),
    "RGBA": (lambda: _save(_img([[[255, 0, 0, 0], [0, 0, 0, 0], [255, 0, 0, 128],
                                   [10, 20, 30, 255]]], "RGBA"), "PNG"), "RGBA",
             [[W, W, W], [W, W, W], [255, HALF, HALF], [10, 20, 30]], 1),
    "RGBA-webp": (lambda: _save(_img([[[0, 0, 0, 0], [9, 9, 9, 255]]], "RGBA"), "WEBP",
                                lossless=True), "RGBA", [W, 9], 0),
    "P": (lambda: _save(_palette_image(), "PNG"), "P", [[255, 0, 0], [0, 0, 255], [0, 255, 0]], 0),
    "P-trns-png": (lambda: _save(_palette_image(), "PNG", transparency=1), "P",
                   [[255, 0, 0], [W, W, W], [0, 255, 0]], 0),
    "P-trns-gif": (lambda: _save(_palette_image(), "GIF", transparency=1), "P",
                   [[255, 0, 0], [W, W, W], [0, 255, 0]], 0),
    "P-alpha-palette": (lambda: _save(_palette_image(rgba_palette=True), "PNG"), "P",
                        [[255, HALF, HALF], [0, 0, 255], [0, 255, 0]], 1),
    "RGB-colour-key": (_colour_key_png, "RGB", [[10, 20, 30], [W, W, W]], 0),
    "CMYK-tiff": (lambda: _cmyk("TIFF"), "CMYK", [W] * 16 + [[0, 255, 255]] * 16 + [0] * 16, 0),
    "CMYK-jpeg": (lambda: _cmyk("JPEG"), "CMYK", [W] * 16 + [[0, 255, 255]] * 16 + [0] * 16, 6),
    "YCbCr": (lambda: _save(Image.new("YCbCr", (2, 1), (128, 128, 128)), "TIFF"), "YCbCr",
              [128, 128], 1),
    "I;16-png": (lambda: _save(_img([G16], dtype="uint16"), "PNG"), "I;16", G16_OUT, 0),
    "I;16B-tiff": (lambda: _save(Image.frombytes("I;16B", (4, 1), _u16(G16)), "TIFF"), "I;16B",
                   G16_OUT, 0),
    "I;12-tiff": (lambda: _tiff12(bytes([0x80, 0x0F, 0xFF]), 2), "I;16", [128, 255], 0),
    "I-pgm16": (lambda: b"P5\n4 1\n65535\n" + _u16(G16), "I", G16_OUT, 0),
    "I-tiff32": (lambda: _save(_img([[-5, 0, 2**30, 2**31 - 1]], dtype="int32"), "TIFF"), "I",
                 [0, 0, 128, 255], 0),
    "F-unit": (lambda: _save(_img([[0.0, 0.5, 1.0]], dtype="float32"), "TIFF"), "F",
               [0, 128, 255], 0),
    "F-byte-range": (lambda: _save(_img([[0.0, 100.0, 255.0]], dtype="float32"), "TIFF"), "F",
                     [0, 100, 255], 0),
    "F-wide": (lambda: _save(_img([[0.0, 500.0, 1000.0]], dtype="float32"), "TIFF"), "F",
               [0, 128, 255], 0),  # scaled by its max
    "F-nan-negative": (lambda: _save(_img([[-1.0, np.nan, 0.25]], dtype="float32"), "TIFF"), "F",
                       [0, 0, 64], 0),
    "RGB16-png": (lambda: _raw_png(2, 1, 16, 2, [_u16([65535, 32768, 0, 0, 65535, 0])]), "RGB",
                  [[255, 128, 0], [0, 255, 0]], 0),
    "LA16-png": (lambda: _raw_png(2, 1, 16, 4, [_u16([0, 0, 0, 65535])]), "RGBA", [W, 0], 0),
}


@pytest.mark.parametrize("case", list(_MODE_CASES))
def test_mode_converted_to_rgb(case: str) -> None:
    build, mode, row, tol = _MODE_CASES[case]
    data = build()
    assert Image.open(io.BytesIO(data)).mode == mode  # the case really exercises that mode
    out = decode_image(data)
    expected = np.array([[v] * 3 if np.isscalar(v) else v for v in row], dtype=float)  # (W, 3)
    _assert_rgb(out, out.shape[0], len(expected))
    assert np.abs(out - expected).max() <= tol, out[0].tolist()


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "MPO"])
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
    assert decode_image(_save(Image.fromarray(arr), "JPEG")).shape == (32, 64, 3)  # no EXIF


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


def test_limit_is_inclusive_and_positive() -> None:
    data = _save(Image.new("RGB", (10, 10)), "PNG")
    assert decode_image(data, max_pixels=100).shape == (10, 10, 3)
    with pytest.raises(ValueError, match="max_pixels"):
        decode_image(data, max_pixels=0)


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


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_truncated_file(astronaut: np.ndarray, fmt: str) -> None:
    data = _save(Image.fromarray(astronaut), fmt)
    with pytest.raises(TruncatedImageError, match="truncated") as info:
        decode_image(data[: len(data) // 2])
    assert info.value.error_type == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", EmptyImageError, "0 bytes"),
        (b"plain text that someone named photo.jpg\n" * 4, UnidentifiedImageError,
         "not a recognised image format"),
        (_raw_png(0, 5, 8, 2, [b"\x00\x00\x00"]), ImageDecodeError, "PNG"),  # zero width
        (_save(Image.new("RGB", (4, 4)), "ICO"), UnidentifiedImageError, "not a recognised"),
    ],
    ids=["empty", "text", "zero-width", "ico-not-in-allowlist"],
)
def test_not_an_image(data: bytes, error: type[ImageDecodeError], message: str) -> None:
    with pytest.raises(error, match=message):
        decode_image(data)


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
    low, high = (len(encode_image(astronaut, fmt, quality=q)) for q in (20, 95))
    assert low < high


def test_encode_names_and_views(astronaut: np.ndarray) -> None:
    assert encode_image(astronaut[:16, :16], "JPEG").startswith(b"\xff\xd8")
    assert encode_image(astronaut[:16, :16], "jpg").startswith(b"\xff\xd8")
    view = astronaut[::2, ::3]  # not C-contiguous
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


def test_resize_max_side_downscales_keeping_aspect(astronaut: np.ndarray) -> None:
    wide = astronaut[:200, :400]  # (200, 400, 3)
    out = resize_max_side(wide, 100)
    _assert_rgb(out, 50, 100)
    tall = astronaut[:300, :100]
    assert resize_max_side(tall, 150).shape == (150, 50, 3)
    expected = np.asarray(Image.fromarray(wide).resize((100, 50), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(out, expected)


def test_resize_max_side_never_upscales(astronaut: np.ndarray) -> None:
    for max_side in (512, 4096, None, 0):
        assert resize_max_side(astronaut, max_side) is astronaut
    line = np.zeros((1, 1000, 3), dtype=np.uint8)
    assert resize_max_side(line, 10).shape == (1, 10, 3)  # the thin side never vanishes
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
    with pytest.raises(ValueError):
        resize_short_side(astronaut, 0)
