"""Input files in the pixel formats the jobs keep (tests/stylize_core/test_image_formats.py,
tests/jobs/test_pixel_formats_jobs.py): photo crops with alpha, 16 bits, grey, a palette, a non-sRGB
ICC profile built here byte by byte, and TIFFs laid out in ways Pillow does not read."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image
from skimage import data

H, W = 48, 64
# sRGB's primaries and white, adapted to D50 (as in every sRGB ICC profile)
_D50 = (0.9642, 1.0, 0.8249)
_COLORANTS = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
LINEAR_NAME = "linear-light sRGB primaries (test)"


def photo(h: int = H, w: int = W, top: int = 40, left: int = 150) -> np.ndarray:
    """(h, w, 3) uint8: a crop of scikit-image's astronaut (no download), so a style network shows."""
    return np.ascontiguousarray(data.astronaut()[top : top + h, left : left + w])


def disc_alpha(h: int = H, w: int = W) -> np.ndarray:
    """(h, w) uint8: opaque disc, soft edge, fully transparent corners (whose colour is left black)."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - h / 2, xx - w / 2)
    return np.clip((min(h, w) / 2 - r) * 40, 0, 255).astype(np.uint8)


def rgba_png() -> tuple[bytes, np.ndarray]:
    """A sprite: the photo under a disc alpha, colour zeroed where fully transparent."""
    rgb, alpha = photo(), disc_alpha()
    rgb = np.where(alpha[..., None] == 0, 0, rgb).astype(np.uint8)
    rgba = np.dstack([rgb, alpha])
    return save(Image.fromarray(rgba, "RGBA"), "PNG"), rgba


def rgb16() -> np.ndarray:
    """(H, W, 3) uint16: the photo at 16 bits with a smooth ramp below the 8-bit steps."""
    base = photo().astype(np.uint32) * 257
    ramp = (np.arange(W, dtype=np.uint32)[None, :, None] * 3) % 257  # sub-8-bit detail
    return np.clip(base + ramp, 0, 65535).astype(np.uint16)


def png16(rgb: np.ndarray, alpha: np.ndarray | None = None) -> bytes:
    import cv2

    img = rgb[:, :, ::-1] if alpha is None else np.dstack([rgb[:, :, ::-1], alpha])
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img))
    assert ok
    return buf.tobytes()


def tiff16(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".tiff", np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return buf.tobytes()


def grey16_png() -> tuple[bytes, np.ndarray]:
    import cv2

    grey = np.ascontiguousarray(rgb16()[:, :, 1])
    ok, buf = cv2.imencode(".png", grey)
    assert ok
    return buf.tobytes(), grey


def la16_png() -> tuple[bytes, np.ndarray, np.ndarray]:
    """A 16-bit grey + alpha PNG (colour type 4), written chunk by chunk: neither Pillow nor OpenCV writes one."""
    import zlib

    grey, alpha = rgb16()[:, :, 0], (disc_alpha().astype(np.uint16) * 257 - 1).clip(0).astype(np.uint16)
    la = np.dstack([grey, alpha]).astype(">u2")
    raw = b"".join(b"\0" + la[y].tobytes() for y in range(H))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 16, 4, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return png, grey, alpha


def palette_rgba_png() -> bytes:
    """A palette image whose palette has alpha (PNG tRNS): Pillow's mode P with transparency."""
    rgba = np.dstack([photo(), disc_alpha()])
    return save(Image.fromarray(rgba, "RGBA").quantize(64), "PNG")


def save(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


# --- an ICC profile that is not sRGB ---------------------------------------------------------------


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + b"\0" * 4 + _s15(x) + _s15(y) + _s15(z)


def linear_profile(described: bool = True, name: str = LINEAR_NAME) -> bytes:
    """An ICC v2 display profile with sRGB's primaries and a linear (gamma 1.0) tone curve: 50 % in it
    is 188 in sRGB, so a conversion is plain to see. ``name``: its description."""
    name = name.encode()
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(name) + 1) + name + b"\0" + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    curve = b"curv" + b"\0" * 4 + struct.pack(">I", 1) + struct.pack(">H", 0x0100) + b"\0\0"
    tags = [(b"desc", desc)] if described else []
    tags += [(b"wtpt", _xyz(*_D50)), (b"rXYZ", _xyz(*_COLORANTS[0])),
            (b"gXYZ", _xyz(*_COLORANTS[1])), (b"bXYZ", _xyz(*_COLORANTS[2])),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve), (b"cprt", b"text" + b"\0" * 4 + b"none\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, blobs = b"", b""
    for sig, blob in tags:
        blob += b"\0" * (-len(blob) % 4)
        table += sig + struct.pack(">II", offset + len(blobs), len(blob))
        blobs += blob
    size = offset + len(blobs)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + b"\0" * 12
              + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + _s15(_D50[0]) + _s15(_D50[1]) + _s15(_D50[2])
              + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + blobs


# --- TIFFs with layouts Pillow does not read --------------------------------------------------------


def raw_tiff(h: int, w: int, samples: int, planar: int, pixels: bytes, photometric: int,
             extra: tuple[int, ...] = ()) -> bytes:
    """A little-endian, uncompressed 16-bit TIFF with the given layout: one strip, or with planar
    configuration 2 one strip per sample plane (``pixels`` holds the planes one after another)."""
    strips = samples if planar == 2 else 1
    size = len(pixels) // strips

    def short(*v: int) -> bytes:
        return struct.pack("<" + "H" * len(v), *v)

    def longs(*v: int) -> bytes:
        return struct.pack("<" + "I" * len(v), *v)

    tail = 8 + 2 + 12 * (11 if extra else 10) + 4  # where out-of-line values start
    strip_at = tail + 64  # room for the out-of-line values below, then the pixels
    entries = [(256, 3, 1, short(w)), (257, 3, 1, short(h)), (258, 3, samples, short(*[16] * samples)),
               (259, 3, 1, short(1)), (262, 3, 1, short(photometric)),
               (273, 4, strips, longs(*[strip_at + k * size for k in range(strips)])),
               (277, 3, 1, short(samples)), (278, 3, 1, short(h)), (279, 4, strips, longs(*[size] * strips)),
               (284, 3, 1, short(planar))]
    if extra:
        entries.append((338, 3, len(extra), short(*extra)))
    out_of_line, body = b"", b""
    for tag, kind, count, value in sorted(entries):
        if len(value) > 4:
            field = longs(tail + len(out_of_line))
            out_of_line += value + b"\0" * (len(value) % 2)
        else:
            field = value + b"\0" * (4 - len(value))
        body += struct.pack("<HHI", tag, kind, count) + field
    assert len(out_of_line) <= 64
    head = b"II*\0" + longs(8) + short(len(entries)) + body + b"\0" * 4 + out_of_line
    return head + b"\0" * (strip_at - len(head)) + pixels


def grey_alpha_tiff16() -> bytes:
    """16-bit grey + alpha (2 samples per pixel, interleaved)."""
    v = np.dstack([rgb16()[:, :, 0], np.full((H, W), 65535, np.uint16)]).astype("<u2")
    return raw_tiff(H, W, 2, 1, v.tobytes(), photometric=1, extra=(2,))


def planar_rgb_tiff16() -> bytes:
    """16-bit RGB stored plane after plane (PlanarConfiguration 2) in one strip."""
    v = np.transpose(rgb16(), (2, 0, 1)).astype("<u2")
    return raw_tiff(H, W, 3, 2, v.tobytes(), photometric=2)
