"""The actor plan: how many stylize actors, with what resources and windows, for this cluster.

A plan is its own frozen value, derived from the settings and the cluster; the settings stay as the
user gave them, and the run summary records both.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.common import ray_runtime
from jobs.common.run_settings import RunSettings

# With --gpus-per-actor and no GPU in the cluster yet (GPU groups that start at zero), the pool
# autoscales from 1 to this many actors unless --actors MIN:MAX says otherwise.
DEFAULT_MAX_GPU_ACTORS = 8
# Rows per actor call unless --batch-size says otherwise. A GPU needs windows large enough for the
# Stylizer to fill its shape buckets (32 images of 512x512 per forward pass); a CPU runs one or a few
# images per pass anyway, and smaller windows lose less work when an actor dies.
GPU_WINDOW, CPU_WINDOW = 64, 8


@dataclass(frozen=True)
class ActorPlan:
    """The stylize actor pool: Ray Data autoscales it between min_actors and max_actors."""

    min_actors: int
    max_actors: int
    gpus_per_actor: float
    cpus_per_actor: float  # reserved for scheduling; the actor's threads are torch_threads
    torch_threads: int  # intra-op threads per CPU actor; 0 leaves it to the actor
    reason: str
    window: int = 8  # rows per actor call: the images the Stylizer can pack into shape buckets


def reserved_cpus(nodes: list[float], actors_per_node: list[int], wanted: float) -> float:
    """The CPUs each actor reserves: ``wanted`` when every node's actors fit and one node keeps a whole
    CPU free, else the largest share that does. Actors that reserve every CPU leave none for the
    manifest's read tasks, and Ray Data then waits forever (measured on Ray 2.60); capping the number
    of actors instead would leave nodes idle (two 1-CPU nodes would run one actor)."""
    best = 0.0
    for j, (cpus_j, actors_j) in enumerate(zip(nodes, actors_per_node)):
        # node j keeps a CPU for reading; every other node only has to hold its actors
        fits = [(c - (1.0 if i == j else 0.0)) / a for i, (c, a) in enumerate(zip(nodes, actors_per_node)) if a]
        best = max(best, min(fits, default=wanted))
    return max(0.0, min(wanted, best))


def plan_actors(settings: RunSettings) -> ActorPlan:
    """GPU clusters: one actor per GPU (``--gpus-per-actor`` each), autoscaling 1..8 while the cluster
    shows no GPUs yet. CPU-only clusters: one actor per node, or per ``--cores-per-actor`` cores of
    each node, each running that share of its node's cores as torch threads. ``--actors`` overrides."""
    gpus = ray_runtime.cluster_gpus()
    per_actor = settings.gpus_per_actor if settings.gpus_per_actor is not None else (1.0 if gpus else 0.0)
    lo, hi = settings.actors, max(settings.actors, settings.max_actors)
    if per_actor:
        if lo:
            reason = "--actors"
        elif gpus >= per_actor:
            lo = hi = int(gpus // per_actor)
            reason = f"one actor per {per_actor:g} of the cluster's {gpus:g} GPU(s)"
        else:
            lo, hi = 1, DEFAULT_MAX_GPU_ACTORS
            reason = f"no GPU in the cluster yet: autoscaling 1:{hi} (set the range with --actors MIN:MAX)"
        return ActorPlan(lo, hi, per_actor, settings.cpus_per_actor, settings.torch_threads, reason,
                         settings.batch_size or GPU_WINDOW)
    nodes = ray_runtime.node_cpus() or [1.0]
    cores = settings.cores_per_actor
    if lo:
        reason = "--actors"
        per_node = [hi // len(nodes) + (1 if k < hi % len(nodes) else 0) for k in range(len(nodes))]
    else:
        per_node = [max(1, int(c // cores)) if cores else 1 for c in nodes]
        lo = hi = sum(per_node)
        reason = f"CPU-only: one actor per {f'{cores} cores of each node' if cores else 'node'} ({len(nodes)} node(s))"
    cpus = reserved_cpus(nodes, per_node, settings.cpus_per_actor)
    if cpus < settings.cpus_per_actor:
        reason += f", reserving {cpus:g} CPU each so that every actor fits and a CPU stays free for reading"
    # Actors spread over the nodes; each takes its share of a node's cores (the smallest node's,
    # when nodes differ, so that none is oversubscribed).
    share = max(1, int(min(nodes) // -(-hi // len(nodes))))
    return ActorPlan(lo, hi, 0.0, cpus, settings.torch_threads or cores or share, reason, settings.batch_size or CPU_WINDOW)
