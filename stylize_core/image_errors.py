"""The typed decode errors of :mod:`stylize_core.image_io`, and the mapping of whatever Pillow or a
decoder raised onto them. Each error's ``error_type`` is the short name written into metrics rows;
the message says what was found (format, size, where the data stopped)."""

from __future__ import annotations

import re
import struct

import PIL
from PIL import Image

# Substrings of Pillow/decoder messages that mean "the data stopped early". Pillow's "broken data
# stream" is deliberately absent: a complete PNG with a damaged IDAT says the same, so that case is
# settled by _declares_more_than_present instead.
_TRUNCATION_MARKERS = (
    "truncated",
    "unexpected end",
    "premature end",
    "end of file",
    "not enough data",
)
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


class ImageDecodeError(ValueError):
    """Base class of every decode failure; ``error_type`` names the kind in metrics rows."""

    error_type: str = "decode"


class EmptyImageError(ImageDecodeError):
    """No bytes at all, or an image with a zero width or height."""

    error_type = "empty"


class UnidentifiedImageError(ImageDecodeError):
    """The bytes are not an image in any supported format."""

    error_type = "unidentified"


class TruncatedImageError(ImageDecodeError):
    """The file stops before all pixel data is present (never silently padded)."""

    error_type = "truncated"


class DecompressionBombError(ImageDecodeError):
    """The header declares more pixels than allowed; raised before pixel data is decoded."""

    error_type = "too_large"


class CorruptImageError(ImageDecodeError):
    """Any other failure raised by Pillow or a decoder."""

    error_type = "corrupt"


def classify(exc: Exception, data: bytes, max_pixels: int) -> ImageDecodeError:
    """Map whatever Pillow raised to one of our typed errors, with a short message."""
    fmt = _sniff_format(data)
    if isinstance(exc, ImageDecodeError):
        return exc
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else None
        if pixels is not None and pixels > max_pixels:
            return DecompressionBombError(
                f"image has {pixels} pixels, more than the limit of {max_pixels}"
            )
        return DecompressionBombError(f"image rejected by Pillow's size limit: {exc}")
    message = str(exc)
    what = f"{fmt} data" if fmt else "image data"
    if (
        isinstance(exc, EOFError)
        or any(marker in message.lower() for marker in _TRUNCATION_MARKERS)
        or _declares_more_than_present(data)
    ):
        detail = message or type(exc).__name__
        return TruncatedImageError(f"truncated {what} ({len(data)} bytes): {detail}")
    if isinstance(exc, PIL.UnidentifiedImageError):
        if fmt is None:
            return UnidentifiedImageError(
                f"not a recognised image format ({len(data)} bytes, starts with {data[:8]!r})"
            )
        return CorruptImageError(
            f"{fmt} signature but the header cannot be parsed ({len(data)} bytes)"
        )
    return CorruptImageError(f"cannot decode {what}: {type(exc).__name__}: {message}")


def _sniff_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def _declares_more_than_present(data: bytes) -> bool:
    """True when the container's own length fields point past the end of the bytes we have."""
    if data[:4] == b"RIFF" and len(data) >= 8:
        return len(data) < struct.unpack("<I", data[4:8])[0] + 8
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        pos = 8
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos : pos + 8])
            pos += 12 + length  # header + data + CRC
            if kind == b"IEND":
                return pos > len(data)
        return True  # ran out of bytes before IEND
    if data.startswith(b"\xff\xd8\xff"):
        return b"\xff\xd9" not in data[-4096:]
    return False
