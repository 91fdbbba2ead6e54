"""The Ray calls of the batch, video and catalog jobs live here, so a Ray upgrade touches few files
(with :mod:`jobs.common.ray_actors`, plain actors, and :mod:`jobs.common.attempts`, the crash-loop
guard's counts). Ray Train (:mod:`jobs.train`) and job submission (:mod:`jobs.submit`) use their own
Ray APIs directly.
"""

from __future__ import annotations


import importlib
import logging
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import ray

from jobs.common.stderr_filter import drop_stderr_lines

log = logging.getLogger(__name__)


# (node id of the local Ray this process started, the environment every one of its workers inherits)
_inherited: tuple[str, dict[str, str]] = ("", {})


def init_ray(address: str | None = None, *, quiet: bool = False, num_cpus: int | None = None,
             worker_env: dict[str, str] | None = None) -> None:
    """Connect to ``address`` (or RAY_ADDRESS), else start a local Ray; no-op when already connected.

    A local Ray started here gives ``worker_env`` to every worker process it starts (they inherit
    the raylet's environment), so that actors asking for those variables (:func:`runtime_env`) need
    no runtime environment of their own and can start on the workers Ray prestarts: measured ~0.5 s
    less per actor start on 2 cores. On a cluster the variables travel as a runtime environment."""
    global _inherited
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"log_to_driver": not quiet, "logging_level": logging.WARNING}
    if address is not None:
        ray.init(address=address, **kwargs)
        return
    # A local Ray for one job: no dashboard to start, and our own progress line instead of its banner.
    kwargs.update(include_dashboard=False, num_cpus=num_cpus)
    env = dict(worker_env or {})
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # only while the raylet is spawned: this process itself keeps its own
    try:
        ray.init(**kwargs)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    _inherited = (ray.get_runtime_context().get_node_id(), env)


def runtime_env(env: dict[str, str] | None) -> dict[str, Any] | None:
    """The runtime environment that gives a worker ``env``: None when the local Ray this process
    started already gives every worker those values (see :func:`init_ray`)."""
    node, inherited = _inherited
    if env and node and node == ray.get_runtime_context().get_node_id():
        env = {k: v for k, v in env.items() if inherited.get(k) != v}
    return {"env_vars": dict(env)} if env else None


def exit_process(code: int) -> None:
    """End a job's process: stop a local Ray now rather than in Ray's exit hook (which first sleeps
    0.5 s for late worker messages), with its autoscaler monitor first (see
    :func:`_stop_local_monitor`), then exit. Stopping a local Ray, measured on 2 cores: 2.2 s in
    Ray's exit hook with the interpreter's exit, 1.6 s for ``ray.shutdown()`` called directly, 0.4-0.6 s
    with the monitor stopped first (then 0.35 s for the interpreter to exit)."""
    if ray.is_initialized():
        _stop_local_monitor()
        ray.shutdown()
    raise SystemExit(code)


def _stop_local_monitor() -> None:
    """Kill the autoscaler monitor of the local Ray this process started. Ray 2.60 stops the GCS
    before the monitor, whose SIGTERM handler then tries to report to the stopped GCS until Ray
    kills it a second later: 1.0 s of a 1.4 s shutdown, measured. SIGKILL skips the handler (which
    would only report its own termination). Linux only; elsewhere Ray's own order stands."""
    if not _inherited[0] or not os.path.isdir("/proc"):
        return
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rpartition(b")")[2].split()[1])
            if ppid != me:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if any(a.endswith(b"autoscaler/_private/monitor.py") or a.endswith(b"autoscaler/v2/monitor.py") for a in argv):
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def preload_data() -> None:
    """Import Ray Data (~0.2 s) where it can overlap other start-up work."""
    import ray.data  # noqa: F401


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


def put(value: Any) -> Any:
    """``value`` in the object store, owned by this (the driver's) process: one copy that every actor
    given the handle as a top-level constructor argument receives, restarts included."""
    return ray.put(value)


def configure_data() -> None:
    """Ray Data settings of the batch job. The console gets the job's own progress
    (:mod:`jobs.common.progress`): Ray Data's progress bars are off (on a non-terminal they are a
    block of stats lines every 10 s), and its INFO lines (execution plan, start, finish) go only to
    its log files under the Ray session's ``logs/ray-data/``; its warnings still reach the console."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    # Errors are rows, not exceptions: a UDF exception means a bug or a dead cluster, and it must fail
    # the run loudly rather than drop blocks silently.
    ctx.max_errored_blocks = 0
    # The staged manifest is ours: a few Parquet parts of known rows, nothing to prune or sample. Ray
    # 2.60's default Parquet reader (DataSourceV2) reads their footers in a pool of FooterReader actors,
    # each a new Python process (up to RAY_DATA_PARQUET_FOOTER_NUM_ACTORS=32), started and killed on
    # every run; the V1 reader reads them in the driver and in task workers Ray reuses. Measured on a
    # local Ray (3 runs of 6 inputs): 33 -> 18 processes and about a third less CPU per run
    # (docs/design.md, "The test suite's time").
    ctx.use_datasource_v2 = False
    # Ray Data's default logging config (ray/data/_internal/logging.py, Ray 2.60) gives the "ray.data"
    # logger a file handler at DEBUG and a handler named "console" at INFO. A config of one's own
    # (RAY_DATA_LOGGING_CONFIG) has no handler of that name and is left as it is.
    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console":
            handler.setLevel(logging.WARNING)
            if not any(isinstance(f, _BarsOffHint) for f in handler.filters):
                handler.addFilter(_BarsOffHint())


class _BarsOffHint(logging.Filter):
    """Ray Data warns once that its progress bars are off and how to turn them on
    (ray/data/_internal/progress/__init__.py); they are off on purpose, so the console skips that hint
    (its log file keeps it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("ray.data._internal.progress")
                    and record.getMessage().startswith("Progress bars disabled."))


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


