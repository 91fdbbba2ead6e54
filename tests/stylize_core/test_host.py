"""retain_freed_memory: freed tensor-sized buffers are reused instead of faulted in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from stylize_core.host import malloc_env, retain_freed_memory

# Like PyTorch's CPU allocator: malloc, write every page, free; ten times, sizes of 512 px activations.
# Prints the minor page faults of the last nine rounds; argv[1] "thread" runs them in a new thread, as
# Ray runs actor methods.
PROBE = r"""
import ctypes, ctypes.util, json, resource, sys, threading
from stylize_core.host import malloc_env, retain_freed_memory
applied = retain_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
sizes = [32 << 20, 8 << 20, 80 << 20, 2 << 20]  # 80 MiB: above a thread arena's 64 MiB heaps
def round_trip():
    for size in sizes:
        ptr = libc.malloc(size)
        ctypes.memset(ptr, 1, size)
        libc.free(ptr)
def rounds():
    global faults
    round_trip()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(9):
        round_trip()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
if sys.argv[1] == "thread":
    worker = threading.Thread(target=rounds)
    worker.start()
    worker.join()
else:
    rounds()
print(json.dumps({"applied": applied, "faults": faults, "pages": sum(sizes) // resource.getpagesize()}))
"""


def _probe(tuning: str, where: str) -> dict:
    env = dict(os.environ, STYLIZE_MALLOC_TUNING=tuning)
    out = subprocess.run([sys.executable, "-c", PROBE, where], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("where", ["main", "thread"])
def test_freed_buffers_are_reused_not_faulted_in_again(where):
    off, on = _probe("0", where), _probe("1", where)
    assert off["applied"] is False
    assert off["faults"] >= 9 * off["pages"] // 2  # malloc's default: large buffers mmapped afresh each time
    assert on["applied"] is True
    assert on["faults"] < off["pages"] // 10  # the first round's pages are reused by the next nine


def test_rejects_values_mallopt_cannot_take():
    with pytest.raises(ValueError, match="retain_bytes"):
        retain_freed_memory(1 << 31)
    with pytest.raises(ValueError, match="retain_bytes"):
        retain_freed_memory(0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc variables")
def test_malloc_env_for_workers_and_its_opt_out(monkeypatch):
    monkeypatch.delenv("STYLIZE_MALLOC_TUNING", raising=False)
    assert malloc_env(1 << 20) == {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
                                   "MALLOC_TRIM_THRESHOLD_": str(1 << 20)}
    monkeypatch.setenv("STYLIZE_MALLOC_TUNING", "off")
    assert malloc_env() == {"STYLIZE_MALLOC_TUNING": "0"}  # workers elsewhere learn of the opt-out too
    assert retain_freed_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc variables")
def test_malloc_env_alone_stops_the_faults_in_a_thread():
    """What a Ray worker gets: the variables at process start, no mallopt call, work in a thread."""
    env = {k: v for k, v in os.environ.items() if k != "STYLIZE_MALLOC_TUNING"}
    probe = PROBE.replace("applied = retain_freed_memory()", "applied = None")
    base = subprocess.run([sys.executable, "-c", probe, "thread"], env=env, check=True, capture_output=True, text=True)
    tuned = subprocess.run([sys.executable, "-c", probe, "thread"], env=env | malloc_env(), check=True,
                           capture_output=True, text=True)
    off, on = (json.loads(r.stdout.strip().splitlines()[-1]) for r in (base, tuned))
    assert off["faults"] >= 9 * off["pages"] // 2
    assert on["faults"] < on["pages"] // 10
