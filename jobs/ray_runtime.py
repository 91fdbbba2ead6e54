"""Every Ray API call of the project lives here, so a Ray upgrade touches one file."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import ray

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, *, quiet: bool = False, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or RAY_ADDRESS), else start a local Ray; no-op when already connected."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"log_to_driver": not quiet, "logging_level": logging.WARNING}
    if address is None:
        # A local Ray for one job: no dashboard to start, and our own progress line instead of its banner.
        kwargs.update(include_dashboard=False, num_cpus=num_cpus)
    ray.init(address=address, **kwargs)


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 0.0))


def configure_data(progress_bars: bool) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress_bars
    # Errors are rows, not exceptions: a UDF exception means a bug or a dead cluster, and it must fail
    # the run loudly rather than drop blocks silently.
    ctx.max_errored_blocks = 0


def stylize_dataset(
    items: list[dict[str, Any]],
    *,
    read_fn: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None,
    read_batch_size: int,
    actor_cls: type,
    actor_kwargs: dict[str, Any],
    actors: int,
    batch_size: int,
    gpus_per_actor: float,
    cpus_per_actor: float,
    write_fn: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None,
    actor_env: dict[str, str] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """items -> read/decode tasks -> stylize actor pool -> encode/write tasks; yields metrics batches.

    With ``read_fn``/``write_fn`` None the actor does its own reading and writing (fused stages): one
    stage, so no task workers are started and no pixels pass through the object store.
    """
    if read_fn is None and write_fn is None:
        # About one block per actor call keeps every actor busy to the end (an actor takes a whole
        # block); capped so a catalog of millions is not millions of tiny objects.
        blocks = max(1, min(-(-len(items) // batch_size), 64 * actors))
    else:
        blocks = max(1, min(len(items), 4 * max(1, int(cluster_cpus())), -(-len(items) // read_batch_size)))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    if read_fn is not None:
        ds = ds.map_batches(read_fn, batch_size=read_batch_size, batch_format="numpy", num_cpus=1)
    actor_args: dict[str, Any] = {"num_cpus": cpus_per_actor}
    if gpus_per_actor:
        actor_args["num_gpus"] = gpus_per_actor
    if actor_env:  # merged per variable with the job's own runtime env
        actor_args["runtime_env"] = {"env_vars": dict(actor_env)}
    ds = ds.map_batches(
        actor_cls,
        fn_constructor_kwargs=actor_kwargs,
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=actors,
        # Ray Data's actor pools default to max_restarts=-1 and max_task_retries=-1: a dead actor is
        # replaced and its in-flight batch retried, not lost (tests/jobs kill one to check).
        **actor_args,
    )
    if write_fn is not None:
        ds = ds.map_batches(write_fn, batch_size=batch_size, batch_format="numpy", num_cpus=1)
    yield from ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1)


class ActorTaskPool:
    """A fixed pool of actors taking method calls as they free up (the video job's segments and joins).

    Work is submitted while results come back, so a video's join can be queued as soon as its last
    segment finishes. A dead actor is restarted and its call retried by Ray (``max_restarts``,
    ``max_task_retries``).
    """

    def __init__(self, actor_cls: type, actor_kwargs: dict[str, Any], *, actors: int, num_cpus: float,
                 num_gpus: float = 0.0, env: dict[str, str] | None = None, retries: int = 2) -> None:
        from ray.util import ActorPool

        options: dict[str, Any] = {"num_cpus": num_cpus, "max_restarts": retries, "max_task_retries": retries}
        if num_gpus:
            options["num_gpus"] = num_gpus
        if env:
            options["runtime_env"] = {"env_vars": dict(env)}
        remote_cls = ray.remote(actor_cls).options(**options)
        self._actors = [remote_cls.remote(**actor_kwargs) for _ in range(max(1, actors))]
        self._pool = ActorPool(self._actors)

    def submit(self, method: str, *args: Any) -> None:
        self._pool.submit(lambda actor, a: getattr(actor, method).remote(*a), args)

    def has_next(self) -> bool:
        return self._pool.has_next()

    def next_unordered(self) -> Any:
        return self._pool.get_next_unordered()

    def shutdown(self) -> None:
        for actor in self._actors:
            ray.kill(actor)
