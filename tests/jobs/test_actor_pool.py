"""The video job's actor pool asks its actors to clean up before it kills them; a plain actor call that
never answers restarts its actor and ends once its restarts are spent."""

from __future__ import annotations

import os

import pytest

from jobs.common.actor_pool import ActorTaskPool


def _keeper() -> type:
    """An actor class keeping files on local disk, as a video worker keeps the download of a remote
    input; built in a function so that Ray ships it by value (the workers cannot import tests)."""

    class Keeper:
        def __init__(self, path: str) -> None:
            self.path = path

        def touch(self, name: str) -> str:
            os.makedirs(self.path, exist_ok=True)
            target = os.path.join(self.path, name)
            open(target, "w").close()
            return target

        def close(self) -> None:
            for name in os.listdir(self.path):
                os.unlink(os.path.join(self.path, name))

    return Keeper


def test_shutdown_lets_each_actor_remove_its_files(ray_local, tmp_path):
    pool = ActorTaskPool(_keeper(), {"path": str(tmp_path / "kept")}, actors=2, num_cpus=0.1)
    for i in range(4):
        pool.submit("touch", f"f{i}")
    made = [pool.next_unordered() for _ in range(4)]
    assert all(os.path.exists(p) for p in made)
    pool.shutdown()
    assert os.listdir(tmp_path / "kept") == []


def _sleeper() -> type:
    """An actor whose ``answer`` hangs the first time it finds its marker file (removing it), as a
    stuck kernel would once (by value, as above)."""

    class Sleeper:
        def answer(self, marker: str) -> int:
            import time

            if os.path.exists(marker):
                os.unlink(marker)
                time.sleep(3600)
            return os.getpid()

    return Sleeper


def test_a_call_without_an_answer_restarts_its_actor_and_ends_once_restarts_are_spent(ray_local, tmp_path):
    """The wait includes the restart (a new process importing Ray): 2 s, with restarts to spare for a
    restart slower than that on a loaded machine."""
    from jobs.common import ray_actors

    marker = tmp_path / "hang"
    (actor,) = ray_actors.start_actors(_sleeper(), 1, {}, num_cpus=0.1, retries=3)
    first_pid = ray_actors.results(ray_actors.call(actor, "answer", str(marker)))
    marker.touch()
    pid = ray_actors.result_or_restart(ray_actors.call(actor, "answer", str(marker)), actor, 2.0)
    assert not marker.exists() and pid != first_pid  # it hung, was restarted, and the retry answered
    assert ray_actors.result_or_restart(ray_actors.call(actor, "answer", str(marker)), actor, 2.0) == pid
    ray_actors.stop_actors([actor])

    (actor,) = ray_actors.start_actors(_sleeper(), 1, {}, num_cpus=0.1, retries=0)
    marker.touch()  # no restart to spend: the call ends instead of waiting forever
    with pytest.raises(ray_actors.CallStalled, match=r"^no answer for 1 s; its actor was killed for a restart 1 "):
        ray_actors.result_or_restart(ray_actors.call(actor, "answer", str(marker)), actor, 1.0)
    ray_actors.stop_actors([actor])
