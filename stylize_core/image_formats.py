"""Pixel formats kept: alpha, 16 bits, grey, colour profiles and metadata from input to output.

:func:`decode_image_full` goes through the same guards as :func:`stylize_core.image_io.decode_image`
(header pixel count, allowlist, truncation, EXIF orientation) but keeps what that function throws
away: the alpha plane (exactly, at the file's bit depth), 16-bit samples, whether the image is grey,
and the EXIF/XMP metadata. :func:`stylize_core.image_encode.encode_image_full` writes an output in the same format where the
output format can hold it. The policy, for both (docs/formats.md):

- the network sees sRGB: an embedded ICC profile that is not sRGB is converted to sRGB with
  littlecms (``PIL.ImageCms``); outputs of such inputs are sRGB and tagged with an sRGB profile;
- alpha is never composited into the colour the network sees; fully transparent pixels, whose
  stored colour is arbitrary (often black), are filled with the alpha-weighted mean of the visible
  colour so that nothing invisible bleeds into visible edges through the network's receptive field;
  the output carries the input's alpha plane unchanged (png, webp), or is flattened on a background
  (jpeg);
- 16-bit sources (PNG, TIFF) travel as uint16 and are stylised in float (0..255 with 1/257 steps),
  never through 8 bits; png outputs are 16-bit, jpeg/webp (8-bit formats) are rounded once;
- grey sources come back grey (luma of the stylised colour), palette sources as RGB or RGBA;
- EXIF and XMP are copied with the orientation reset to 1 (the pixels are already upright).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .colour16 import read_colour16
from .icc import is_srgb, profile_name, read_profile, srgb_profile, to_rgb, to_srgb, to_srgb16
from .image_io import (
    DEFAULT_MAX_PIXELS, Source, _float_grey_to_u8, _has_alpha,
    decode_guarded,
)
from .image_size import max_side_size, resize_lanczos

__all__ = ["ALPHA_FLATTENED", "ALPHA_KEPT", "DecodedImage", "PixelFormat", "composite_any", "decode_image_full", "eight_bit",
           "network_input", "pack_pixels", "resized", "srgb_profile", "unpack_pixels"]

ALPHA_KEPT, ALPHA_FLATTENED = "kept", "flattened"
_GREY_MODES = frozenset({"1", "L", "LA", "La", "F"})
_EXIF_PREFIX = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class PixelFormat:
    """What an input was, besides its sRGB colour: all an output needs to be written the same way."""

    mode: str = "RGB"  # the source's Pillow mode; "RGB;16" / "RGBA;16" for 16-bit colour
    bits: int = 8  # 8 or 16: the sample depth of the pixels (and of the alpha plane)
    grey: bool = False
    alpha: np.ndarray | None = None  # (H, W) uint8, or uint16 when bits == 16; exactly the file's
    profile: str = ""  # the description of the input's ICC profile ("": none); pixels are sRGB either way
    exif: bytes = b""  # TIFF-structured EXIF (no "Exif\0\0" prefix), orientation reset to 1
    xmp: bytes = b""

    @property
    def plain(self) -> bool:
        """8-bit RGB with nothing to carry: what :func:`~stylize_core.image_io.decode_image` gives."""
        return self.bits == 8 and not self.grey and self.alpha is None and not (self.profile or self.exif or self.xmp)

    @property
    def label(self) -> str:
        """The format as metrics rows record it, e.g. ``RGBA``, ``RGB;16``, ``L``, ``P``."""
        return self.mode

    def to_bytes(self) -> bytes:
        """A compact, pickle-free encoding (a JSON header, then the alpha plane, EXIF and XMP)."""
        alpha = b"" if self.alpha is None else np.ascontiguousarray(self.alpha).tobytes()
        head = {"mode": self.mode, "bits": self.bits, "grey": self.grey, "profile": self.profile,
                "alpha": None if self.alpha is None else [*self.alpha.shape, self.alpha.dtype.str],
                "sizes": [len(alpha), len(self.exif), len(self.xmp)]}
        text = json.dumps(head).encode()
        return struct.pack("<I", len(text)) + text + alpha + self.exif + self.xmp

    @classmethod
    def from_bytes(cls, raw: bytes) -> PixelFormat:
        if not raw:
            return cls()
        (n,) = struct.unpack("<I", raw[:4])
        head = json.loads(raw[4 : 4 + n])
        pos = 4 + n
        parts = []
        for size in head["sizes"]:
            parts.append(raw[pos : pos + size])
            pos += size
        alpha = None
        if head["alpha"] is not None:
            h, w, dtype = head["alpha"]
            alpha = np.frombuffer(parts[0], dtype=np.dtype(dtype)).reshape(h, w)
        return cls(head["mode"], head["bits"], head["grey"], alpha, head["profile"], parts[1], parts[2])


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # (H, W, 3) sRGB: uint8, or uint16 (0..65535) when format.bits == 16
    format: PixelFormat
    size: tuple[int, int]  # the file's (height, width) after orientation (from its header)


def network_input(pixels: np.ndarray, stylizer: object = None) -> np.ndarray:
    """What ``stylizer`` is given: uint8 as is; uint16 as float32 in 0..255 (steps of 1/257, not
    rounded) where the stylizer takes float (``accepts_float``: the feed-forward networks, style
    prediction's included, AdaIN, Gatys optimisation and the regions renderer), else rounded to uint8."""
    if pixels.dtype != np.uint16:
        return pixels
    if stylizer is None or getattr(stylizer, "accepts_float", False):
        return pixels.astype(np.float32) / np.float32(257)
    return eight_bit(pixels)


def pack_pixels(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint16 -> (H, W, 6) uint8 (its little-endian bytes), uint8 as is: a pipeline column
    then holds one tensor type, whatever the inputs' depths (Ray Data pickles mixed-dtype columns)."""
    if pixels.dtype == np.uint16:
        return np.ascontiguousarray(pixels, dtype="<u2").view(np.uint8)
    return pixels


def unpack_pixels(pixels: np.ndarray) -> np.ndarray:
    """The inverse of :func:`pack_pixels`."""
    if pixels.ndim == 3 and pixels.shape[2] == 6 and pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels).view("<u2").astype(np.uint16, copy=False)
    return pixels


def eight_bit(pixels: np.ndarray) -> np.ndarray:
    """uint8 as is; uint16 (0..65535) or float32 (0..255) rounded to uint8."""
    if pixels.dtype == np.uint16:
        return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if pixels.dtype != np.uint8:
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return pixels


def composite_any(image: np.ndarray, styled: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`stylize_core.masks.composite` for any pixels: uint8 twice gives uint8 as there; a 16-bit
    input (uint16) or a float output gives float32 in 0..255, never rounded to 8 bits. An output that is
    a whole number of times the input's size (a super-resolution network's) is composited over the
    input upscaled with Lanczos (what ``--evaluate`` compares with), the weights (at the input's size)
    upscaled bilinearly."""
    from .masks import MaskError, check_size, composite

    check_size(weights, image.shape[0], image.shape[1])
    scale = styled.shape[0] // image.shape[0]
    if styled.shape[:2] != image.shape[:2]:
        if scale < 2 or styled.shape[:2] != (image.shape[0] * scale, image.shape[1] * scale):
            raise MaskError(f"the styled output is {styled.shape[1]}x{styled.shape[0]} but the input is "
                            f"{image.shape[1]}x{image.shape[0]}: masks apply to outputs of the input's size or a "
                            "whole multiple of it")
        image, weights = _upscaled_under(image, weights, styled.shape[1], styled.shape[0])
    if image.dtype == np.uint8 and styled.dtype == np.uint8:
        return composite(image, styled, weights)
    x = network_input(image).astype(np.float32)
    return x + (styled.astype(np.float32) - x) * np.asarray(weights, np.float32)[..., None]


def _upscaled_under(image: np.ndarray, weights: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The input (Lanczos) and the mask's weights (bilinear, kept in 0..1) at a larger output's size."""
    import cv2  # lazy

    w = cv2.resize(np.asarray(weights, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return _resize_any(image, width, height), np.clip(w, 0.0, 1.0)


def resized(decoded: DecodedImage, max_side: int | None) -> tuple[np.ndarray, PixelFormat]:
    """Pixels and format downscaled (Lanczos, alpha too) so the longer side is at most ``max_side``."""
    pixels, fmt = decoded.pixels, decoded.format
    h, w = pixels.shape[:2]
    size = max_side_size(w, h, max_side)
    if size is None:
        return pixels, fmt
    alpha = None if fmt.alpha is None else _resize_any(fmt.alpha, *size)
    return _resize_any(pixels, *size), _replace_alpha(fmt, alpha)


def decode_image_full(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None
                      ) -> DecodedImage:
    """Decode like :func:`~stylize_core.image_io.decode_image_sized` (same guards, same errors, same
    size under ``max_side``), keeping alpha, 16 bits, grey, the ICC profile's conversion to sRGB, EXIF and XMP."""
    (pixels, fmt), full, target = decode_guarded(data, max_pixels, max_side, _convert)
    if target is not None and pixels.shape[:2] != (target[1], target[0]):
        pixels = _resize_any(pixels, *target)
        if fmt.alpha is not None:
            fmt = _replace_alpha(fmt, _resize_any(fmt.alpha, *target))
    return DecodedImage(pixels, fmt, full)


def _replace_alpha(fmt: PixelFormat, alpha: np.ndarray | None) -> PixelFormat:
    return PixelFormat(fmt.mode, fmt.bits, fmt.grey, alpha, fmt.profile, fmt.exif, fmt.xmp)


# --- decode ---------------------------------------------------------------------------------------


def _convert(src: Source) -> tuple[np.ndarray, PixelFormat]:
    img = src.image
    mode = img.mode
    icc = img.info.get("icc_profile") or src.stored.info.get("icc_profile") or b""
    profile = read_profile(icc) if icc else None
    exif = _exif(src.stored)
    xmp = _xmp(src.stored)
    if src.colour16:
        pixels, alpha = read_colour16(src.stored, src.data, src.orientation)
        grey = src.rawmode.startswith("LA")  # Pillow opens 16-bit grey+alpha PNGs as RGBA
        bits, label = 16, "LA;16" if grey else f"{src.stored.mode};16"
    elif mode.startswith("I"):
        values = np.asarray(img).astype(np.int64)
        top = src.top  # as decode_image scales it: PPM is already stretched to 16 bits, "I" may hold more
        if top is None:
            top = 0xFFFF if values.size == 0 or values.max() <= 0xFFFF else (1 << 31) - 1
        values = np.clip(values, 0, top)
        grey16 = ((values * 65535 + top // 2) // top).astype(np.uint16)
        pixels, alpha, bits, grey, label = np.repeat(grey16[:, :, None], 3, axis=2), None, 16, True, mode
    elif mode == "F":
        g = _float_grey_to_u8(np.asarray(img))
        pixels, alpha, bits, grey, label = np.repeat(g[:, :, None], 3, axis=2), None, 8, True, mode
    elif mode in _GREY_MODES:
        la = img.convert("LA") if mode in ("LA", "La") or _has_alpha(img) else img.convert("L")
        arr = np.asarray(la)
        g = arr if arr.ndim == 2 else arr[:, :, 0]
        alpha = arr[:, :, 1].copy() if arr.ndim == 3 else None
        pixels, bits, grey, label = np.repeat(g[:, :, None], 3, axis=2), 8, True, mode
        if profile is not None and not is_srgb(profile):
            pixels = np.asarray(to_srgb(Image.fromarray(np.ascontiguousarray(g), "L"), profile))
    else:
        rgba = _has_alpha(img)
        conv = img.convert("RGBA") if rgba else (img if mode == "RGB" else to_rgb(img, profile))
        arr = np.asarray(conv)
        pixels = np.ascontiguousarray(arr[:, :, :3])
        alpha = arr[:, :, 3].copy() if rgba else None
        bits, grey = 8, False
        label = "RGBA" if mode == "P" and rgba and img.palette is not None and img.palette.mode == "RGBA" else mode
        if label == "P" and rgba:
            label = "P+transparency"
        if profile is not None and not is_srgb(profile) and mode != "CMYK":
            pixels = np.asarray(to_srgb(Image.fromarray(pixels, "RGB"), profile))
    if bits == 16 and profile is not None and not is_srgb(profile):
        pixels = to_srgb16(pixels, profile, grey)
    if alpha is not None:
        pixels = _fill_transparent(pixels, alpha)
    name = "" if profile is None else profile_name(profile)
    pixels = np.ascontiguousarray(pixels)
    if not pixels.flags.writeable:  # np.asarray of a Pillow image is read-only; callers own their pixels
        pixels = pixels.copy()
    return pixels, PixelFormat(label, bits, grey, alpha, name, exif, xmp)


def _fill_transparent(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    hidden = alpha == 0
    if not hidden.any():
        return pixels
    w = alpha.astype(np.float64)
    total = w.sum()
    fill = (pixels.reshape(-1, 3).astype(np.float64) * w.reshape(-1, 1)).sum(0) / total if total else None
    out = pixels.copy()
    out[hidden] = np.zeros(3) if fill is None else np.rint(fill).astype(pixels.dtype)
    return out


def _exif(img: Image.Image) -> bytes:
    """The file's EXIF block, TIFF-structured, orientation set to 1; TIFF files' own tags are the
    image's layout, not EXIF, and are not carried."""
    if img.format == "TIFF":
        return b""
    raw = img.info.get("exif") or b""
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    if raw.startswith(_EXIF_PREFIX):
        raw = raw[len(_EXIF_PREFIX):]
    return _orientation_reset(raw) if raw[:2] in (b"II", b"MM") else b""


def _orientation_reset(tiff: bytes) -> bytes:
    """``tiff`` with IFD0's orientation value (if any) set to 1 and its link to IFD1 (the embedded
    thumbnail, which would show the unstylised picture) cut; every other byte as it was, so maker
    notes and sub-IFDs keep their offsets."""
    try:
        end = "<" if tiff[:2] == b"II" else ">"
        (ifd,) = struct.unpack(end + "I", tiff[4:8])
        (count,) = struct.unpack(end + "H", tiff[ifd : ifd + 2])
        out = bytearray(tiff)
        for k in range(count):
            at = ifd + 2 + 12 * k
            tag, kind = struct.unpack(end + "HH", tiff[at : at + 4])
            if tag == _ORIENTATION_TAG and kind == 3:  # SHORT, stored in the entry itself
                out[at + 8 : at + 10] = struct.pack(end + "H", 1)
        link = ifd + 2 + 12 * count
        if link + 4 > len(tiff):
            return b""
        out[link : link + 4] = b"\0\0\0\0"
    except (struct.error, IndexError):
        return b""  # unreadable: not carried
    return bytes(out)


def _xmp(img: Image.Image) -> bytes:
    raw = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp") or b""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    # XMP may repeat the orientation; the pixels are upright now
    raw = re.sub(rb'(tiff:Orientation=")[2-8](")', rb"\g<1>1\g<2>", raw)
    return re.sub(rb"(<tiff:Orientation>)[2-8](</tiff:Orientation>)", rb"\g<1>1\g<2>", raw)


def _resize_any(a: np.ndarray, width: int, height: int) -> np.ndarray:
    """Lanczos resize of (H, W, 3) or (H, W) uint8/uint16 to (height, width), per plane in float for uint16."""
    if a.dtype == np.uint8 and a.ndim == 3:
        return resize_lanczos(a, width, height)
    planes = [a] if a.ndim == 2 else [a[:, :, c] for c in range(a.shape[2])]
    out = []
    for p in planes:
        f = Image.fromarray(np.ascontiguousarray(p.astype(np.float32)), "F").resize((width, height), Image.Resampling.LANCZOS)
        top = 65535 if a.dtype == np.uint16 else 255
        out.append(np.clip(np.rint(np.asarray(f)), 0, top).astype(a.dtype))
    return out[0] if a.ndim == 2 else np.ascontiguousarray(np.stack(out, axis=2))
