"""Process-level tuning for CPU inference and training (no torch import; safe to call anywhere).

PyTorch's CPU allocator takes every tensor straight from malloc. glibc serves blocks above its mmap
threshold (128 KiB, rising to at most 32 MiB) with fresh ``mmap`` calls and unmaps them on free, and
threads other than the main one allocate from arenas whose heaps stop at 64 MiB; so a 512 px
TransformerNet forward, whose activations are tens of MiB each, faults in every page of every
activation on every image. Measured on a 2-core machine over 48 images at 512 px: 9.3 M page faults
and 15.9 s of kernel time in a 28 s loop; with freed memory kept for reuse, 0.2 M faults, 0.3 s and
19.4 s. Ray runs actor methods in a thread, hence the single arena.

The cost is that up to ``retain_bytes`` of freed memory stays with the process instead of going back
to the OS, which is what a long-lived actor or trainer wants. Applications opt in (the library never
changes process state on import): the stylize actors, the local CLI and the training workers call
:func:`retain_freed_memory`, and the actors also start with :func:`malloc_env` in their environment.
``STYLIZE_MALLOC_TUNING=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
DEFAULT_RETAIN_BYTES = 1 << 30

_applied: int | None = None


def _disabled() -> bool:
    return os.environ.get("STYLIZE_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off")


def malloc_env(retain_bytes: int = DEFAULT_RETAIN_BYTES) -> dict[str, str]:
    """The same settings as environment variables, for worker processes started later (Ray actors).

    Set at process start they also cover threads that took an arena before any code of ours ran:
    Ray calls an actor's methods from an executor thread that may exist before ``__init__``, and such
    a thread keeps page-faulting in every large buffer (measured: 33 k faults per 512 px image).
    With tuning turned off, it passes that on instead.
    """
    if _disabled():
        return {"STYLIZE_MALLOC_TUNING": "0"}
    if not sys.platform.startswith("linux"):
        return {}
    return {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(retain_bytes),
            "MALLOC_TRIM_THRESHOLD_": str(retain_bytes)}


def retain_freed_memory(retain_bytes: int = DEFAULT_RETAIN_BYTES) -> bool:
    """Ask glibc malloc to serve allocations up to ``retain_bytes`` from its heap and keep up to that
    much freed memory for reuse. Returns True when applied (Linux with glibc), False otherwise.
    Idempotent; ``retain_bytes`` must fit a C int (glibc's ``mallopt`` takes one)."""
    global _applied
    if not 0 < retain_bytes < 2**31:
        raise ValueError(f"retain_bytes must be in (0, 2**31), got {retain_bytes}")
    if _disabled():
        return False
    if _applied == retain_bytes:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # trim first: with the mmap threshold raised, freed blocks land at the heap's top, and the default
    # 128 KiB trim threshold would hand them straight back to the kernel.
    ok = mallopt(_M_TRIM_THRESHOLD, retain_bytes) == 1 and mallopt(_M_MMAP_THRESHOLD, retain_bytes) == 1
    # Threads get arenas of their own, whose heaps top out at 64 MiB: 512 px activations would still be
    # mmapped there. Threads created from now on share the main heap instead.
    ok = ok and mallopt(_M_ARENA_MAX, 1) == 1
    if ok:
        _applied = retain_bytes
    else:
        log.debug("mallopt refused the allocator settings; leaving malloc's defaults")
    return ok
