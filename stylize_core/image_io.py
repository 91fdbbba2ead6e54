"""Image bytes <-> RGB uint8 arrays: guarded decode and encode (sizes and resizes: :mod:`stylize_core.image_size`).

``decode_image`` is the only way untrusted bytes become pixels in this project. It checks the
pixel count from the header before any pixel data is decoded, refuses truncated files instead of
padding them, applies EXIF orientation and maps every Pillow mode to (H, W, 3) uint8 RGB. Every
failure is an ``ImageDecodeError`` subclass whose ``error_type`` is the short name written into
metrics rows (the types, and how a Pillow exception maps onto them: :mod:`stylize_core.image_errors`).
:func:`decode_guarded` is those guards on their own: :mod:`stylize_core.image_formats` decodes through
them too, keeping alpha, 16 bits, grey, the colour profile and metadata that ``decode_image`` drops.
"""

from __future__ import annotations

import functools
import io
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps

from .colour16 import read_colour16
from .image_size import (check_rgb_array, decoded_size, max_side_size, resize_lanczos, resize_max_side,
                         resize_short_side)
from .image_errors import (
    CorruptImageError,
    DecompressionBombError,
    EmptyImageError,
    ImageDecodeError,
    TruncatedImageError,
    UnidentifiedImageError,
    classify,
)

__all__ = [  # the error types are part of this module's interface: callers catch them from here
    "DEFAULT_MAX_PIXELS", "FORMAT_EXTENSIONS", "IMAGE_EXTENSIONS", "CorruptImageError", "DecompressionBombError",
    "EmptyImageError", "ImageDecodeError", "TruncatedImageError", "UnidentifiedImageError", "decode_image",
    "decode_image_sized", "encode_image", "resize_max_side", "resize_short_side",
]

DEFAULT_MAX_PIXELS: int = 64_000_000
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)
FORMAT_EXTENSIONS: dict[str, str] = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "tiff": ".tif"}
TIFF_COMPRESSION = "tiff_adobe_deflate"  # lossless, what libtiff and every reader support (LZW's peer)

# Pillow plugins tried on untrusted bytes. An allowlist keeps exotic parsers (and EPS, which shells
# out to Ghostscript) away from user data. JPEG covers MPO (multi-picture camera JPEGs) too.
_DECODE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
_WHITE = (255, 255, 255, 255)
# Pillow modes that always carry alpha; "P" and others may too, via info["transparency"].
_ALPHA_MODES = frozenset({"LA", "PA", "RGBA", "RGBa"})
_ORIENTATION_TAG = 0x0112
T = TypeVar("T")


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None) -> np.ndarray:
    """Decode image bytes to a C-contiguous (H, W, 3) uint8 RGB array.

    EXIF orientation is applied, transparency is composited on white, high-bit-depth greyscale is
    scaled by its real bit depth, and animated files give their first frame. Raises a subclass of
    ``ImageDecodeError``; ``max_pixels`` is checked from the header before decoding. Pillow's
    own global bomb limit (``Image.MAX_IMAGE_PIXELS``) still applies on top and is reported the
    same way. MemoryError is not caught: it is a property of the process, not of the file.

    ``max_side`` (default None: full size) downscales like :func:`resize_max_side`, to the same
    output size; a JPEG is then decoded at a reduced DCT scale (Pillow's draft mode) first.
    """
    return decode_image_sized(data, max_pixels=max_pixels, max_side=max_side)[0]


