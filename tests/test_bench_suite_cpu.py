"""benchmarks/suite_cpu.py charges a command's CPU to the kinds of process that spent it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\n"


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "suite_cpu.py"), "--", *command],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_a_busy_child_is_charged_and_its_status_returned(tmp_path):
    script = tmp_path / "busy.py"
    script.write_text(BUSY)
    proc = _run(sys.executable, str(script))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("Flags:") for line in lines)  # the machine beside the numbers
    charged = {line.split("CPU-s")[1].strip(): float(line.split()[0]) for line in lines if "CPU-s  " in line}
    # The child's second of CPU (at most one 0.25 s read lost at its end); the machine may be busy
    # with other processes meanwhile (the suite's other worker), so no upper bound.
    assert charged.get("other: python", 0) >= 0.7, charged
    total = next(line for line in lines if "CPU-s in all" in line)
    assert float(total.split()[0]) >= charged["other: python"] and "processes started" in total

    failing = tmp_path / "fails.py"
    failing.write_text("raise SystemExit(3)\n")
    assert _run(sys.executable, str(failing)).returncode == 3
