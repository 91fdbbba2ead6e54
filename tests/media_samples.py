"""Odd media files the video tests need in more than one place (importable from any test: the
folder of tests/conftest.py is on sys.path)."""

from __future__ import annotations

import av
import numpy as np


def write_silent_audio(path: str, fmt: str, *, with_video_track: bool = False) -> None:
    """Three frames of silent mono AAC; with ``with_video_track``, also an H.264 track that gets no
    packets (a video file with zero frames), else no video track at all."""
    with av.open(path, "w", format=fmt) as c:
        if with_video_track:
            v = c.add_stream("libx264", rate=24)
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        for i in range(3):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 16000, i * 1024
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)


def periodic_texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(3, H, W) float32 0..255 that repeats exactly: sinusoids of whole periods across the image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] * 2 * np.pi
    out = np.full((3, height, width), 128.0)
    for _ in range(12):
        fy, fx = rng.integers(-12, 13, 2)
        out += rng.uniform(-30, 30, (3, 1, 1)) * np.sin(fy * yy / height + fx * xx / width + rng.uniform(0, 6.3))
    return out.clip(0, 255).astype(np.float32)
