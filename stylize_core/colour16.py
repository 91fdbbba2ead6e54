"""16-bit RGB(A) samples, which Pillow reduces to 8 bits (interleaved) or misreads (planar TIFF):
read with OpenCV from the same bytes and checked against Pillow's 8-bit decode, or, for a TIFF
stored plane by plane, with tifffile (:func:`stylize_core.tiff_io.read_planar`). Used by both
:mod:`stylize_core.image_io` (8-bit decode) and :mod:`stylize_core.image_formats` (16 bits kept)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .image_errors import CorruptImageError


def read_colour16(stored: Image.Image, data: bytes, orientation: int) -> tuple[np.ndarray, np.ndarray | None]:
    """16-bit RGB(A) samples ((H, W, 3) uint16, alpha (H, W) uint16 or None), which Pillow reduces to 8
    bits or misreads: OpenCV reads them from the file's ``data`` (Pillow has already refused truncation
    and checked the size of ``stored``, the file as Pillow opened it), then the EXIF ``orientation``
    is applied."""
    import cv2  # lazy: only 16-bit colour files need it

    tags = getattr(stored, "tag_v2", None)
    w, h = stored.size
    channels = 4 if stored.mode == "RGBA" else 3
    if tags is not None and tags.get(284) == 2:  # plane by plane: Pillow and OpenCV misread it silently
        from .tiff_io import read_planar

        try:
            planar = read_planar(data, h, w, channels)
        except Exception as exc:  # tifffile's own errors: a file it cannot read either
            raise CorruptImageError(f"16-bit TIFF stored plane by plane that cannot be read ({type(exc).__name__}: "
                                    f"{exc})") from None
        if planar.dtype != np.uint16:
            raise CorruptImageError(f"16-bit TIFF stored plane by plane whose samples are {planar.dtype}")
        alpha = np.ascontiguousarray(_orient(planar[:, :, 3], orientation)) if channels == 4 else None
        return np.ascontiguousarray(_orient(planar[:, :, :3], orientation)), alpha
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.shape != (h, w, channels):
        got = "nothing" if arr is None else f"{arr.dtype} {arr.shape}"
        raise CorruptImageError(f"16-bit {stored.mode} {stored.format} whose samples cannot be read "
                                f"as {h}x{w}x{channels} uint16 (got {got})")
    rgb = arr[:, :, 2::-1] if channels == 3 else arr[:, :, [2, 1, 0]]
    # Pillow decoded the same file at 8 bits: the two must agree, or one of them misread the layout
    eight = np.asarray(stored)[:, :, :3].astype(np.int32)
    if np.abs((rgb >> 8).astype(np.int32) - eight).max(initial=0) > 1:
        raise CorruptImageError(f"16-bit {stored.mode} {stored.format} whose samples Pillow and OpenCV "
                                "read differently (an unusual layout); not stylised rather than guessed")
    alpha = arr[:, :, 3] if channels == 4 else None
    rgb = _orient(rgb, orientation)
    alpha = None if alpha is None else np.ascontiguousarray(_orient(alpha, orientation))
    return np.ascontiguousarray(rgb), alpha


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation applied to an array (as ``ImageOps.exif_transpose`` does to an image)."""
    ops = {2: (np.fliplr,), 3: (lambda x: np.rot90(x, 2),), 4: (np.flipud,),
           5: (lambda x: np.swapaxes(x, 0, 1),), 6: (lambda x: np.rot90(x, -1),),
           7: (lambda x: np.rot90(np.swapaxes(x, 0, 1), 2),), 8: (lambda x: np.rot90(x, 1),)}
    for op in ops.get(orientation, ()):
        a = op(a)
    return a
