"""A fixed pool of Ray actors taking method calls as they free up (the video job's segments and joins)."""

from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass, field
from typing import Any

import ray

from jobs.common.ray_actors import Refusals, start_actors
from jobs.common.redaction import exception_line


class ActorLostError(RuntimeError):
    """An actor of an :class:`ActorTaskPool` is gone for good: its restarts spent, or no node left
    that can hold it."""


@dataclass
class _Call:
    method: str
    args: tuple
    refusals: Refusals = field(default_factory=Refusals)  # as unreachable (jobs.common.ray_actors)


def _lost(exc: BaseException) -> ActorLostError:
    return ActorLostError(exception_line(exc))


class ActorTaskPool:
    """A fixed pool of actors taking method calls as they free up (the video job's segments and joins).

    Work is submitted while results come back, so a video's join can be queued as soon as its last
    segment finishes. A dead actor (its node lost, say) is restarted and its call retried by Ray
    (``max_restarts``, ``max_task_retries``); a call refused because its actor cannot be reached yet is
    submitted again (:class:`jobs.common.ray_actors.Refusals`); once the actor's restarts are spent, or
    it stays unreachable past the grace, :meth:`next_unordered` raises :class:`ActorLostError`. The
    calls must be safe to run twice (a refused call may have run), as Ray's own retries already require.
    """

    def __init__(self, actor_cls: type, actor_kwargs: dict[str, Any], *, actors: int, num_cpus: float,
                 num_gpus: float = 0.0, env: dict[str, str] | None = None, retries: int = 2) -> None:
        self._actors = start_actors(actor_cls, actors, actor_kwargs, num_cpus=num_cpus, num_gpus=num_gpus,
                                    retries=retries, env=env)
        self._idle = list(self._actors)
        self._queued: collections.deque[_Call] = collections.deque()  # waiting for an idle actor
        self._running: dict[Any, tuple[Any, _Call]] = {}  # result handle -> (actor, call)
        self._closes = callable(getattr(actor_cls, "close", None))

    def submit(self, method: str, *args: Any) -> None:
        self._queued.append(_Call(method, args))
        self._dispatch()

    def _dispatch(self) -> None:
        while self._idle and self._queued:
            actor, pending = self._idle.pop(), self._queued.popleft()
            self._running[getattr(actor, pending.method).remote(*pending.args)] = (actor, pending)

    def has_next(self) -> bool:
        return bool(self._running or self._queued)

    def next_unordered(self) -> Any:
        """The next result to come back, in any order; raises what the call raised (a call's own
        exception as Ray wraps it), or :class:`ActorLostError`."""
        while True:
            if not self._running:
                raise StopIteration("no call submitted")
            (done,), _ = ray.wait(list(self._running), num_returns=1)
            actor, pending = self._running.pop(done)
            self._idle.append(actor)
            try:
                return ray.get(done)
            except ray.exceptions.ActorUnavailableError as exc:
                if not pending.refusals.pause():
                    raise _lost(exc) from exc
                self._queued.appendleft(pending)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnschedulableError) as exc:
                raise _lost(exc) from exc
            finally:
                self._dispatch()

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
