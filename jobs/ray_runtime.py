"""Every Ray API call of the project lives here, so a Ray upgrade touches one file."""

from __future__ import annotations

import importlib
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


def node_cpus() -> list[float]:
    """CPUs of each live node that has any (a 0-CPU head runs no actors)."""
    cpus = [float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
    return [c for c in cpus if c > 0]


def call_remote(fn: Callable[..., Any], *args: Any) -> Any:
    """Start ``fn(*args)`` as a Ray task and return a handle for :func:`result`. No CPU is reserved,
    so it runs even on a 0-CPU head while GPU workers are still starting."""
    return ray.remote(num_cpus=0, max_retries=0)(fn).remote(*args)


def result(handle: Any) -> Any:
    return ray.get(handle)


def configure_data(progress_bars: bool) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress_bars
    # Errors are rows, not exceptions: a UDF exception means a bug or a dead cluster, and it must fail
    # the run loudly rather than drop blocks silently.
    ctx.max_errored_blocks = 0


class DeferredActor:
    """Builds the class named by ``target`` ("module:Class") inside the actor process, so the driver
    need not import it (the stylize actor pulls in torch: ~470 MiB of the driver's RSS, measured)."""

    target = ""

    def __init__(self, **kwargs: Any) -> None:
        module, _, name = self.target.partition(":")
        self._impl = getattr(importlib.import_module(module), name)(**kwargs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._impl(batch)


def _deferred(target: str | type) -> type:
    """The actor class Ray Data gets: built in the actor from its "module:Class" name, or a class the
    caller already holds (tests hand in subclasses that inject failures)."""
    if isinstance(target, type):
        return target
    # Named after the real class: Ray Data names the operator, its actors and their logs after it.
    return type(target.rpartition(":")[2], (DeferredActor,), {"target": target, "__module__": __name__})


def read_blocks(rows: int, rows_per_call: int, max_actors: int) -> int:
    """How many blocks the manifest is read as: about one actor call (fused) or one decode task
    batch (split) each, capped at 64 per actor the pool may grow to, so decode parallelism follows
    the planned pool (not the CPUs present at submit time) and a block retried after an actor dies
    repeats little work."""
    return max(1, min(-(-rows // max(1, rows_per_call)), 64 * max(1, max_actors)))


def stylize_dataset(
    parts: list[str],
    rows: int,
    *,
    filesystem: Any = None,
    read_fn: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None,
    read_batch_size: int,
    actor: str | type,
    actor_kwargs: dict[str, Any],
    actors: tuple[int, int],
    batch_size: int,
    gpus_per_actor: float,
    cpus_per_actor: float,
    write_fn: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None,
    actor_env: dict[str, str] | None = None,
) -> Iterator[Any]:
    """manifest parts -> read/decode tasks -> stylize actor pool -> encode/write tasks; yields metrics
    batches as pyarrow Tables.

    ``actor`` is "module:Class", built in the actor processes; ``actors`` is the pool's (min, max):
    Ray Data's autoscaling actor pool between them. With ``read_fn``/``write_fn`` None the actor does
    its own reading and writing (fused stages): one stage, so no task workers are started and no
    pixels pass through the object store.
    """
    lo, hi = actors
    fused = read_fn is None and write_fn is None
    blocks = read_blocks(rows, batch_size if fused else read_batch_size, hi)
    # Paths are ours: no hive directories to parse. A Parquet part is read as one block whatever
    # override_num_blocks says (measured on Ray 2.60), so the streaming repartition cuts the parts
    # into the planned blocks; without it one actor would get a whole part.
    ds = ray.data.read_parquet(parts, filesystem=filesystem, partitioning=None)
    ds = ds.repartition(target_num_rows_per_block=-(-rows // blocks))
    if read_fn is not None:
        ds = ds.map_batches(read_fn, batch_size=read_batch_size, batch_format="numpy", num_cpus=1)
    actor_args: dict[str, Any] = {"num_cpus": cpus_per_actor}
    if gpus_per_actor:
        actor_args["num_gpus"] = gpus_per_actor
    if actor_env:  # merged per variable with the job's own runtime env
        actor_args["runtime_env"] = {"env_vars": dict(actor_env)}
    ds = ds.map_batches(
        _deferred(actor),
        fn_constructor_kwargs=actor_kwargs,
        batch_size=batch_size,
        batch_format="numpy",
        # The pinned Ray's form (`concurrency=` is deprecated there). A fixed pool when lo == hi.
        compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi),
        # One actor per node on CPU clusters: spread them rather than pack the first node.
        scheduling_strategy="SPREAD",
        # Ray Data's actor pools default to max_restarts=-1 and max_task_retries=-1: a dead actor is
        # replaced and its in-flight batch retried, not lost (tests/jobs kill one to check).
        **actor_args,
    )
    if write_fn is not None:
        ds = ds.map_batches(write_fn, batch_size=batch_size, batch_format="numpy", num_cpus=1)
    # Arrow, as Ray Data holds the blocks: the driver converts and counts them without numpy copies.
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1)


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


def attempt_ledger() -> Any:
    """A new attempt ledger for one run, shared by its stylize actors through their constructor
    arguments. Anonymous: a named one would let a rerun of the same run id pick up the previous
    run's ledger while Ray is still tearing it down. It lives while the caller holds the handle."""
    return _AttemptLedger.remote()


def begin_attempt(ledger: Any, key: str) -> int:
    """Count one more start of ``key``; returns how many times it has been started unfinished."""
    return ray.get(ledger.begin.remote(key))


def end_attempt(ledger: Any, key: str) -> None:
    # Waited for: an actor that exits on a sticky CUDA error right after would otherwise lose the
    # unsent call, and an input it had finished would count as one that killed it.
    ray.get(ledger.end.remote(key))


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
