"""TIFF written and read with tifffile where Pillow and OpenCV fall short.

Writing (:func:`encode_tiff`): every ``--format tiff`` output, 8- or 16-bit, grey or RGB, with or
without (unassociated) alpha, deflate-compressed, carrying what PNG outputs carry: the sRGB ICC tag
when the input had a profile, the XMP packet (tag 700), and the EXIF: its text tags of IFD0 (Make,
Model, DateTime, Artist, Copyright, ...) as tags of the output's IFD0, and its Exif and GPS sub-IFDs
appended after the image data with IFD0 pointing to them (tifffile writes no sub-IFD of that kind,
and Pillow's TIFF writer drops the Exif IFD under compression). The sub-IFDs are re-serialised with
Pillow's ``ImageFileDirectory_v2`` at their new offsets, types kept; MakerNote and the Interoperability
IFD are left out (vendor blobs and pointers whose offsets would no longer hold). BigTIFF outputs
(over 4 GB) carry no sub-IFD.

Reading (:func:`read_planar`): a TIFF stored plane by plane (PlanarConfiguration 2), which Pillow
and OpenCV both misread without an error.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import TiffImagePlugin

EXIF_IFD, GPS_IFD, INTEROP_IFD, MAKER_NOTE = 34665, 34853, 40965, 37500
# IFD0 text tags carried from the input's EXIF (tifffile writes the image's own structural tags)
TEXT_TAGS = (270, 271, 272, 305, 306, 315, 33432)  # description, make, model, software, date, artist, copyright
XMP_TAG = 700
_ASCII, _LONG = 2, 4


def encode_tiff(pixels: np.ndarray, *, alpha: bool, icc: bytes = b"", exif: bytes = b"", xmp: bytes = b"") -> bytes:
    """``pixels``: (H, W) grey, (H, W, 2) grey + alpha, (H, W, 3) RGB or (H, W, 4) RGBA, uint8 or uint16
    (``alpha``: the last channel is alpha) -> TIFF file bytes with the metadata given (module doc)."""
    import tifffile  # lazy: only TIFF outputs need it

    grey = pixels.ndim == 2 or pixels.shape[2] in (1, 2)
    ifd0, subs = _exif_parts(exif)
    extratags = [(tag, "s", 0, value, True) for tag, value in ifd0]
    if xmp:
        extratags.append((XMP_TAG, "B", len(xmp), xmp, True))
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.ascontiguousarray(pixels), photometric="minisblack" if grey else "rgb",
                     extrasamples=["unassalpha"] if alpha else None, compression="zlib",
                     iccprofile=icc or None, metadata=None, software=False, extratags=extratags)
    return _with_sub_ifds(buf.getvalue(), subs)


def _exif_parts(exif: bytes) -> tuple[list[tuple[int, str]], dict[int, TiffImagePlugin.ImageFileDirectory_v2]]:
    """A TIFF-structured EXIF block -> (IFD0's text tags, {pointer tag: its sub-IFD}); nothing when the
    block cannot be parsed (the output is still written, without it)."""
    if len(exif) < 8 or exif[:4] not in (b"II*\x00", b"MM\x00*"):
        return [], {}
    try:
        fp = io.BytesIO(exif)
        head = TiffImagePlugin.ImageFileDirectory_v2(exif[:8])
        fp.seek(head.next)
        head.load(fp)
        text = [(tag, str(head[tag]).rstrip("\x00")) for tag in TEXT_TAGS  # TIFF ASCII is 7-bit: others are left out
                if tag in head and head.tagtype.get(tag) == _ASCII and str(head[tag]).strip("\x00 ")
                and str(head[tag]).isascii()]
        subs = {}
        for pointer in (EXIF_IFD, GPS_IFD):
            if pointer not in head:
                continue
            sub = TiffImagePlugin.ImageFileDirectory_v2(exif[:8])
            fp.seek(int(head[pointer]))
            sub.load(fp)
            for dropped in (MAKER_NOTE, INTEROP_IFD):
                if dropped in sub:
                    del sub[dropped]
            subs[pointer] = sub
        return text, subs
    except (OSError, ValueError, KeyError, TypeError, struct.error, SyntaxError):
        return [], {}


def _with_sub_ifds(tiff: bytes, subs: dict[int, TiffImagePlugin.ImageFileDirectory_v2]) -> bytes:
    """``tiff`` (classic TIFF) with ``subs`` appended and IFD0 rewritten at the end to point to them (the
    header then points to the new IFD0; the old one stays as unreferenced bytes)."""
    if not subs or tiff[:4] not in (b"II*\x00", b"MM\x00*"):
        return tiff
    end = "<" if tiff[:2] == b"II" else ">"
    data = bytearray(tiff)
    pointers = []
    for tag, sub in subs.items():
        if sub.prefix != tiff[:2]:  # the EXIF block's byte order, not the file's: re-read in the file's
            sub = _reordered(sub, tiff[:8])
        data += b"\x00" * (len(data) % 2)  # IFDs start on a word boundary
        at = len(data)
        try:
            data += sub.tobytes(at)
        except (TypeError, ValueError, struct.error, KeyError):  # a value Pillow cannot write back: that IFD is left out
            del data[at:]
            continue
        pointers.append(struct.pack(end + "HHII", tag, _LONG, 1, at))
    if not pointers:
        return tiff
    (first,) = struct.unpack(end + "I", data[4:8])
    (count,) = struct.unpack(end + "H", data[first:first + 2])
    entries = [bytes(data[first + 2 + 12 * i:first + 14 + 12 * i]) for i in range(count)]
    next_ifd = bytes(data[first + 2 + 12 * count:first + 6 + 12 * count])
    entries = sorted(entries + pointers, key=lambda e: struct.unpack(end + "H", e[:2])[0])
    data += b"\x00" * (len(data) % 2)
    at = len(data)
    data += struct.pack(end + "H", len(entries)) + b"".join(entries) + next_ifd
    if len(data) >= 2**32:
        return tiff
    data[4:8] = struct.pack(end + "I", at)
    return bytes(data)


def _reordered(sub: TiffImagePlugin.ImageFileDirectory_v2, header: bytes) -> TiffImagePlugin.ImageFileDirectory_v2:
    out = TiffImagePlugin.ImageFileDirectory_v2(header)
    for tag in sub:
        out[tag] = sub[tag]
        out.tagtype[tag] = sub.tagtype[tag]
    return out


def read_planar(data: bytes, height: int, width: int, channels: int) -> np.ndarray:
    """A TIFF stored plane by plane -> (H, W, channels) samples of its own dtype; ValueError when the
    file does not hold that."""
    import tifffile  # lazy

    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        page = tif.pages[0]
        arr = page.asarray()
        if page.planarconfig == 2 and arr.ndim == 3 and arr.shape[0] == channels:
            arr = np.moveaxis(arr, 0, -1)
    if arr.shape != (height, width, channels):
        raise ValueError(f"planar TIFF holds {arr.shape}, expected {(height, width, channels)}")
    return np.ascontiguousarray(arr)
