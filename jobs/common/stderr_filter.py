"""Drop one known line from this process's stderr for a while, passing everything else through.

For log lines that Ray's C++ core writes straight to file descriptor 2, where no Python logging
filter sees them (see :func:`jobs.common.ray_runtime.stylize_dataset` for the one line and why).
While active, descriptor 2 is a pipe that a thread copies to the real stderr line by line; a partial
line is passed on at once unless it could be the start of a Ray core line (``[`` first), so a
terminal's progress line (``\\r...``) is not held back. What a process that dies abruptly within the
block (``os._exit``, a fatal Ray core error) wrote last may be lost from the console; Ray's core
writes the same lines to its log files too.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def drop_stderr_lines(*markers: bytes) -> Iterator[None]:
    """Within the block, lines written to descriptor 2 that contain every one of ``markers`` are
    dropped; all other output reaches stderr unchanged and in order."""
    if not markers:
        raise ValueError("drop_stderr_lines needs at least one marker")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 to filter
        yield
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = threading.Thread(target=_pump, args=(read_fd, saved, markers), name="stderr-filter", daemon=True)
    pump.start()
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # closes the pipe's write end: the pump drains what is left, then ends
        pump.join(timeout=5.0)
        if not pump.is_alive():  # else a child process still holds the pipe: the pump keeps `saved`
            os.close(saved)


def _pump(read_fd: int, out_fd: int, markers: tuple[bytes, ...]) -> None:
    """Copy until every write end is closed. It must not stop early: writers would block on a full pipe."""
    pending = b""
    try:
        while chunk := os.read(read_fd, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            out = b"".join(line + b"\n" for line in lines if not all(m in line for m in markers))
            if pending and not pending.startswith(b"["):
                out, pending = out + pending, b""
            _write_all(out_fd, out)
        if pending and not all(m in pending for m in markers):
            _write_all(out_fd, pending)
    finally:
        os.close(read_fd)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except OSError:  # the reader of our stderr went away: keep draining the pipe regardless
            return
