"""What a run prints: the job's own progress, no error-level line on a healthy run, a few lines in all."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.common.progress import Progress, bar, format_eta, progress_line
from jobs.common.stderr_filter import drop_stderr_lines

REPO = Path(__file__).resolve().parents[2]

# An error-level line as Ray writes them: its Python loggers ("...\tERROR file.py:1 -- ...", also
# behind a "(pid=...)" prefix when forwarded from a worker) and its C++ core ("[date time E pid tid] ...").
ERROR_LINE = re.compile(r"\bERROR\b|\[\d{4}-\d\d-\d\d [\d:,.]+ E \d+ \d+\]")


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_eta_and_rate_are_formatted_for_people():
    assert format_eta(None) == "?" and format_eta(float("inf")) == "?"
    assert format_eta(0) == "0:00" and format_eta(65.4) == "1:05" and format_eta(3723) == "1:02:03"
    assert bar(0, 4) == "[" + "-" * 20 + "]" and bar(2, 4, width=4) == "[##--]" and bar(0, 0, width=2) == "[##]"
    assert progress_line(16, 58, 2, None) == "16/58 rows (28%), 2 errors"
    assert progress_line(16, 58, 1, 2.0) == "16/58 rows (28%), 1 error, 2.00 images/s, ETA 0:21"
    assert progress_line(0, 0, 0, 1.0, unit="rows", rate_unit="rows/s") == "0/0 rows, 0 errors, 1.00 rows/s, ETA 0:00"


def test_progress_on_a_non_terminal_is_a_line_per_interval_with_the_rate_since_the_first_results():
    out, clock = io.StringIO(), _Clock()
    progress = Progress("[job]", 100, interval=10, stream=out, tty=False, clock=clock)
    clock.now += 30  # start-up: actors, model loads
    progress.update(10, 0)  # the first results: written (10 s have passed), but no rate yet
    clock.now += 5
    progress.update(20, 1)  # within the interval: nothing
    clock.now += 5
    progress.update(30, 1)
    clock.now += 20
    progress.update(30, 1)  # nothing new: nothing written
    progress.close()
    assert out.getvalue().splitlines() == ["[job] 10/100 rows (10%), 0 errors",
                                           "[job] 30/100 rows (30%), 1 error, 2.00 images/s, ETA 0:35"]


def test_progress_on_a_terminal_redraws_one_line_and_quiet_writes_nothing():
    out, clock = io.StringIO(), _Clock()
    progress = Progress("[job]", 4, stream=out, tty=True, clock=clock)
    progress.update(2, 0)
    clock.now += 1
    progress.update(4, 0)
    progress.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.count("\r") == 3  # drawn at the start, then per update
    assert text.startswith("\r[job] [--------------------] 0/4 rows (0%), 0 errors\x1b[K")
    assert text.rstrip("\n").rpartition("\r")[2] == ("[job] [####################] 4/4 rows (100%), 0 errors, 2.00 images/s, "
                                                     "ETA 0:00\x1b[K")
    quiet = io.StringIO()
    silent = Progress("[job]", 4, stream=quiet, tty=True, enabled=False, clock=clock)
    silent.update(4, 0)
    silent.close()
    assert quiet.getvalue() == ""


def test_a_dropped_line_is_only_the_one_with_every_marker(capfd):
    with drop_stderr_lines(b"core_worker.cc", b"object store"):
        os.write(2, b"before\n[2026-01-01 00:00:00,000 E 1 1] core_worker.cc:1: in the object store\n")
        os.write(2, b"[2026-01-01 00:00:00,000 E 1 1] core_worker.cc:2: something else\n")
        os.write(2, b"[stylize] ours\n")
        os.write(2, b"\rbar")  # a partial line that is not Ray's passes at once
    os.write(2, b"\nafter\n")
    assert capfd.readouterr().err == ("before\n[2026-01-01 00:00:00,000 E 1 1] core_worker.cc:2: something else\n"
                                      "[stylize] ours\n\rbar\nafter\n")


def _processes_under(marker: str) -> list[tuple[int, str]]:
    """Live processes whose command line mentions ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0]
        except OSError:
            continue
        if marker in cmd and state != b"Z":
            found.append((int(entry), cmd[:160]))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc; Ray's sockets under a short temporary directory")
def test_a_healthy_run_prints_a_few_lines_with_no_error_level_line_and_leaves_no_process(tmp_path):
    """The job as a process of its own, as README's demo runs it: it starts its own Ray and stops it,
    leaving no process behind, and prints its progress and outcome in a few lines."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(src / f"{name}.png")
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(REPO)}
    # A progress line for every batch (the hook is here, not in the job's settings): the most lines a
    # run of this size can print.
    run = "import jobs.common.progress as p; p.INTERVAL_S = 0.0; from jobs.batch.__main__ import entry; entry()"
    try:
        proc = subprocess.run([sys.executable, "-c", run, "--input", str(src), "--output", str(tmp_path / "out"),
                               "--max-side", "64", "--vgg-weights", "random:0"],
                              cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=600)
        # Ray's processes (raylet, GCS, the autoscaler monitor the job stops first, workers) are gone.
        deadline = time.time() + 10
        while _processes_under(ray_tmp) and time.time() < deadline:
            time.sleep(0.2)
        assert _processes_under(ray_tmp) == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout
    assert all((tmp_path / "out" / style / f"{name}.jpg").exists() for style in ("demo", "demo_slim") for name in "abc")
    assert [line for line in lines if ERROR_LINE.search(line)] == [], proc.stdout
    assert len(lines) < 15, proc.stdout
    # Ray Data's detail (execution plan, stats blocks, the hint that its bars are off) is in its log files only.
    assert not [line for line in lines if re.search(r"streaming_executor|logging_progress|Progress bars", line)]
    assert any(line.startswith("[stylize] run ") and "3 inputs x 2 style(s)" in line for line in lines), proc.stdout
    progress = [line for line in lines if re.fullmatch(r"\[stylize\] \d/6 rows \(\d+%\), 0 errors(, .*)?", line)]
    assert progress, proc.stdout
    assert re.search(r"\d+\.\d\d images/s, ETA \d+:\d\d$", progress[-1]) or len(progress) == 1, proc.stdout
    assert any("error rate 0.00% (limit" in line and line.endswith("PASS") for line in lines), proc.stdout
    assert any(line.strip().startswith("summary: ") for line in lines), proc.stdout
