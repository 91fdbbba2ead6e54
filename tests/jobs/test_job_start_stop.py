"""A job's start and end: what refuses a run at start (one line, exit 2), and the job as a process of
its own, starting and stopping its own Ray and leaving nothing behind."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.common import ray_runtime
from jobs.batch import driver as stylize
from jobs.common import planning
from jobs.common.run_settings import demo_checkpoint

# Looks like a legacy torch pickle, so the driver's torch-free check passes it: only loading it (in
# a Ray task or the actors) finds out that it is no style network.
NOT_A_NETWORK = pickle.dumps(["not", "a", "network"], protocol=2)

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


@pytest.mark.usefixtures("ray_local")
def test_missing_checkpoint_and_input_exit_2(tmp_path, capsys):
    assert stylize.cli(["--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o"),
                        "--style", f"s={demo_checkpoint()}", "--quiet"]) == 2
    assert "cannot use input" in capsys.readouterr().err
    (tmp_path / "in").mkdir()
    assert stylize.cli(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"),
                        "--style", f"s={tmp_path / 'nope.pth'}", "--quiet"]) == 2
    assert "cannot use checkpoint" in capsys.readouterr().err
    # with no inputs (no actor will run), an unloadable checkpoint is found out by a Ray task (torch stays off the driver)
    (tmp_path / "bad.pth").write_bytes(NOT_A_NETWORK)
    assert stylize.cli(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"),
                        "--style", f"s={tmp_path / 'bad.pth'}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "style 's':" in err and "Traceback" not in err


@pytest.mark.usefixtures("ray_local")
def test_unloadable_checkpoint_with_inputs_is_refused_by_the_cpu_actors(tmp_path, capsys, monkeypatch):
    """CPU actors start at once and build the same stylizer: their setup_error rows are the check (no
    separate Ray task importing torch), and the run still stops with the builder's one line, exit 2."""
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    (tmp_path / "bad.pth").write_bytes(NOT_A_NETWORK)
    checks = []
    real_call = stylize.ray_runtime.call_remote
    monkeypatch.setattr(stylize.ray_runtime, "call_remote", lambda fn, *a: checks.append(fn) or real_call(fn, *a))
    assert stylize.cli(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"),
                        "--style", f"s={tmp_path / 'bad.pth'}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "style 's':" in err and "Traceback" not in err and len(err.strip().splitlines()) == 2  # run line + error
    assert checks == []
    assert not list((tmp_path / "o").glob("s/**/*.png"))


@pytest.mark.usefixtures("ray_local")
def test_gpu_actors_have_the_checkpoints_checked_before_any_is_asked_for(tmp_path, capsys, monkeypatch):
    """GPU actors may wait minutes for a node: a Ray task on the CPUs checks the checkpoints first."""
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    (tmp_path / "bad.pth").write_bytes(NOT_A_NETWORK)
    monkeypatch.setattr(stylize, "plan_actors", lambda settings: planning.ActorPlan(1, 8, 1.0, 1.0, 0, "test: GPU", 64))
    monkeypatch.setattr(stylize.ray_runtime, "stylize_dataset", lambda *a, **k: pytest.fail("actors were asked for"))
    assert stylize.cli(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"),
                        "--style", f"s={tmp_path / 'bad.pth'}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "style 's':" in err and "Traceback" not in err
