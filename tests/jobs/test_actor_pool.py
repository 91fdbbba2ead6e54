"""The video job's actor pool asks its actors to clean up before it kills them."""

from __future__ import annotations

import os

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
