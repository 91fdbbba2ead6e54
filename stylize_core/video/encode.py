"""Encoding RGB frames with their original timestamps (H.264 by default)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .probe import VideoInfo

CODECS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "ffv1": "ffv1"}


@dataclass(frozen=True)
class EncodeOptions:
    """Output codec settings. ``crf``: constant rate factor (lower is better; libx264's 23 is its
    default, 18 is close to visually lossless)."""

    codec: str = "h264"
    crf: int = 18
    preset: str = "medium"
    pix_fmt: str = "yuv420p"
    gop_seconds: float = 2.0

    @property
    def encoder(self) -> str:
        return CODECS.get(self.codec, self.codec)


class SegmentWriter:
    """Writes frames to ``path`` (container from the extension, ``format`` to force one).

    Timestamps are written in the input's time base, so variable frame rates survive exactly.
    B-frames are off: every packet's dts equals its pts, so segments encoded apart concatenate
    into one stream without decode-order timestamps crossing at the seams.
    Colour matrix, range, primaries and transfer tags are the input's; YUV is produced with that
    matrix and range.
    """

    def __init__(self, path: str, info: VideoInfo, size: tuple[int, int], options: EncodeOptions,
                 format: str | None = None) -> None:
        import av

        self.info = info
        self.container = av.open(path, "w", format=format)
        rate = info.average_rate or Fraction(25)
        stream = self.container.add_stream(options.encoder, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = options.pix_fmt
        stream.time_base = info.time_base
        ctx = stream.codec_context
        ctx.time_base = info.time_base  # else PyAV rounds frame pts to 1/rate: VFR would be lost
        ctx.gop_size = max(1, round(float(rate) * options.gop_seconds))
        ctx.max_b_frames = 0
        self.colorspace = info.colorspace if info.colorspace not in (2,) else 1  # unspecified -> BT.709 tags
        self.color_range = info.color_range or 1
        ctx.colorspace, ctx.color_range = self.colorspace, self.color_range
        ctx.color_primaries = info.color_primaries if info.color_primaries != 2 else 1
        ctx.color_trc = info.color_trc if info.color_trc != 2 else 1
        if options.encoder in ("libx264", "libx265"):
            ctx.options = {"crf": str(options.crf), "preset": options.preset, "bf": "0"}
        elif options.encoder == "libvpx-vp9":
            ctx.options = {"crf": str(options.crf), "b": "0"}
        self.stream = stream
        self._durations: dict[int, int] = {}
        self.frames = 0

    def write(self, rgb: np.ndarray, pts: int, duration: int = 0) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame = frame.reformat(format=self.stream.pix_fmt, dst_colorspace=self.colorspace,
                               src_color_range=2, dst_color_range=self.color_range)
        frame.pts, frame.time_base = pts, self.info.time_base
        if duration:
            frame.duration = duration
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # already failing: the caller removes the file
            pass
