"""The commands' own progress: one updating line on a terminal, otherwise one line per interval.

Ray Data's progress bars and its periodic stats blocks are off on the console (see
:func:`jobs.common.ray_runtime.configure_data`); this is what a user watches instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

# Seconds between two progress lines on a non-terminal.
INTERVAL_S = 10.0


def format_eta(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``?`` while there is no rate to go by."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(round(max(0.0, seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(done: int, total: int, errors: int, rate: float | None, *, unit: str = "rows",
                  rate_unit: str = "images/s") -> str:
    """``16/58 rows (28%), 2 errors, 1.20 images/s, ETA 0:35``; without a rate yet (``None``), no rate
    and no ETA."""
    share = f" ({done / total:.0%})" if total else ""
    line = f"{done}/{total} {unit}{share}, {errors} error{'' if errors == 1 else 's'}"
    if rate is None:
        return line
    eta = (total - done) / rate if rate > 0 else None
    return f"{line}, {rate:.2f} {rate_unit}, ETA {format_eta(eta)}"


def bar(done: int, total: int, width: int = 20) -> str:
    """``[#####---------------]``."""
    filled = min(width, width * done // total) if total > 0 else width
    return "[" + "#" * filled + "-" * (width - filled) + "]"


class Progress:
    """Fed ``update(done, errors)`` as results arrive; writes to ``stream`` (stderr).

    The rate counts from the first update on: what came before it is start-up (Ray, actors, model
    loads), which would make the ETA of a long run far too long. On a terminal one line with a bar is
    drawn at once and redrawn in place; elsewhere (a log file, CI) a line is written when ``interval`` seconds have passed since the
    last one and something changed, so a quiet pipeline adds no lines. ``enabled=False`` (``--quiet``)
    writes nothing.
    """

    def __init__(self, label: str, total: int, *, unit: str = "rows", rate_unit: str = "images/s",
                 interval: float | None = None, enabled: bool = True, stream: TextIO | None = None,
                 tty: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.unit, self.rate_unit = label, total, unit, rate_unit
        self.interval = INTERVAL_S if interval is None else interval
        self.enabled, self._clock = enabled, clock
        self._stream = stream if stream is not None else sys.stderr
        self._tty = _isatty(self._stream) if tty is None else tty
        self._started = clock()
        self._first: tuple[float, int] | None = None  # (time, done) of the first update
        self._last_write = self._started
        self._last_done = 0
        self._drawn = False
        self.done = self.errors = 0
        if enabled and self._tty:
            self._draw()  # 0/total while the pipeline starts

    def rate(self, now: float | None = None) -> float | None:
        if self._first is None:
            return None
        now = self._clock() if now is None else now
        t0, done0 = self._first
        if now > t0 and self.done > done0:
            return (self.done - done0) / (now - t0)
        return None

    def line(self, now: float | None = None) -> str:
        text = progress_line(self.done, self.total, self.errors, self.rate(now), unit=self.unit,
                             rate_unit=self.rate_unit)
        return f"{self.label} {bar(self.done, self.total)} {text}" if self._tty else f"{self.label} {text}"

    def update(self, done: int, errors: int = 0) -> None:
        now = self._clock()
        if self._first is None:
            self._first = (now, done)
        self.done, self.errors = done, errors
        if not self.enabled:
            return
        if self._tty:
            self._draw(now)
        elif now - self._last_write >= self.interval and done != self._last_done:
            self._write(self.line(now) + "\n")
            self._last_write, self._last_done = now, done

    def _draw(self, now: float | None = None) -> None:
        self._write(f"\r{self.line(now)}\x1b[K")
        self._drawn = True

    def close(self) -> None:
        """End the terminal's progress line, so what follows starts on a line of its own."""
        if self.enabled and self._drawn:
            self._write("\n")
            self._drawn = False

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
