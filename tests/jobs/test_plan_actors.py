"""The stylize actor pool planned from what the cluster shows (the cluster's answers are faked here;
tests/jobs/test_two_node.py runs the plans on real multi-node clusters)."""

from __future__ import annotations

import argparse

import pytest

from jobs.common import ray_runtime
from jobs.batch import driver as stylize
from jobs.common import planning
from jobs.batch.settings import parse_args


def _plan(monkeypatch: pytest.MonkeyPatch, *flags: str, gpus: float = 0.0, nodes: list[float] | None = None):
    monkeypatch.setattr(ray_runtime, "cluster_gpus", lambda: gpus)
    monkeypatch.setattr(ray_runtime, "node_cpus", lambda: list(nodes or [2.0]))
    return stylize.plan_actors(parse_args(["--input", "/in", *flags]))


def test_cpu_only_clusters_get_one_actor_per_node_using_its_cores(monkeypatch):
    plan = _plan(monkeypatch, nodes=[2.0])  # this machine's local Ray: as before, one actor, 2 threads
    assert (plan.min_actors, plan.max_actors, plan.gpus_per_actor, plan.torch_threads, plan.cpus_per_actor) == (1, 1, 0.0, 2, 1.0)
    plan = _plan(monkeypatch, nodes=[16.0, 16.0, 16.0])
    assert (plan.min_actors, plan.max_actors, plan.torch_threads) == (3, 3, 16)
    plan = _plan(monkeypatch, "--cores-per-actor", "4", nodes=[16.0, 8.0, 2.0])
    assert (plan.min_actors, plan.max_actors, plan.torch_threads) == (4 + 2 + 1, 7, 4)
    # one-CPU actors on every CPU would starve the read tasks (Ray Data waits forever): every core still
    # gets its actor, each reserving half a CPU, so that one CPU stays free
    plan = _plan(monkeypatch, "--cores-per-actor", "1", nodes=[2.0, 2.0])
    assert (plan.min_actors, plan.max_actors, plan.cpus_per_actor) == (4, 4, 0.5) and "free" in plan.reason
    plan = _plan(monkeypatch, "--actors", "4", nodes=[8.0, 8.0])  # two per node: half a node's cores each
    assert (plan.min_actors, plan.max_actors, plan.torch_threads, plan.cpus_per_actor) == (4, 4, 4, 1.0)
    # one CPU in all, or as many actors as CPUs: they reserve less, so reading still gets a CPU
    plan = _plan(monkeypatch, nodes=[1.0])
    assert (plan.min_actors, plan.cpus_per_actor, plan.torch_threads) == (1, 0.0, 1)
    plan = _plan(monkeypatch, "--actors", "2", nodes=[2.0])
    assert (plan.min_actors, plan.cpus_per_actor, plan.torch_threads) == (2, 0.5, 1)
    assert _plan(monkeypatch, "--torch-threads", "3", nodes=[16.0]).torch_threads == 3


@pytest.mark.parametrize("cpus,reserved", [(1.0, 0.0), (2.0, 1.0), (4.0, 1.0)])
def test_every_node_gets_an_actor_whatever_its_size(monkeypatch, cpus, reserved):
    # two nodes of 1, 2 or 4 CPUs: one actor on each, using the node's cores; a CPU stays free for reading
    plan = _plan(monkeypatch, nodes=[cpus, cpus])
    assert (plan.min_actors, plan.max_actors, plan.torch_threads, plan.cpus_per_actor) == (2, 2, int(cpus), reserved)
    assert 2 * plan.cpus_per_actor <= 2 * cpus - 1


def test_reserved_cpus_keep_a_whole_cpu_free_on_one_node():
    assert planning.reserved_cpus([1.0, 1.0], [1, 1], 1.0) == 0.0  # no node can give up a CPU otherwise
    assert planning.reserved_cpus([3.0, 1.0], [1, 1], 1.0) == 1.0  # the big node keeps one free
    assert planning.reserved_cpus([2.0], [2], 1.0) == 0.5
    assert planning.reserved_cpus([8.0, 8.0], [2, 2], 1.5) == 1.5  # what was asked, when it fits


def test_gpu_clusters_get_one_actor_per_gpu(monkeypatch):
    plan = _plan(monkeypatch, gpus=8.0, nodes=[4.0] * 8)
    assert (plan.min_actors, plan.max_actors, plan.gpus_per_actor) == (8, 8, 1.0)
    plan = _plan(monkeypatch, "--gpus-per-actor", "0.5", gpus=2.0)
    assert (plan.min_actors, plan.max_actors, plan.gpus_per_actor) == (4, 4, 0.5)


def test_gpu_actors_autoscale_while_the_cluster_shows_no_gpu(monkeypatch):
    plan = _plan(monkeypatch, "--gpus-per-actor", "1", gpus=0.0)
    assert (plan.min_actors, plan.max_actors, plan.gpus_per_actor) == (1, planning.DEFAULT_MAX_GPU_ACTORS, 1.0)
    assert "no GPU in the cluster yet" in plan.reason
    plan = _plan(monkeypatch, "--gpus-per-actor", "1", "--actors", "2:16", gpus=0.0)
    assert (plan.min_actors, plan.max_actors) == (2, 16)


def test_actor_range_flag():
    assert parse_args(["--input", "/in", "--actors", "3"]).actors == 3
    settings = parse_args(["--input", "/in", "--actors", "1:4"])
    assert (settings.actors, settings.max_actors) == (1, 4)
    for bad in ("4:1", "0:2", "x", "-1"):
        with pytest.raises((SystemExit, argparse.ArgumentTypeError)):
            parse_args(["--input", "/in", "--actors", bad])


def test_read_blocks_follow_the_planned_pool_not_the_cpus():
    assert ray_runtime.read_blocks(10**6, 16, max_actors=8) == 64 * 8  # GPU pool that may grow to 8
    assert ray_runtime.read_blocks(10**5, 16, max_actors=1) == 64
    assert ray_runtime.read_blocks(100, 16, max_actors=8) == 7  # a block per task batch at least
    assert ray_runtime.read_blocks(0, 16, max_actors=1) == 1
