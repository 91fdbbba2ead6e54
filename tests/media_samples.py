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
