"""Writing a stylised image in its input's pixel format: alpha kept (or flattened for jpeg), 16 bits
kept where the output format holds them, grey back to grey, sRGB-tagged when the input had a profile,
EXIF/XMP carried. The policy is :mod:`stylize_core.image_formats`'s (and docs/formats.md); this module
is its encoder: Pillow for 8-bit PNG, JPEG and WebP, OpenCV for 16-bit PNG (its chunks added here),
tifffile for 16-bit TIFF and TIFF with EXIF or XMP (:mod:`stylize_core.tiff_io`).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, PngImagePlugin

from .icc import srgb_icc
from .image_formats import _EXIF_PREFIX, ALPHA_FLATTENED, ALPHA_KEPT, PixelFormat, _resize_any
from .image_io import FORMAT_EXTENSIONS, TIFF_COMPRESSION
from .tiff_io import encode_tiff

__all__ = ["encode_image_full"]


def encode_image_full(image: np.ndarray, fmt: PixelFormat, out_format: str = "jpeg", quality: int = 90, *,
                      background: tuple[int, int, int] = (255, 255, 255)) -> tuple[bytes, str]:
    """Write a stylised image as the input was: ``(bytes, alpha)`` where alpha is ``kept``, ``flattened``
    (jpeg: composited on ``background``) or ``""`` (the input had none).

    ``image``: (H, W, 3) uint8, or float32 in 0..255 (a 16-bit input's output, not rounded to 8 bits),
    or uint16. png and tiff keep 16 bits and alpha (``fmt.alpha`` is resized with Lanczos only when the output
    has another size, e.g. a super-resolution network's); jpeg and webp are 8-bit formats. Grey inputs
    give grey outputs (luma, ITU-R 601) except in webp, which has no grey mode. An input with an ICC
    profile gives an output tagged sRGB; EXIF and XMP are carried into every format (tiff: the EXIF's
    text tags, Exif and GPS IFDs, stylize_core.tiff_io).
    """
    key = "jpeg" if out_format.lower() == "jpg" else out_format.lower()
    if key not in FORMAT_EXTENSIONS:
        raise ValueError(f"unsupported output format {out_format!r}; expected {sorted(FORMAT_EXTENSIONS)}")
    if not (isinstance(quality, (int, np.integer)) and not isinstance(quality, bool) and 1 <= quality <= 100):
        raise ValueError(f"quality must be an int in 1..100, got {quality!r}")
    if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape or image.dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f"expected a non-empty (H, W, 3) uint8, uint16 or float32 image, got {image.dtype} {image.shape}")
    # uint8 stays uint8 unless something must be computed (a flattening, luma, 16-bit output): the
    # plain 8-bit case costs what encode_image does
    colour = image if image.dtype == np.uint8 else _as_float(image)  # (H, W, 3) 0..255
    h, w = colour.shape[:2]
    alpha = fmt.alpha
    if alpha is not None and alpha.shape != (h, w):
        alpha = _resize_any(alpha, w, h)
    top = 65535.0 if alpha is not None and alpha.dtype == np.uint16 else 255.0
    sixteen = key in ("png", "tiff") and (fmt.bits == 16 or image.dtype != np.uint8)
    state = "" if alpha is None else ALPHA_KEPT
    if alpha is not None and key == "jpeg":
        a = alpha.astype(np.float32)[:, :, None] / top
        colour = colour.astype(np.float32) * a + np.asarray(background, dtype=np.float32) * (1 - a)
        alpha, state = None, ALPHA_FLATTENED
    grey = fmt.grey and key != "webp"
    if grey:
        colour = colour.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (H, W)
    icc = srgb_icc() if fmt.profile else b""
    if key == "tiff" and sixteen:
        planes = [_round(colour.astype(np.float32, copy=False) * 257.0, 65535, np.uint16)]
        if alpha is not None:
            if grey:  # 16-bit grey + alpha: RGBA with R = G = B, as the png (Pillow cannot open an LA;16 TIFF)
                planes[0] = np.repeat(planes[0][:, :, None], 3, axis=2)
            planes.append(alpha if alpha.dtype == np.uint16 else alpha.astype(np.uint16) * 257)
        arr = planes[0] if len(planes) == 1 else np.dstack(planes)
        return encode_tiff(arr, alpha=alpha is not None, icc=icc, exif=fmt.exif, xmp=fmt.xmp), state
    if sixteen:
        return _write16(colour.astype(np.float32, copy=False), alpha, fmt, icc), state
    planes = [colour if colour.dtype == np.uint8 else _round(colour, 255, np.uint8)]
    if alpha is not None:
        planes.append(alpha if alpha.dtype == np.uint8 else _round(alpha.astype(np.float32) / 257, 255, np.uint8))
    arr = planes[0] if len(planes) == 1 else np.dstack(planes)
    if key == "tiff" and (fmt.exif or fmt.xmp):  # Pillow's TIFF writer drops the Exif IFD under compression
        return encode_tiff(arr, alpha=alpha is not None, icc=icc, exif=fmt.exif, xmp=fmt.xmp), state
    pil = Image.fromarray(np.ascontiguousarray(arr), {(True, False): "L", (True, True): "LA", (False, False): "RGB",
                                                      (False, True): "RGBA"}[(grey, alpha is not None)])
    return _save(pil, key, quality, fmt, icc), state


def _as_float(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 257.0
    return image.astype(np.float32)


def _round(a: np.ndarray, top: float, dtype: type) -> np.ndarray:
    return np.clip(np.rint(a), 0, top).astype(dtype)


def _save(pil: Image.Image, key: str, quality: int, fmt: PixelFormat, icc: bytes) -> bytes:
    buf = io.BytesIO()
    extra: dict = {}
    if icc:
        extra["icc_profile"] = icc
    if key == "tiff":  # without EXIF/XMP (stylize_core.tiff_io writes those): as image_io.encode_image does
        pil.save(buf, format="TIFF", compression=TIFF_COMPRESSION, **extra)
    elif key == "png":
        if fmt.exif:
            extra["exif"] = fmt.exif
        if fmt.xmp:
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", fmt.xmp.decode("utf-8", "replace"))
            extra["pnginfo"] = info
        pil.save(buf, format="PNG", **extra)
    else:
        if fmt.exif:
            extra["exif"] = _EXIF_PREFIX + fmt.exif if key == "jpeg" else fmt.exif
        if fmt.xmp:
            extra["xmp"] = fmt.xmp
        pil.save(buf, format=key.upper(), quality=int(quality), **extra)
    return buf.getvalue()


def _write16(colour: np.ndarray, alpha: np.ndarray | None, fmt: PixelFormat, icc: bytes) -> bytes:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA) with its iCCP/eXIf/iTXt chunks. OpenCV writes the
    samples (Pillow cannot write 16-bit colour); the chunks are added here."""
    import cv2  # lazy

    sixteen = _round(colour * 257.0, 65535, np.uint16)
    a16 = None if alpha is None else (alpha if alpha.dtype == np.uint16 else alpha.astype(np.uint16) * 257)
    if sixteen.ndim == 2:
        img = sixteen if a16 is None else np.dstack([sixteen, sixteen, sixteen, a16])  # cv2 has no grey+alpha PNG
    else:
        img = sixteen[:, :, ::-1] if a16 is None else np.dstack([sixteen[:, :, ::-1], a16])
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img))
    if not ok:
        raise ValueError("OpenCV could not encode a 16-bit png")
    chunks = []
    if icc:
        chunks.append((b"iCCP", b"sRGB\x00\x00" + zlib.compress(icc)))
    if fmt.exif:
        chunks.append((b"eXIf", fmt.exif))
    if fmt.xmp:
        chunks.append((b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + fmt.xmp))
    return _with_chunks(buf.tobytes(), chunks)


def _with_chunks(png: bytes, chunks: list[tuple[bytes, bytes]]) -> bytes:
    """``png`` with ``chunks`` inserted right after IHDR (iCCP must precede IDAT)."""
    if not chunks:
        return png
    at = 8 + 12 + struct.unpack(">I", png[8:12])[0]  # signature + IHDR
    made = b"".join(struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d)) for k, d in chunks)
    return png[:at] + made + png[at:]
