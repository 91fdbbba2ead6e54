"""The one exception type of the video code: an input that cannot become an output."""

from __future__ import annotations


class VideoError(ValueError):
    """A bad or unsupported input; ``error_type`` is the metrics row's ``error_type``.

    Types: ``not_video`` (no container FFmpeg can open), ``no_video_stream``, ``zero_frames``,
    ``unsupported_codec`` (no decoder in this FFmpeg build), ``corrupt`` (damaged data, found
    while decoding), ``truncated`` (fewer frames decoded than the container lists), ``too_large``
    (the pixel or duration guard).
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
