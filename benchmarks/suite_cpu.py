"""Where a command's CPU goes, by kind of process: the test suite by default.

    python benchmarks/suite_cpu.py                    # README's test command
    python benchmarks/suite_cpu.py -- python -m pytest -q tests/jobs/test_stylize_job.py

While the command runs, every process's cumulative CPU (utime + stime from /proc/PID/stat) is read
every 0.25 s, and each increase is charged to what the process was at that moment: a Ray worker
by its title (``ray::MapWorker(...)``, ``ray::IDLE`` between tasks or while importing what its
first task needs, "ray worker (starting)" before it has a title), Ray's daemons, the pytest
processes, the programs run as ``python -m jobs...``. Processes that existed before the command
are charged only for what they use during it. A process that ends between two reads loses at
most 0.25 s of its CPU, so the total is a slight under-count. Linux only.

Prints the machine, the wall time, the CPU-s per kind (largest first), the total and how many
processes started. Exits with the command's status when it failed, else 1 when nothing was
measured.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import threading
import time

from machine import print_machine
from proc_peaks import stat_fields

README_TEST_COMMAND = [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile"]
PERIOD_S = 0.25
HZ = os.sysconf("SC_CLK_TCK")
DAEMONS = (("gcs_server", "ray: gcs_server"), ("raylet/raylet", "ray: raylet"), ("log_monitor", "ray: log monitor"),
           ("dashboard", "ray: dashboard"), ("autoscaler", "ray: autoscaler monitor"),
           ("default_worker.py", "ray worker (starting)"))


def kind(pid: int) -> str | None:
    """What process ``pid`` is now, or None when it has gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        return None
    if cmd.startswith("ray::"):
        return re.sub(r"\s.*", "", cmd)[:60]
    for needle, name in DAEMONS:
        if needle in cmd:
            return name
    if m := re.search(r"-m (jobs\.[a-z_]+)", cmd):
        return f"python -m {m.group(1)}"
    if re.search(r"(-m pytest|bin/pytest)( |$)", cmd) or "exec(eval(sys.stdin.readline()))" in cmd:
        return "pytest and its xdist workers"
    return f"other: {comm}"


def cpu_seconds() -> dict[tuple[int, str], float]:
    """(pid, start time) -> CPU-s so far, for every process now."""
    return {(pid, f[19]): (int(f[11]) + int(f[12])) / HZ for pid, f in stat_fields()}


class Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen = cpu_seconds()  # what each process had used before the command
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.started = 0
        self.stop = threading.Event()

    def sample(self) -> None:
        for key, cpu in cpu_seconds().items():
            before = self.seen.get(key)
            if before is None:
                self.started += 1
                before = 0.0
            if cpu > before:
                self.by_kind[kind(key[0]) or "gone"] += cpu - before
            self.seen[key] = cpu

    def run(self) -> None:
        while not self.stop.wait(PERIOD_S):
            self.sample()


def main(argv: list[str]) -> int:
    command = argv[argv.index("--") + 1:] if "--" in argv else README_TEST_COMMAND
    print_machine()
    print(f"command: {' '.join(command)}", flush=True)
    sampler = Sampler()
    sampler.start()
    start = time.perf_counter()
    status = subprocess.run(command).returncode
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    sampler.sample()
    total = sum(sampler.by_kind.values())
    print(f"\nwall {wall:.0f} s; exit status {status}")
    for name, seconds in sampler.by_kind.most_common():
        if seconds >= 0.5:
            print(f"{seconds:9.1f} CPU-s  {name}")
    print(f"{total:9.1f} CPU-s in all ({total / wall:.2f} cores busy on average); {sampler.started} processes started")
    if status:
        return status
    if total <= 0:
        print("INVARIANT FAILED: no CPU measured", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
