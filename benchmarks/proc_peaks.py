"""Peak memory of every process of a process tree (a job's driver, its Ray raylet and workers), from
/proc: each process's VmHWM (the kernel's own high-water mark of its resident set), sampled until it
exits, so short-lived workers are caught too. Linux only; no psutil.

    from proc_peaks import PeakSampler   # benchmarks/ is on sys.path when a benchmark runs as a script
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator


def stat_fields() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command name: state, ppid, ...) of every process
    now; one that ends while being read is left out."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        yield int(entry), stat.rsplit(")", 1)[1].split()


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for pid, fields in stat_fields():
        kids.setdefault(int(fields[1]), []).append(pid)
    return kids


def _peak_and_name(pid: int) -> tuple[int, int, str] | None:
    """(VmHWM, RssAnon now, command line): the resident peak (shared pages included: libraries, Ray's
    object store pages the process touched) and the private heap."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = {line.split(":")[0]: line.split()[1:2] for line in f}
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            name = f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:80]
    except OSError:
        return None
    kib = [int((fields.get(k) or ["0"])[0]) * 1024 for k in ("VmHWM", "RssAnon")]
    return kib[0], kib[1], name


def shm_used(path: str = "/dev/shm") -> int:
    """Bytes in use on the shared-memory file system, where Ray's object store keeps its objects on
    Linux (when /dev/shm is larger than the store); 0 where there is none."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class PeakSampler:
    """Samples the tree under ``root`` every ``interval`` seconds in a thread; :attr:`peaks` maps
    pid -> (peak resident bytes, peak private (anonymous) bytes as sampled, command line) for every
    process seen; :attr:`shm_peak`: the most bytes /dev/shm held above what it held at the start (the
    object store's high-water mark, other users of /dev/shm aside)."""

    def __init__(self, root: int, interval: float = 0.2) -> None:
        self.root, self.interval = root, interval
        self.peaks: dict[int, tuple[int, int, str]] = {}
        self._shm_start = shm_used()
        self.shm_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            kids, todo = _children(), [self.root]
            while todo:
                pid = todo.pop()
                todo += kids.get(pid, [])
                got = _peak_and_name(pid)
                if got is None:
                    continue
                hwm, anon, name = got
                old = self.peaks.get(pid, (0, 0, name))
                # a Ray worker renames itself (ray::PosterWorker) once it runs a task: keep that name
                self.peaks[pid] = (max(hwm, old[0]), max(anon, old[1]), name if name.startswith("ray::") else old[2])
            self.shm_peak = max(self.shm_peak, shm_used() - self._shm_start)
            self._stop.wait(self.interval)