# Rows per manifest block at most (more when one actor call or decode batch is larger). A block is one
# task's output, which reaches the driver whole as one metrics table: without a cap the driver held
# blocks of rows/64 rows, its memory growing with the catalog (40,000 inputs at 8-row windows: blocks
# of 3,077 rows peaked 62 MiB above blocks of 625). Ray Data keeps ~13 KB per block on the driver
# (measured), so smaller blocks cost about what they save at 10^7 rows: docs/benchmarks.md.
MAX_BLOCK_ROWS = 4096


def read_blocks(rows: int, rows_per_call: int, max_actors: int) -> int:
    """How many blocks the manifest is read as: about one actor call (fused) or one decode task
    batch (split) each, capped at 64 per actor the pool may grow to, so decode parallelism follows
    the planned pool (not the CPUs present at submit time), but never fewer than blocks of
    :data:`MAX_BLOCK_ROWS` rows (or of one call, when a call is larger): the driver then holds a
    bounded number of rows however large the catalog, and a block retried after an actor dies
    repeats little work."""
    per_call = max(1, rows_per_call)
    planned = min(-(-rows // per_call), 64 * max(1, max_actors))
    return max(1, planned, -(-rows // max(MAX_BLOCK_ROWS, per_call)))


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
    # No more actors at the start than blocks to give them: each would build its networks for nothing, and
    # Ray Data warns on the console when a pool's minimum exceeds its inputs. The pool still grows to hi.
    lo = min(lo, blocks)
    # Paths are ours: no hive directories to parse. One read task per part (Ray Data would otherwise
    # start 2 x CPUs of them for a few kilobytes, and on a small cluster they hold the CPUs while the
    # actor pool is placed: tests/jobs/test_two_node.py saw both actors land on one node); the
    # streaming repartition then cuts the parts into the planned blocks, so no actor gets a whole part.
    ds = ray.data.read_parquet(parts, filesystem=filesystem, partitioning=None, override_num_blocks=len(parts))
    ds = ds.repartition(target_num_rows_per_block=-(-rows // blocks))
    if read_fn is not None:
        ds = ds.map_batches(read_fn, batch_size=read_batch_size, batch_format="numpy", num_cpus=1)
    actor_args: dict[str, Any] = {"num_cpus": cpus_per_actor}
    if gpus_per_actor:
        actor_args["num_gpus"] = gpus_per_actor
    env = runtime_env(actor_env)
    if env:  # merged per variable with the job's own runtime env
        actor_args["runtime_env"] = env
    ds = ds.map_batches(
        _deferred(actor),
        fn_constructor_kwargs=actor_kwargs,
        batch_size=batch_size,
        batch_format="numpy",
        # The pinned Ray's form (`concurrency=` is deprecated there). A fixed pool when lo == hi.
        compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi),
        # Actors spread over the nodes (one per node on CPU clusters): Ray Data's default for actor pools
        # (DataContext.scheduling_strategy, "SPREAD" in Ray 2.60; passing it here is deprecated there).
        # tests/jobs/test_two_node.py checks that both nodes run actors.
        # Ray Data's actor pools default to max_restarts=-1 and max_task_retries=-1: a dead actor is
        # replaced and its in-flight batch retried, not lost (tests/jobs kill one to check).
        **actor_args,
    )
    if write_fn is not None:
        ds = ds.map_batches(write_fn, batch_size=batch_size, batch_format="numpy", num_cpus=1)
    yield from _arrow_batches(ds)


def _arrow_batches(ds: Any) -> Iterator[Any]:
    """The dataset's batches as Arrow, as Ray Data holds the blocks (the driver converts and counts
    them without numpy copies). Asking for the first starts the execution, and with it the actor
    pool's first actors: Ray core's warning about those (:data:`_ACTOR_ARGS_WARNING`) is kept off the
    console meanwhile."""
    batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1))
    try:
        with drop_stderr_lines(*_ACTOR_ARGS_WARNING):
            first = next(batches, None)
        if first is not None:
            yield first
            yield from batches
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


# Ray 2.60's core logs this at ERROR level, once per process, to stderr (src/ray/core_worker/
# core_worker.cc, CoreWorker::CreateActor) for any actor with max_restarts != 0 and an argument passed
# by reference (ray-project/ray#53727: such an argument, if lost, is not rebuilt for a restart).
# Ray Data's actor pool always creates its actors so (ray/data/_internal/execution/operators/
# actor_pool_map_operator.py, _start_actor: `ctx` and `map_transformer` are ObjectRefs from
# map_operator.py's ray.put) with max_restarts=-1 (its fault tolerance, which the job relies on), so
# no way of building our actor avoids it, and the C++ line bypasses Python logging. The warning is
# moot here: the driver owns both objects and holds them for the whole execution, and a restart that
# did fail would raise its own error, which is not filtered. The line stays in the driver's Ray log
# (the session's logs/python-core-driver-*.log); only the console copy of exactly this line is dropped.
_ACTOR_ARGS_WARNING = (b"Actor with class name: 'MapWorker(",
                       b"has constructor arguments in the object store and max_restarts > 0")
