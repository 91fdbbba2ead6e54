"""Colour management for decoding: ICC profiles read, judged and converted to sRGB (the colour space
the networks were trained in).

8-bit pixels go through littlecms (``PIL.ImageCms``). Pillow has no 16-bit colour transforms, so
16-bit pixels of matrix/TRC profiles (Adobe RGB, Display P3, ProPhoto, linear, grey gamma: the usual
ones of 16-bit files) are converted here in float from the profile's own tone curves and colorants,
parsed from the ICC tags; other profiles (LUT-based) go through littlecms's 8-bit transform,
interpolated. Whether a profile is sRGB is judged by its colorants and curves, never its name. The
policy around this (outputs of converted inputs are tagged sRGB) is :mod:`stylize_core.image_formats`'s.
"""

from __future__ import annotations

import functools
import io
import struct

import numpy as np
from PIL import Image, ImageCms

from .image_errors import CorruptImageError

__all__ = ["is_srgb", "profile_name", "read_profile", "srgb_icc", "srgb_profile", "to_rgb", "to_srgb", "to_srgb16"]


def to_rgb(img: Image.Image, profile: ImageCms.ImageCmsProfile | None) -> Image.Image:
    """Any other colour mode -> RGB; CMYK through its profile when it has one (Pillow's own CMYK
    conversion ignores ink and is far off)."""
    if img.mode == "CMYK" and profile is not None:
        return ImageCms.profileToProfile(img, profile, srgb_profile(), outputMode="RGB")
    return img.convert("RGB")


def read_profile(icc: bytes) -> ImageCms.ImageCmsProfile:
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except Exception as exc:  # noqa: BLE001 - a broken profile would give wrong colours: an error row
        raise CorruptImageError(f"embedded ICC profile cannot be read ({len(icc)} bytes): {exc}") from None


def profile_name(profile: ImageCms.ImageCmsProfile) -> str:
    try:
        return ImageCms.getProfileDescription(profile).strip() or "unnamed profile"
    except (ImageCms.PyCMSError, UnicodeError, ValueError):  # a profile without a readable description
        return "unnamed profile"


def is_srgb(profile: ImageCms.ImageCmsProfile) -> bool:
    """Whether converting would change nothing: judged by the profile's colorants and tone curves, not
    its name (a profile called "sRGB something" may be anything). LUT-based profiles are converted."""
    shaper = _shaper(profile.tobytes())
    if shaper is None or len(shaper[1]) != 3:
        return False
    matrix, curves = _srgb_shaper()
    x = np.linspace(0, 1, 33)
    return bool(np.abs(shaper[0] - matrix).max() < 2e-3
                and all(np.abs(mine(x) - srgb(x)).max() < 2e-3 for mine, srgb in zip(shaper[1], curves)))


