"""Clips the project makes itself: a camera pan over a photograph with sensor noise, a tone as
audio. The embedded demo, the tests and the benchmark use them (no video can be downloaded)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np


def sample_photo(name: str = "astronaut") -> np.ndarray:
    """An RGB photograph bundled with scikit-image: astronaut, coffee, chelsea, rocket, ..."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return np.ascontiguousarray(img[..., :3])


def pan_frames(photo: np.ndarray, n: int, size: tuple[int, int], *, speed: tuple[float, float] = (2.0, 0.5),
               zoom: float = 0.0, noise: float = 4.0, seed: int = 0) -> list[np.ndarray]:
    """``n`` frames of (height, width) = ``size[::-1]`` looking at ``photo`` through a camera that moves
    ``speed`` pixels per frame (sub-pixel, bilinear) and zooms by ``zoom`` per frame, plus Gaussian
    sensor noise of std ``noise`` (0..255) drawn anew for every frame, so per-frame stylisation flickers."""
    import cv2

    w, h = size
    rng = np.random.default_rng(seed)
    ph, pw = photo.shape[:2]
    # Scale the photo so the whole path stays inside it.
    need_w = w + abs(speed[0]) * n + 8
    need_h = h + abs(speed[1]) * n + 8
    s = max(need_w / pw, need_h / ph, 1e-6) * (1 + abs(zoom) * n)
    big = cv2.resize(photo, (int(pw * s) + 1, int(ph * s) + 1), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    cx0 = 4 + w / 2 + (abs(speed[0]) * n if speed[0] < 0 else 0)
    cy0 = 4 + h / 2 + (abs(speed[1]) * n if speed[1] < 0 else 0)
    frames = []
    for t in range(n):
        z = 1.0 + zoom * t
        cx, cy = cx0 + speed[0] * t, cy0 + speed[1] * t
        m = np.float32([[1 / z, 0, cx - w / (2 * z)], [0, 1 / z, cy - h / (2 * z)]])
        f = cv2.warpAffine(big, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
        f = f.astype(np.float32) + rng.normal(0, noise, f.shape).astype(np.float32) if noise else f.astype(np.float32)
        frames.append(np.clip(f + 0.5, 0, 255).astype(np.uint8))
    return frames


def make_clip(path: str, frames: Sequence[np.ndarray], *, fps: int = 24, durations: Sequence[int] | None = None,
              audio_hz: float | None = 440.0, sample_rate: int = 16000, rotation: int = 0, gop: int = 12,
              codec: str = "libx264", format: str | None = None, crf: int = 12,
              colorspace: int | None = None, color_range: int | None = None) -> list[int]:
    """Encode ``frames`` (RGB uint8) to ``path``; returns the frame pts written.

    ``durations``: per-frame durations in 1/(fps*100) ticks for a variable frame rate (default
    constant ``fps``); ``audio_hz``: a sine tone as an AAC track (None: no audio); ``rotation``:
    a display matrix rotation (degrees counter-clockwise) the player applies."""
    import av

    tb = Fraction(1, fps * 100)
    h, w = frames[0].shape[:2]
    pts_list = []
    with av.open(path, "w", format=format) as c:
        vs = c.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.time_base = tb
        vs.codec_context.time_base = tb
        vs.codec_context.gop_size = gop
        if codec == "libx264":
            vs.codec_context.options = {"crf": str(crf), "preset": "veryfast", "keyint_min": str(gop), "sc_threshold": "0"}
        if colorspace is not None:
            vs.codec_context.colorspace = colorspace
        if color_range is not None:
            vs.codec_context.color_range = color_range
        if rotation:
            vs.set_display_rotation(rotation)
        aus = None
        if audio_hz:
            aus = c.add_stream("aac", rate=sample_rate)
            aus.layout = "mono"
        pts = 0
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            if colorspace is not None or color_range is not None:
                f = f.reformat(format="yuv420p", dst_colorspace=colorspace, src_color_range=2, dst_color_range=color_range)
            f.pts, f.time_base = pts, tb
            pts_list.append(pts)
            for p in vs.encode(f):
                c.mux(p)
            pts += durations[i] if durations is not None else 100
        for p in vs.encode(None):
            c.mux(p)
        if aus is not None:
            total = int(float(pts * tb) * sample_rate)
            t = 0
            while t < total:
                k = min(1024, total - t)
                x = (0.2 * np.sin(2 * np.pi * audio_hz * (np.arange(k) + t) / sample_rate)).astype(np.float32)[None]
                af = av.AudioFrame.from_ndarray(x, format="fltp", layout="mono")
                af.sample_rate, af.pts = sample_rate, t
                for p in aus.encode(af):
                    c.mux(p)
                t += k
            for p in aus.encode(None):
                c.mux(p)
    return pts_list


def demo_clip(path: str) -> str:
    """The embedded demo: a 2-second camera pan over scikit-image's astronaut photo with sensor
    noise and a 440 Hz tone, 240x160 at 24 fps, written to ``path`` (kept when it already exists)."""
    import os

    if not os.path.exists(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".part.mp4"
        make_clip(tmp, pan_frames(sample_photo("astronaut"), 48, (240, 160), speed=(2.5, 0.8), noise=5.0), gop=12)
        os.replace(tmp, path)
    return path
