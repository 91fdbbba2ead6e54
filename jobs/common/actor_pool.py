"""A fixed pool of Ray actors taking method calls as they free up (the video job's segments and joins)."""

from __future__ import annotations

import contextlib
from typing import Any

import ray

from jobs.common.ray_actors import start_actors


class ActorLostError(RuntimeError):
    """An actor of an :class:`ActorTaskPool` is gone for good: its restarts spent, or no node left
    that can hold it."""


class ActorTaskPool:
    """A fixed pool of actors taking method calls as they free up (the video job's segments and joins).

    Work is submitted while results come back, so a video's join can be queued as soon as its last
    segment finishes. A dead actor (its node lost, say) is restarted and its call retried by Ray
    (``max_restarts``, ``max_task_retries``); once its restarts are spent, :meth:`next_unordered`
    raises :class:`ActorLostError`.
    """

    def __init__(self, actor_cls: type, actor_kwargs: dict[str, Any], *, actors: int, num_cpus: float,
                 num_gpus: float = 0.0, env: dict[str, str] | None = None, retries: int = 2) -> None:
        from ray.util import ActorPool

        self._actors = start_actors(actor_cls, actors, actor_kwargs, num_cpus=num_cpus, num_gpus=num_gpus,
                                    retries=retries, env=env)
        self._pool = ActorPool(self._actors)
        self._closes = callable(getattr(actor_cls, "close", None))

    def submit(self, method: str, *args: Any) -> None:
        self._pool.submit(lambda actor, a: getattr(actor, method).remote(*a), args)

    def has_next(self) -> bool:
        return self._pool.has_next()

    def next_unordered(self) -> Any:
        try:
            return self._pool.get_next_unordered()
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnschedulableError) as exc:
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
            raise ActorLostError(f"{type(exc).__name__}: {first}"[:300]) from exc

    def shutdown(self, close_timeout_s: float = 30.0) -> None:
        """Ask each actor to ``close()`` (when its class has one: its temporary files), then kill it.

        ``ray.kill`` runs no destructor and no atexit handler, so whatever an actor keeps on local
        disk would outlive every run without the call; an actor that does not answer in time (lost,
        stuck) is killed all the same.
        """
        if self._closes:
            with contextlib.suppress(Exception):  # a lost actor must not stop the others' clean-up
                ray.wait([a.close.remote() for a in self._actors], num_returns=len(self._actors),
                         timeout=close_timeout_s)
        for actor in self._actors:
            ray.kill(actor)
