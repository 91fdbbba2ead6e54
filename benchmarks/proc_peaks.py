"""Peak memory of every process of a process tree (a job's driver, its Ray raylet and workers), from
/proc: each process's VmHWM (the kernel's own high-water mark of its resident set), sampled until it
exits, so short-lived workers are caught too. Linux only; no psutil.

    from proc_peaks import PeakSampler   # benchmarks/ is on sys.path when a benchmark runs as a script
"""

from __future__ import annotations

import os
import threading


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _peak_and_name(pid: int) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            hwm = next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:")), 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            name = f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:80]
    except OSError:
        return None
    return hwm, name


class PeakSampler:
    """Samples the tree under ``root`` every ``interval`` seconds in a thread; :attr:`peaks` maps
    pid -> (peak bytes, command line) for every process seen."""

    def __init__(self, root: int, interval: float = 0.2) -> None:
        self.root, self.interval = root, interval
        self.peaks: dict[int, tuple[int, str]] = {}
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
                if got is not None and got[0] >= self.peaks.get(pid, (0, ""))[0]:
                    # a Ray worker renames itself (ray::PosterWorker.tile) once it runs a task: keep that name
                    name = got[1] if got[1].startswith("ray::") or pid not in self.peaks else self.peaks[pid][1]
                    self.peaks[pid] = (got[0], name)
            self._stop.wait(self.interval)
