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


@ray.remote(num_cpus=0, max_restarts=-1)
class _AttemptLedger:
    """How often each batch (or image) has been started and not finished: a batch whose actor keeps
    dying is started again and again by Ray's retries, and this count is what notices it. Only
    unfinished keys are kept, so the ledger stays small however large the run."""

    def __init__(self) -> None:
        self.started: dict[str, int] = {}

    def begin(self, key: str) -> int:
        self.started[key] = self.started.get(key, 0) + 1
        return self.started[key]

    def end(self, key: str) -> None:
        self.started.pop(key, None)


def attempt_ledger(run_id: str) -> Any:
    """The run's attempt ledger (a named actor, created once, shared by every stylize actor)."""
    return _AttemptLedger.options(name=f"stylize-attempts-{run_id}", get_if_exists=True).remote()


def begin_attempt(ledger: Any, key: str) -> int:
    """Count one more start of ``key``; returns how many times it has been started unfinished."""
    return ray.get(ledger.begin.remote(key))


def end_attempt(ledger: Any, key: str) -> None:
    ledger.end.remote(key)  # fire and forget: a lost end only makes a later retry isolate sooner
