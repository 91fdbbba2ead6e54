"""The job as a process of its own: a local Ray it starts and stops itself, leaving nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs import ray_runtime

REPO = Path(__file__).resolve().parents[2]


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


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_job_process_starts_and_stops_its_own_ray_leaving_no_process(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(src / "a.png")
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(REPO)}
    try:
        proc = subprocess.run([sys.executable, "-m", "jobs.stylize", "--input", str(src), "--output", str(tmp_path / "out"),
                               "--no-metrics", "--contact-sheet", "0", "--quiet"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        assert (tmp_path / "out" / "demo" / "a.jpg").exists() and (tmp_path / "out" / "demo_slim" / "a.jpg").exists()
        # Ray's processes (raylet, GCS, the autoscaler monitor the job stops first, workers) are gone.
        deadline = time.time() + 10
        while _processes_under(ray_tmp) and time.time() < deadline:
            time.sleep(0.2)
        assert _processes_under(ray_tmp) == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.usefixtures("ray_local")
def test_actors_get_a_runtime_env_only_for_what_the_workers_do_not_inherit(monkeypatch):
    env = {"MALLOC_ARENA_MAX": "1", "MALLOC_TRIM_THRESHOLD_": "42"}
    # The session's Ray was not started by init_ray: nothing is inherited.
    assert ray_runtime.runtime_env(env) == {"env_vars": env}
    assert ray_runtime.runtime_env({}) is None and ray_runtime.runtime_env(None) is None
    import ray

    node = ray.get_runtime_context().get_node_id()
    monkeypatch.setattr(ray_runtime, "_inherited", (node, {"MALLOC_ARENA_MAX": "1", "MALLOC_TRIM_THRESHOLD_": "7"}))
    assert ray_runtime.runtime_env(env) == {"env_vars": {"MALLOC_TRIM_THRESHOLD_": "42"}}
    monkeypatch.setattr(ray_runtime, "_inherited", (node, dict(env)))
    assert ray_runtime.runtime_env(env) is None
    # Another Ray (a node this process did not start) inherits nothing.
    monkeypatch.setattr(ray_runtime, "_inherited", ("f" * 56, dict(env)))
    assert ray_runtime.runtime_env(env) == {"env_vars": env}
