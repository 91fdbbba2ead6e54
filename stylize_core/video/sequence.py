"""Numbered image sequences (``shot010/frame_0001.png`` ...) as clips: grouping, reading, writing.

PNG (8 and 16 bit, with or without alpha) and JPEG. Frames are stylised as 8-bit RGB; a 16-bit
frame is rounded to 8 bits on the way in and written back at 16 bits (x257, so 255 -> 65535), an
alpha channel is carried over from the input frame unchanged, and a grey frame comes back as RGB
(the style adds colour). Linear float formats (EXR) are not supported: stylisation needs
display-referred values, and a tone-mapping round trip is not implemented.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .errors import VideoError

SEQUENCE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
_NUMBERED = re.compile(r"^(?P<stem>.*?)(?P<num>\d+)(?P<ext>\.[A-Za-z]+)$")


@dataclass(frozen=True)
class FrameSequence:
    """One clip: files of one directory sharing a stem and extension, ordered by frame number."""

    name: str  # e.g. "shot010/frame_" + "####.png": the clip's identity in metrics rows
    rel_paths: tuple[str, ...]
    numbers: tuple[int, ...]

    @property
    def frames(self) -> int:
        return len(self.rel_paths)


def find_sequences(rel_paths: Iterable[str]) -> list[FrameSequence]:
    """Group numbered image files into sequences (sorted by name); other files are ignored."""
    groups: dict[tuple[str, str, str, int], list[tuple[int, str]]] = {}
    for rel in rel_paths:
        d, base = posixpath.split(rel)
        m = _NUMBERED.match(base)
        if not m or m["ext"].lower() not in SEQUENCE_EXTENSIONS:
            continue
        key = (d, m["stem"], m["ext"], len(m["num"]))  # frame_0001 and frame_1 are different sequences
        groups.setdefault(key, []).append((int(m["num"]), rel))
    out = []
    for (d, stem, ext, width), items in groups.items():
        items.sort()
        name = posixpath.join(d, f"{stem}{'#' * width}{ext}")
        out.append(FrameSequence(name, tuple(r for _, r in items), tuple(n for n, _ in items)))
    return sorted(out, key=lambda s: s.name)


@dataclass(frozen=True)
class FrameMeta:
    """What a frame file was, so its output can be written the same way."""

    depth: int  # 8 or 16
    alpha: np.ndarray | None  # (H, W) in the input's depth


def read_sequence_frame(data: bytes) -> tuple[np.ndarray, FrameMeta]:
    """File bytes -> ((H, W, 3) uint8 RGB, meta). OpenCV, because Pillow reads 16-bit RGB PNGs as 8 bits."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        raise VideoError("corrupt", "not a readable PNG/JPEG frame")
    if img.dtype not in (np.uint8, np.uint16):
        raise VideoError("unsupported_format", f"{img.dtype} samples (only 8- and 16-bit frames)")
    depth = 16 if img.dtype == np.uint16 else 8
    if img.ndim == 2:
        img = img[..., None]
    alpha = img[..., 3].copy() if img.shape[2] == 4 else None
    rgb = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB) if img.shape[2] >= 3 else np.repeat(img, 3, axis=2)
    if depth == 16:
        rgb = ((rgb.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.ascontiguousarray(rgb), FrameMeta(depth, alpha)


def write_sequence_frame(rgb: np.ndarray, meta: FrameMeta, ext: str, jpeg_quality: int = 95) -> bytes:
    """(H, W, 3) uint8 RGB -> file bytes in ``ext``'s format at the input frame's bit depth."""
    import cv2

    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if meta.depth == 16:
        img = img.astype(np.uint16) * 257
    if meta.alpha is not None and ext.lower() == ".png" and meta.alpha.shape == img.shape[:2]:
        img = np.dstack([img, meta.alpha.astype(img.dtype)])
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext.lower(), img, params)
    if not ok:
        raise VideoError("write_error", f"OpenCV could not encode a {ext} frame")
    return buf.tobytes()
