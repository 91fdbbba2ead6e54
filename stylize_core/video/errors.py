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


class ffmpeg_errors:  # noqa: N801  (used as a context manager, like contextlib's)
    """Collects FFmpeg's error-level log lines of this thread while active.

    Demuxers resync past damaged data with no exception at all; their error log lines are the
    only sign, so damaged containers are caught from them. Use it around demuxing only: with
    FFmpeg's log routed to Python, a codec's worker threads logging while PyAV waits on them can
    deadlock (why PyAV keeps the log off by default), so it is switched back off on exit.
    """

    def __init__(self) -> None:
        import av

        self._av = av
        self._capture = av.logging.Capture(True)
        self.lines: list = []

    def __enter__(self) -> "ffmpeg_errors":
        self._av.logging.set_level(self._av.logging.ERROR)
        self.lines = self._capture.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._capture.__exit__(*exc)
        self._av.logging.set_level(None)

    def check(self, what: str) -> None:
        """Raise :class:`VideoError` if an error was logged (``truncated`` for a premature end)."""
        errors = [msg.strip() for level, _name, msg in self.lines if level <= self._av.logging.ERROR]
        if errors:
            kind = "truncated" if any("prematurely" in m or "truncat" in m.lower() for m in errors) else "corrupt"
            raise VideoError(kind, f"{what}: {errors[0]}" + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""))
