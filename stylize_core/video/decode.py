"""Decoding a range of a video into RGB frames in display orientation, timestamps kept."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .errors import VideoError
from .probe import VideoInfo, _open


def even(n: int) -> int:
    """4:2:0 chroma halves both sides: encoders need even sizes (never below 2)."""
    return max(2, n - n % 2)


def output_size(info: VideoInfo, max_side: int | None) -> tuple[int, int]:
    """(width, height) of the stylised frames: display orientation, at most ``max_side``, even."""
    w, h = info.display_size
    if max_side and max(w, h) > max_side:
        scale = max_side / max(w, h)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
    return even(w), even(h)


def iter_frames(
    path: str, info: VideoInfo, size: tuple[int, int], start_pts: int | None = None, end_pts: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(pts, (H, W, 3) uint8 RGB)`` for frames with ``start_pts <= pts < end_pts``.

    The rotation is applied (frames come out as a player shows them) and the frame is scaled to
    ``size`` (display orientation) with swscale's area filter; YUV->RGB uses the stream's own
    matrix and range tags (unspecified reads as BT.601 limited, FFmpeg's default).
    Decoder errors and frames FFmpeg flags corrupt raise :class:`VideoError` (``corrupt``); damaged
    containers are caught earlier, by :func:`probe_video`'s packet scan; a segment that decodes fewer
    frames than the scan listed is ``truncated`` (checked by the caller).
    """
    import av

    turns = (info.rotation // 90) % 4
    width, height = (size[1], size[0]) if turns % 2 else size  # scale in stored orientation, then turn
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        if start_pts is not None and start_pts > info.frame_pts[0]:
            container.seek(start_pts, stream=stream, backward=True, any_frame=False)
        try:
            for frame in container.decode(stream):
                pts = frame.pts
                if pts is None:
                    raise VideoError("corrupt", "a decoded frame has no timestamp")
                if start_pts is not None and pts < start_pts:
                    continue
                if end_pts is not None and pts >= end_pts:
                    break
                if frame.is_corrupt:
                    raise VideoError("corrupt", f"frame at pts {pts} decoded with errors")
                rgb = frame.to_ndarray(
                    format="rgb24", width=width, height=height, interpolation="AREA",
                    src_color_range=frame.color_range or 1, dst_color_range=2,
                )
                yield pts, np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
        except av.error.FFmpegError as exc:
            raise VideoError("corrupt", f"decoding failed: {type(exc).__name__}: {exc}") from None
