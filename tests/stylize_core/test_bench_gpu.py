"""benchmarks/bench_gpu.py runs end to end in its quick CPU mode, and says so in one line without CUDA."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_gpu.py")
# Runs the script as __main__, then reports which heavy modules it pulled in (the GPU machine has
# neither Ray nor scikit-image).
RUNNER = """import runpy, sys
sys.argv = [{script!r}] + {args!r}
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as exc:
    assert not exc.code, exc.code
print("modules:", sorted(m for m in ("ray", "skimage", "pyarrow", "s3fs") if m in sys.modules))
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    code = RUNNER.format(script=SCRIPT, args=list(args))
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_quick_cpu_mode_prints_every_number_without_ray_or_skimage():
    out = _run("--device", "cpu", "--quick", "--metrics", "--metrics-size", "32", "--metrics-sample", "0.5")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "batch   2 at 32x32" in text and "batch   4 at 32x32" in text
    assert "16 JPEGs" in text and "images per forward: mean" in text and "CPU cores used" in text
    assert "pipeline / model-only" in text and "metrics (size 32, sample 0.5): " in text
    assert text.strip().splitlines()[-1] == "modules: []"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_without_cuda_one_line_and_clean_exit():
    out = _run()
    assert out.returncode == 0 and out.stderr == ""
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and "no CUDA device" in lines[0]  # the second is the runner's module list
