"""Plain Ray actors and their method calls, for work that is not a Ray Data stream (the batch job's
posters, :mod:`jobs.batch.poster`): started with restarts, called with several return objects, their
results read where they are needed (the driver passes handles on, it does not fetch pixels)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import ray

from jobs.common.ray_runtime import runtime_env


def start_actors(cls: type, count: int, kwargs: dict[str, Any], *, num_cpus: float, num_gpus: float = 0.0,
                 retries: int = 0, env: dict[str, str] | None = None) -> list[Any]:
    """``count`` actors of ``cls(**kwargs)``. An actor that dies (its process killed, its node lost) is
    restarted up to ``retries`` times, and the calls it had not answered are retried on the new one: the
    calls it did answer are not run again (their results are already in the object store)."""
    options: dict[str, Any] = {"num_cpus": num_cpus, "max_restarts": retries, "max_task_retries": retries}
    if num_gpus:
        options["num_gpus"] = num_gpus
    worker_env = runtime_env(env)
    if worker_env:
        options["runtime_env"] = worker_env
    remote_cls = ray.remote(cls).options(**options)
    return [remote_cls.remote(**kwargs) for _ in range(max(1, count))]


def call(actor: Any, method: str, *args: Any, returns: int = 1) -> Any:
    """``actor.method(*args)`` started; its result's handle, or a list of ``returns`` handles."""
    bound = getattr(actor, method)
    return (bound.options(num_returns=returns) if returns != 1 else bound).remote(*args)


def results(handles: Any) -> Any:
    """The value(s) behind a handle or a list of handles (raises what the call raised)."""
    return ray.get(handles)


def stop_actors(actors: Sequence[Any]) -> None:
    for actor in actors:
        with contextlib.suppress(Exception):  # one already gone must not keep the others alive
            ray.kill(actor)


def actor_id() -> str:
    """This actor's id (the same across its restarts); "" outside an actor."""
    with contextlib.suppress(Exception):
        return ray.get_runtime_context().get_actor_id() or ""
    return ""
