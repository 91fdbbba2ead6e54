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


def _refuser() -> type:
    """An actor whose ``answer`` is refused as unreachable (what a caller sees from an actor on a lost
    node until Ray has restarted it elsewhere) while its marker file holds a count above 0 (by value)."""

    class Refuser:
        def answer(self, marker: str, value: int) -> int:
            import ray

            left = int(open(marker).read())
            if left:
                with open(marker, "w") as f:
                    f.write(str(left - 1))
                raise ray.exceptions.ActorUnavailableError("connection refused (a test)", None)
            return value

    return Refuser


def test_a_call_refused_as_unreachable_is_submitted_again_until_the_grace_runs_out(ray_local, tmp_path,
                                                                                    monkeypatch):
    from jobs.common import actor_pool, ray_actors

    monkeypatch.setattr(ray_actors, "UNAVAILABLE_PAUSE_S", (0.05, 0.2))
    marker = tmp_path / "refusals"
    marker.write_text("3")
    pool = ActorTaskPool(_refuser(), {}, actors=1, num_cpus=0.1)
    pool.submit("answer", str(marker), 7)
    pool.submit("answer", str(marker), 8)
    got = []
    while pool.has_next():
        got.append(pool.next_unordered())
    assert sorted(got) == [7, 8] and marker.read_text() == "0"  # three refusals, each call answered once

    monkeypatch.setattr(ray_actors, "UNAVAILABLE_GRACE_S", 0.5)
    marker.write_text("1000")  # unreachable for good: lost once the grace has passed, not before
    pool.submit("answer", str(marker), 9)
    with pytest.raises(actor_pool.ActorLostError, match="ActorUnavailableError"):
        pool.next_unordered()
    assert 1000 - int(marker.read_text()) >= 3  # it was asked again in the meantime
    pool.shutdown()


def test_a_plain_call_refused_as_unreachable_is_made_again_when_it_can_be(ray_local, tmp_path, monkeypatch):
    """The posters' calls (ray_actors.result_or_restart): made again through ``resubmit`` while refused,
    within the grace; without ``resubmit`` the refusal is the caller's, as before."""
    from jobs.common import ray_actors

    monkeypatch.setattr(ray_actors, "UNAVAILABLE_PAUSE_S", (0.05, 0.2))
    marker = tmp_path / "refusals"
    (actor,) = ray_actors.start_actors(_refuser(), 1, {}, num_cpus=0.1)
    made = []

    def resubmit():
        made.append(1)
        return ray_actors.call(actor, "answer", str(marker), 7)

    marker.write_text("3")
    assert ray_actors.result_or_restart(resubmit(), actor, 30.0, resubmit=resubmit) == 7
    assert len(made) == 4 and marker.read_text() == "0"  # the first call and three more, each refused once

    marker.write_text("1")
    with pytest.raises(ray_actors.ray.exceptions.ActorUnavailableError):
        ray_actors.result_or_restart(ray_actors.call(actor, "answer", str(marker), 8), actor, 30.0)

    monkeypatch.setattr(ray_actors, "UNAVAILABLE_GRACE_S", 0.5)
    marker.write_text("1000")  # unreachable for good: the refusal once the grace has passed
    with pytest.raises(ray_actors.ray.exceptions.ActorUnavailableError):
        ray_actors.result_or_restart(resubmit(), actor, 30.0, resubmit=resubmit)
    assert 1000 - int(marker.read_text()) >= 3
    ray_actors.stop_actors([actor])
