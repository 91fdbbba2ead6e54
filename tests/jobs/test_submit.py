"""jobs.submit against a real Ray head started with `ray start --head` on this machine.

The head gets its own temp dir (RAY_TMPDIR) and free ports, so it neither collides with nor is found
by any other Ray on the machine; it is stopped by signalling the `ray start --block` process we
started (never `ray stop`, which would stop every Ray here).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jobs import submit
from stylize_core.checkpoint import save_style_model
from stylize_core.transformer_net import TransformerNet

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # answering (401 without a token): the job server is up
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


# Ray's token authentication, as on a real cluster: the head and every client get the same token,
# through the environment (so ~/.ray/auth_token is neither read nor written).
AUTH_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A local head with a dashboard (the job server); yields its http address."""
    temp = tempfile.mkdtemp(prefix="rh-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    dashboard = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update(RAY_TMPDIR=temp, PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", RAY_USAGE_STATS_ENABLED="0", **AUTH_ENV)
    log = open(os.path.join(temp, "ray-start.log"), "wb")
    proc = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", "--port=0", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--dashboard-agent-listen-port={_free_port()}", f"--ray-client-server-port={_free_port()}",
         f"--temp-dir={temp}", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_http(f"{address}/api/version", proc, timeout=180)
        yield address
    finally:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what it started
            proc.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _submit(address: str, *args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.submit", "--address", address, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=os.environ | AUTH_ENV)


def test_submit_a_stylize_job_and_follow_it(ray_head, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for n in range(3):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(inputs / f"p{n}.png")
    torch.manual_seed(0)
    save_style_model(TransformerNet(), str(tmp_path / "s.pth"), style_image=rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    out = tmp_path / "out"
    done = _submit(ray_head, "--working-dir", str(ROOT), "--runtime-env", "cluster/runtime_env.yaml",
                   "--submission-id", "stylize-submit-test", "--",
                   "python", "-m", "jobs.stylize", "--input", str(inputs), "--output", str(out),
                   "--style", f"s={tmp_path / 's.pth'}", "--vgg-weights", "random:0", "--no-metrics",
                   "--contact-sheet", "0", "--quiet", "--run-id", "submitted")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "run submitted: 3 inputs" in done.stdout  # the job's own log line, followed live
    assert "stylize-submit-test: SUCCEEDED" in done.stderr
    assert sorted(os.listdir(out / "s")) == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert (out / "_runs" / "submitted.json").exists()


def test_failed_job_exits_1_and_no_wait_returns_the_id(ray_head):
    failed = _submit(ray_head, "--no-working-dir", "--", "python", "-c", "import sys; print('bye'); sys.exit(3)")
    assert failed.returncode == 1 and "bye" in failed.stdout and "FAILED" in failed.stderr
    queued = _submit(ray_head, "--no-working-dir", "--no-wait", "--", "python", "-c", "print(1)")
    assert queued.returncode == 0 and queued.stdout.strip().startswith("raysubmit_")


def test_runtime_env_merges_file_working_dir_and_env(tmp_path):
    own, command = submit.split_argv(["--env", "A=1", "--", "python", "-m", "jobs.stylize", "--", "x"])
    assert command == ["python", "-m", "jobs.stylize", "--", "x"]
    args = submit.build_parser().parse_args(own + ["--runtime-env", str(ROOT / "cluster" / "runtime_env.yaml"),
                                                   "--working-dir", str(tmp_path)])
    env = submit.build_runtime_env(args)
    assert env["working_dir"] == str(tmp_path)
    assert env["env_vars"] == {"PYTHONUNBUFFERED": "1", "A": "1"}
    assert len(env["excludes"]) == len(set(env["excludes"])) and ".venv/" in env["excludes"]
    with pytest.raises(SystemExit):
        submit.build_runtime_env(submit.build_parser().parse_args(["--env", "novalue"]))
    with pytest.raises(SystemExit, match="nothing to run"):
        submit.cli(["--address", "http://127.0.0.1:9"])