def decode_image_sized(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_image`, plus the full image's (height, width) after EXIF orientation, taken
    from the header: the size of the file, whatever ``max_side`` made of its pixels."""
    rgb, full, target = decode_guarded(data, max_pixels, max_side, _rgb_of)
    if target is not None and rgb.shape[:2] != (target[1], target[0]):
        rgb = resize_lanczos(rgb, *target)
    return rgb, full


@dataclass(frozen=True)
class Source:
    """A file past the guards, as a converter sees it: ``image`` is loaded and EXIF-oriented,
    ``stored`` the same pixels as the file lays them out (before orientation)."""

    image: Image.Image
    stored: Image.Image
    top: int | None  # :func:`_integer_top`
    rawmode: str  # the decoder's raw mode ("RGB;16B" for a 16-bit colour PNG), read before load()
    orientation: int  # the EXIF orientation applied (1: none)
    data: bytes
    sample_bits: int = 8  # a TIFF's BitsPerSample (8 for other formats)

    @property
    def colour16(self) -> bool:
        """16-bit RGB(A) samples, which Pillow reduces to 8 bits (interleaved) or misreads byte by byte
        (a planar TIFF: wrong pixels and no error), so they are read with OpenCV instead."""
        return self.stored.mode in ("RGB", "RGBA") and (";16" in self.rawmode or self.sample_bits == 16)


def _rgb_of(src: Source) -> np.ndarray:
    if not src.colour16:
        return _to_rgb(src.image, src.top)
    rgb, alpha = read_colour16(src.stored, src.data, src.orientation)  # (H, W, 3) uint16, (H, W) uint16 or None
    x = rgb.astype(np.float64) / 257.0
    if alpha is not None:  # composited on white, as every 8-bit alpha is here
        a = alpha.astype(np.float64)[:, :, None] / 65535.0
        x = x * a + 255.0 * (1 - a)
    return np.ascontiguousarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))


def decode_guarded(
    data: bytes, max_pixels: int, max_side: int | None, convert: Callable[[Source], T]
) -> tuple[T, tuple[int, int], tuple[int, int] | None]:
    """The guards every decode goes through (empty, header pixel count, allowlist, truncation), then
    ``convert`` on the oriented image; any failure becomes an ``ImageDecodeError``. Returns what
    ``convert`` made, the file's (height, width) after orientation, and the (width, height) the
    result must be resized to for ``max_side`` (None: as decoded). A JPEG may already be smaller
    than full size (draft mode) but never smaller than that target."""
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if max_side is not None and max_side < 0:
        raise ValueError(f"max_side must be positive, None or 0, got {max_side}")
    data = bytes(data)
    img = _open_header(data, max_pixels)
    with img:  # closes the parsed file; transposed/converted copies are independent
        width, height = img.size
        top = _integer_top(img)
        rawmode = _rawmode(img)
        sample_bits = _sample_bits(img)
        # (w, h) as stored; the output size is the same under a 90-degree EXIF turn with w, h swapped.
        target = max_side_size(width, height, max_side)
        try:
            if target is not None and img.format in ("JPEG", "MPO"):
                # libjpeg decodes at 1/2, 1/4 or 1/8 scale, never below the requested size: the
                # pixels Lanczos would have thrown away are never made.
                img.draft(None, target)
            img.load()
            oriented = _exif_transposed(img)
            turned = oriented is not img and _swaps_axes(img)
            orientation = _orientation(img) if oriented is not img else 1
            made = convert(Source(oriented, img, top, rawmode, orientation, data, sample_bits))
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise classify(exc, data, max_pixels) from exc
    full = (width, height) if turned else (height, width)
    if target is not None and turned:
        target = (target[1], target[0])
    return made, full, target


def _open_header(data: bytes, max_pixels: int) -> Image.Image:
    """The file opened lazily (its header parsed, no pixels decoded) and guarded: an empty file, an
    unreadable header, a zero side or more than ``max_pixels`` raise a typed ``ImageDecodeError``."""
    if not data:
        raise EmptyImageError("empty input: 0 bytes")
    try:
        img = Image.open(io.BytesIO(data), formats=_openable_formats())
    except MemoryError:
        raise  # the process is out of memory; not a property of this file
    except Exception as exc:  # noqa: BLE001 - every decoder failure becomes a typed error
        raise classify(exc, data, max_pixels) from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        img.close()
        raise EmptyImageError(f"image has a zero dimension: {width}x{height}")
    if width * height > max_pixels:
        img.close()
        raise DecompressionBombError(f"image has {width}x{height} = {width * height} pixels, more than the limit of "
                                     f"{max_pixels}")
    return img


def probe_size(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None
               ) -> tuple[tuple[int, int], tuple[int, int]]:
    """From the header alone (nothing decoded): the file's (height, width) after EXIF orientation, and
    the (height, width) :func:`decode_guarded` would decode it to under ``max_side``. The same guards
    first: an empty file, an unreadable header, a zero side or more than ``max_pixels`` raise the same
    ``ImageDecodeError`` subclasses a full decode would."""
    with _open_header(bytes(data), max_pixels) as img:
        width, height = img.size
        if _swaps_axes(img):
            width, height = height, width
    return (height, width), decoded_size(height, width, max_side)


def allow_pixels(max_pixels: int) -> None:
    """Raise Pillow's own process-wide bomb limit (``Image.MAX_IMAGE_PIXELS``, 89 MP by default, an
    error above twice that) to ``max_pixels`` where it is lower, so that it refuses nothing a job's
    ``--max-pixels`` allows: the jobs' workers call this with their setting. Only ever raised."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def encode_image(image: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode an (H, W, 3) uint8 RGB array as ``jpeg``, ``png``, ``webp`` or ``tiff`` bytes.

    ``quality`` (1..100) applies to jpeg and webp; png and tiff (deflate) are lossless and ignore it.
    """
    check_rgb_array(image)
    key = fmt.lower()
    key = "jpeg" if key == "jpg" else key
    if key not in FORMAT_EXTENSIONS:
        raise ValueError(f"unsupported output format {fmt!r}; expected {sorted(FORMAT_EXTENSIONS)}")
    is_int = isinstance(quality, (int, np.integer)) and not isinstance(quality, bool)
    if not is_int or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an int in 1..100, got {quality!r}")
    pil = Image.fromarray(np.ascontiguousarray(image))
    buf = io.BytesIO()
    if key == "png":
        pil.save(buf, format="PNG")
    elif key == "tiff":
        pil.save(buf, format="TIFF", compression=TIFF_COMPRESSION)
    else:
        pil.save(buf, format=key.upper(), quality=int(quality))
    return buf.getvalue()


# --- decode internals ---------------------------------------------------------------------------


@functools.cache
def _openable_formats() -> tuple[str, ...]:
    """The allowlist minus formats this Pillow build cannot open (Image.open raises KeyError)."""
    Image.init()
    return tuple(name for name in _DECODE_FORMATS if name in Image.OPEN)


def _exif_transposed(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation; an unreadable EXIF block must not lose an otherwise good image."""
    try:
        # exif_transpose copies even when nothing changes; skip it for the common upright case.
        if img.getexif().get(_ORIENTATION_TAG, 1) not in range(2, 9):
            return img
        return ImageOps.exif_transpose(img)
    except (SyntaxError, ValueError, KeyError, TypeError, IndexError, EOFError, OSError,
            struct.error):
        return img


def _swaps_axes(img: Image.Image) -> bool:
    """True when the image's EXIF orientation turns it by 90 degrees (tags 5-8)."""
    try:
        return img.getexif().get(_ORIENTATION_TAG, 1) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - unreadable EXIF was not applied either
        return False


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF was not applied either
        return 1
    return value if value in range(1, 9) else 1


def _rawmode(img: Image.Image) -> str:
    """The first tile's raw mode ("RGB;16B", "I;16N", ...); "" when unknown. Read before load()."""
    if not img.tile:
        return ""
    args = img.tile[0][3]
    rawmode = args[0] if isinstance(args, tuple) and args else args
    return rawmode if isinstance(rawmode, str) else ""


def _sample_bits(img: Image.Image) -> int:
    """A TIFF's largest BitsPerSample (8 when absent or not a TIFF)."""
    tags = getattr(img, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None
    if isinstance(bits, tuple):
        return max(bits, default=8)
    return bits if isinstance(bits, int) else 8


def _integer_top(img: Image.Image) -> int | None:
    """Largest value the source's integer greyscale can hold (4095 for 12-bit, 65535 for 16-bit).

    Read from the decoder's raw mode before load(), which clears ``tile``; None when unknown.
    """
    if not img.mode.startswith("I"):
        return None
    rawmode = _rawmode(img)
    match = re.fullmatch(r"I;(\d+)[A-Z]*", rawmode)
    if match:
        bits = int(match.group(1))
        signed = rawmode.endswith("S")
        # Mode "I" is int32, so nothing above 2**31 - 1 survives into the array anyway.
        return min((1 << (bits - 1 if signed else bits)) - 1, (1 << 31) - 1)
    return 0xFFFF if img.mode.startswith("I;16") else None


def _to_rgb(img: Image.Image, top: int | None) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB, C-contiguous."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        values = np.asarray(img)  # (H, W)
        grey = _float_grey_to_u8(values) if mode == "F" else _integer_grey_to_u8(values, top)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "La":
        return _premultiplied_grey_on_white(np.asarray(img))
    if _has_alpha(img):
        # Composite on white: dropping alpha would expose whatever colour hides under
        # transparent pixels (often black).
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        img = Image.alpha_composite(background, rgba)
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    return np.array(rgb, dtype=np.uint8, order="C")


def _has_alpha(img: Image.Image) -> bool:
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        return True
    palette = img.palette if img.mode == "P" else None
    return palette is not None and palette.mode == "RGBA"


def _integer_grey_to_u8(values: np.ndarray, top: int | None) -> np.ndarray:
    """Scale integer greyscale so ``top`` -> 255, rounded; never clipped at 255."""
    values = values.astype(np.int64)
    if top is None:  # e.g. PPM, which Pillow already stretches to 16 bits
        top = 0xFFFF if values.size == 0 or values.max() <= 0xFFFF else (1 << 31) - 1
    values = np.clip(values, 0, top)
    return ((values * 255 + top // 2) // top).astype(np.uint8)


def _float_grey_to_u8(values: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] or [0, 255] keep their meaning; larger ranges are scaled by their max."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(values.max()) if values.size else 0.0
    if peak <= 1.0:
        values = values * 255.0
    elif peak > 255.0:
        values = values * (255.0 / peak)
    return np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)


def _premultiplied_grey_on_white(la: np.ndarray) -> np.ndarray:
    """Premultiplied grey+alpha over white is simply L + (255 - a)."""
    la = la.astype(np.int32)  # (H, W, 2)
    grey = np.clip(la[:, :, 0] + (255 - la[:, :, 1]), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
