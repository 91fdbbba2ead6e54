"""Plain Ray actors and their method calls, for work that is not a Ray Data stream (the batch job's
posters, :mod:`jobs.batch.poster`): started with restarts, called with several return objects, their
results read where they are needed (the driver passes handles on, it does not fetch pixels)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
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


class CallStalled(RuntimeError):
    """A call that gave no answer within the stall timeout and failed after its actor was killed to restart it."""


# An actor the caller cannot reach yet is not a dead one: when its node is lost, calls to its old address
# are refused (Ray raises ActorUnavailableError once its own retries are spent) until the cluster has
# marked the node dead and restarted the actor elsewhere, which takes Ray's health checks some seconds.
# Such a call is submitted again, after a pause, for this long before the actor counts as lost.
UNAVAILABLE_GRACE_S = 120.0
UNAVAILABLE_PAUSE_S = (0.5, 8.0)  # first pause, longest pause (doubling in between)


class Refusals:
    """One call's refusals as unreachable: :meth:`pause` waits before the next try and says whether
    there is to be one (False once the call has been refused for longer than the grace)."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.count = 0

    def pause(self) -> bool:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        if now - self.since > UNAVAILABLE_GRACE_S:
            return False
        self.count += 1
        time.sleep(min(UNAVAILABLE_PAUSE_S[0] * 2 ** (self.count - 1), UNAVAILABLE_PAUSE_S[1]))
        return True


def result_or_restart(handle: Any, actor: Any, timeout_s: float, resubmit: Callable[[], Any] | None = None) -> Any:
    """The value behind ``handle``, a call of ``actor``. No answer for ``timeout_s`` seconds (0: wait
    forever) reads as a hung actor (a stuck GPU kernel, a deadlocked library): it is killed so that Ray
    restarts it and retries the calls it had not answered, and the wait begins again. Each restart
    spends one of the actor's (:func:`start_actors`' ``retries``); once they are spent the call fails
    (:class:`CallStalled`), so a call that never answers ends. A call queued behind others counts its
    wait from here: the timeout is for a stuck actor, not a tuning knob.

    A call refused because its actor cannot be reached yet (its node lost, the actor not yet restarted
    elsewhere) is made again with ``resubmit()`` (a new handle for the same call) within
    :data:`UNAVAILABLE_GRACE_S`; without ``resubmit``, or after the grace, the refusal is raised."""
    restarts = 0  # kills, each spending a restart
    refusals = Refusals()
    while True:
        try:
            return ray.get(handle, timeout=timeout_s if timeout_s > 0 else None)
        except ray.exceptions.GetTimeoutError:
            ray.kill(actor, no_restart=False)
            restarts += 1
        except ray.exceptions.RayActorError as exc:
            if isinstance(exc, ray.exceptions.ActorUnavailableError) and resubmit is not None and refusals.pause():
                handle = resubmit()
                continue
            if not restarts:
                raise
            raise CallStalled(f"no answer for {timeout_s:g} s; its actor was killed for a restart {restarts} "
                              f"time(s), and the call then failed ({type(exc).__name__})") from exc


def stop_actors(actors: Sequence[Any]) -> None:
    for actor in actors:
        with contextlib.suppress(Exception):  # one already gone must not keep the others alive
            ray.kill(actor)


def actor_id() -> str:
    """This actor's id (the same across its restarts); "" outside an actor."""
    with contextlib.suppress(Exception):
        return ray.get_runtime_context().get_actor_id() or ""
    return ""