def to_srgb(img: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image:
    try:
        return ImageCms.profileToProfile(img, profile, srgb_profile(), outputMode="RGB")
    except ImageCms.PyCMSError as exc:
        raise CorruptImageError(f"embedded ICC profile cannot convert {img.mode} to sRGB: {exc}") from None


def to_srgb16(pixels: np.ndarray, profile: ImageCms.ImageCmsProfile, grey: bool) -> np.ndarray:
    """16-bit samples to sRGB. Matrix/TRC profiles (Adobe RGB, Display P3, ProPhoto, linear, grey
    gamma: the usual ones of 16-bit files) are evaluated here in float from the profile's own curves
    and colorants; others go through littlecms's 8-bit transform, interpolated (:func:`_to_srgb16_lut`)."""
    shaper = _shaper(profile.tobytes())
    if shaper is None:
        return _to_srgb16_lut(pixels, profile, grey)
    x = pixels.astype(np.float64) / 65535.0
    if grey:
        lin = np.repeat(shaper[1][0](x[:, :, :1]), 3, axis=2)  # grey: Y of the white point, R = G = B
    else:
        rgb = np.stack([curve(x[:, :, c]) for c, curve in enumerate(shaper[1])], axis=2)
        lin = rgb @ (np.linalg.inv(_srgb_shaper()[0]) @ shaper[0]).T  # profile RGB -> XYZ (D50) -> linear sRGB
    lin = np.clip(lin, 0.0, 1.0)
    out = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    return np.clip(np.rint(out * 65535.0), 0, 65535).astype(np.uint16)


def _srgb_shaper() -> tuple[np.ndarray, list]:
    shaper = _shaper(srgb_icc())
    assert shaper is not None  # littlecms's built-in sRGB is a matrix/TRC profile
    return shaper


@functools.lru_cache(maxsize=16)
def _shaper(icc: bytes) -> tuple[np.ndarray, list] | None:
    """A matrix/TRC profile's (3x3 colorant matrix, columns rXYZ gXYZ bXYZ; [curve per channel]), or one
    curve for a grey (kTRC) profile; None for anything else (LUT-based profiles: A2B0, CMYK, Lab, ...)."""
    try:
        space = icc[16:20]
        (count,) = struct.unpack(">I", icc[128:132])
        tags = {}
        for k in range(count):
            sig, off, size = struct.unpack(">4sII", icc[132 + 12 * k : 144 + 12 * k])
            tags[sig] = icc[off : off + size]
        if b"A2B0" in tags or icc[20:24] != b"XYZ ":
            return None
        if space == b"GRAY" and b"kTRC" in tags:
            return np.eye(3), [_curve(tags[b"kTRC"])]
        if space != b"RGB " or not all(t in tags for t in (b"rXYZ", b"gXYZ", b"bXYZ", b"rTRC", b"gTRC", b"bTRC")):
            return None
        cols = [np.array(struct.unpack(">3i", tags[t][8:20]), dtype=np.float64) / 65536 for t in (b"rXYZ", b"gXYZ", b"bXYZ")]
        return np.stack(cols, axis=1), [_curve(tags[t]) for t in (b"rTRC", b"gTRC", b"bTRC")]
    except (struct.error, ValueError, KeyError, IndexError, ZeroDivisionError):
        return None


def _curve(tag: bytes):
    """An ICC ``curv`` or ``para`` tone curve as a function of 0..1 arrays; ValueError for other types."""
    kind = tag[:4]
    if kind == b"curv":
        (n,) = struct.unpack(">I", tag[8:12])
        if n == 0:
            return lambda x: x
        if n == 1:
            gamma = struct.unpack(">H", tag[12:14])[0] / 256
            return lambda x: np.power(np.clip(x, 0, 1), gamma)
        table = np.array(struct.unpack(f">{n}H", tag[12 : 12 + 2 * n]), dtype=np.float64) / 65535
        grid = np.linspace(0, 1, n)
        return lambda x: np.interp(x, grid, table)
    if kind == b"para":
        (fn,) = struct.unpack(">H", tag[8:10])
        sizes = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}
        if fn not in sizes:
            raise ValueError(f"parametric curve type {fn}")
        p = [v / 65536 for v in struct.unpack(f">{sizes[fn]}i", tag[12 : 12 + 4 * sizes[fn]])]
        g, a, b, c, d, e, f = (p + [0.0] * 7)[:7] if fn != 0 else (p[0], 1, 0, 0, 0, 0, 0)
        if fn == 1:  # Y = (aX + b)^g for X >= -b/a, else 0
            d, c, e, f = -b / a, 0, 0, 0
        elif fn == 2:  # (aX + b)^g + c for X >= -b/a, else c
            c2 = p[3]
            d, c, e, f = -b / a, 0, c2, c2
        elif fn == 3:  # (aX + b)^g for X >= d, else cX
            d, e, f = p[4], 0, 0
        elif fn == 4:
            d, e, f = p[4], p[5], p[6]

        def curve(x, g=g, a=a, b=b, c=c, d=d, e=e, f=f):
            x = np.clip(x, 0, 1)
            return np.where(x >= d, np.power(np.clip(a * x + b, 0, None), g) + e, c * x + f)
        return curve
    raise ValueError(f"tone curve type {kind!r}")


def _to_srgb16_lut(pixels: np.ndarray, profile: ImageCms.ImageCmsProfile, grey: bool) -> np.ndarray:
    """16-bit samples through littlecms's 8-bit transform (Pillow has no 16-bit colour transforms),
    interpolated: T(f) plus the transform's step per channel times the fraction above the sample's
    8-bit step f. Gradients stay monotone and mostly finer than 8 bits, but values are only as
    accurate as the 8-bit outputs (about half an 8-bit step)."""
    x = pixels.astype(np.float32) / 257.0  # (H, W, 3) 0..255
    base = np.clip(np.floor(x), 0, 254)
    frac = x - base
    channels = [0] if grey else [0, 1, 2]
    mode = "L" if grey else "RGB"

    def t(arr: np.ndarray) -> np.ndarray:
        u8 = arr[:, :, 0] if grey else arr
        return np.asarray(to_srgb(Image.fromarray(np.ascontiguousarray(u8.astype(np.uint8)), mode), profile),
                          dtype=np.float32)

    b8 = base.astype(np.uint8)
    out = t(b8)
    for c in channels:
        step = b8.copy()
        step[:, :, c] += 1
        out += (t(step) - t(b8)) * frac[:, :, c : c + 1]
    return np.clip(np.rint(out * 257.0), 0, 65535).astype(np.uint16)


@functools.cache
def srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.cache
def srgb_icc() -> bytes:
    return srgb_profile().tobytes()
