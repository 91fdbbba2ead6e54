"""A job's start: what refuses a run at start (one line, exit 2). The job as a process of its own,
starting and stopping its own Ray and leaving nothing behind, is tests/jobs/test_console.py's healthy
run (one process start serves both)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from jobs.common import attempts, ray_runtime
from jobs.batch import driver as stylize
from jobs.common import planning
from jobs.common.run_settings import demo_checkpoint

# Looks like a legacy torch pickle, so the driver's torch-free check passes it: only loading it (in
# a Ray task or the actors) finds out that it is no style network.
NOT_A_NETWORK = pickle.dumps(["not", "a", "network"], protocol=2)



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


@pytest.mark.usefixtures("ray_local")
def test_attempt_counts_live_in_the_gcs_per_run_and_go_with_the_run():
    """The crash-loop guard's counts: per key and per run, counted from any process (an actor here),
    removed by end and, for whatever is left, when the run's block ends, even by an exception."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_list

    @ray.remote(num_cpus=0)
    def begin_twice(ledger, key):
        return [attempts.begin_attempt(ledger, key), attempts.begin_attempt(ledger, key)]

    def keys() -> list[bytes]:  # these two runs' (a driver killed in another test may have left its own)
        return [k for k in _internal_kv_list(b"", namespace=attempts.ATTEMPTS_NAMESPACE)
                if k.startswith((one.prefix.encode(), other.prefix.encode()))]

    with pytest.raises(RuntimeError, match="the stream failed"):
        with attempts.attempt_ledger() as one, attempts.attempt_ledger() as other:
            assert ray.get(begin_twice.remote(one, "batch-7")) == [1, 2]  # a retried batch: started twice
            assert attempts.begin_attempt(one, "batch-7") == 3
            assert attempts.begin_attempt(other, "batch-7") == 1  # another run's count of the same key
            assert attempts.begin_attempt(one, "batch-8") == 1
            attempts.end_attempt(one, "batch-8")
            assert attempts.begin_attempt(one, "batch-8") == 1  # finished: counted afresh
            assert len(keys()) == 3
            raise RuntimeError("the stream failed")
    assert keys() == []


def test_unreachable_attempt_counts_leave_the_guard_aside_with_one_warning(monkeypatch, caplog):
    """No batch fails for want of a count: the store refusing is a first start, said once, not asked again."""
    import ray.experimental.internal_kv as kv

    asked = []

    def refused(*args, **kwargs):
        asked.append(args)
        raise ConnectionError("GCS unreachable")

    monkeypatch.setattr(kv, "_internal_kv_get", refused)
    monkeypatch.setattr(kv, "_internal_kv_del", refused)
    monkeypatch.setattr(attempts, "_store_lost", False)
    ledger = attempts.AttemptLedger("run/")
    with caplog.at_level("WARNING", logger=attempts.__name__):
        assert [attempts.begin_attempt(ledger, "k") for _ in range(3)] == [1, 1, 1]
        attempts.end_attempt(ledger, "k")
    assert len(asked) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "attempt counts unreachable (ConnectionError); this actor goes on without the crash-loop guard"]
