"""The batch job on multi-node Ray clusters on this machine (Ray's own ``ray.cluster_utils.Cluster``):
with no pool size given, a CPU-only cluster runs an actor on each node; GPU actors planned while the
cluster shows no GPU autoscale onto (fake) GPU nodes that join later.

The cluster lives in its own temp dir (RAY_TMPDIR), so no other Ray on the machine finds it; the
session's local Ray (``ray_local``), if it was running, is restarted the same way afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator

import numpy as np
import pytest
import ray
import torch
from PIL import Image
from ray.cluster_utils import Cluster

from jobs.batch import driver as stylize
from jobs.common import planning
from stylize_core.checkpoint import save_style_model
from stylize_core.transformer_net import TransformerNet

NODE_CPUS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_nodes(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    node_cpus = getattr(request, "param", NODE_CPUS)  # CPUs of each of the two nodes
    was_running = ray.is_initialized()
    ray.shutdown()
    temp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    monkeypatch.setenv("RAY_TMPDIR", temp)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": node_cpus, "include_dashboard": False, "dashboard_agent_listen_port": _free_port(),
    })
    try:
        cluster.add_node(num_cpus=node_cpus)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        monkeypatch.undo()
        shutil.rmtree(temp, ignore_errors=True)
        if was_running:  # as tests/jobs/conftest.py's ray_local started it
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")


def _inputs(tmp_path, n: int = 8) -> list[str]:
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(inputs / f"p{k}.png")
    torch.manual_seed(0)
    save_style_model(TransformerNet(), str(tmp_path / "s.pth"), style_image=rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return ["--input", str(inputs), "--output", str(tmp_path / "out"), "--style", f"s={tmp_path / 's.pth'}",
            "--vgg-weights", "random:0", "--no-metrics", "--contact-sheet", "0", "--quiet",
            "--batch-size", "1", "--read-batch-size", "1"]


def _actor_nodes() -> set[str]:
    """Nodes that ran a stylize actor (an actor the pool asked for but never placed has no node)."""
    from ray._private.state import actors  # the GCS's actor table: no dashboard needed, unlike ray.util.state

    found = [a for a in actors().values() if "StylizeActor" in a["ActorClassName"]]
    return {a["Address"]["NodeID"] for a in found if a["Address"]["NodeID"]}


# 1-CPU nodes are planned one actor each reserving no CPU (test_plan_actors.py); Ray does not always
# place two 0-CPU actors on two nodes (one run placed both on the head), so only 2-CPU nodes are run here.
@pytest.mark.parametrize("two_nodes,reserved", [(NODE_CPUS, 1.0)], indirect=["two_nodes"], ids=["2-cpu-nodes"])
def test_cpu_only_cluster_runs_an_actor_on_each_node_by_default(two_nodes, tmp_path, reserved):
    node_cpus = int(ray.cluster_resources()["CPU"]) // 2
    settings = (stylize.parse_args(_inputs(tmp_path) + ["--run-id", "two-node"]))
    summary = stylize.run(settings)
    assert summary["counts"] == {"ok": 8}
    # 1-CPU nodes: the actors reserve no CPU, so that each node runs one and reading still gets a CPU
    assert summary["actor_pool"] | {"reason": ""} == {"min": 2, "max": 2, "cpus_per_actor": reserved,
                                                      "torch_threads": node_cpus, "reason": ""}
    assert sorted(os.listdir(tmp_path / "out" / "s")) == [f"p{n}.jpg" for n in range(8)]
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert _actor_nodes() == nodes and len(nodes) == 2


@pytest.mark.slow  # three raylets on this machine
def test_gpu_actors_autoscale_onto_gpu_nodes_that_join_after_submit(two_nodes, tmp_path, monkeypatch):
    """--gpus-per-actor on a cluster with no GPU yet: the pool is planned 1:8 and its actors start on
    the fake-GPU node added after planning (torch sees no CUDA there: --device cpu)."""
    planned = stylize.plan_actors

    def plan_then_scale_up(settings):
        plan = planned(settings)
        two_nodes.add_node(num_cpus=2, num_gpus=2, resources={"gpu_node": 1})  # what the autoscaler would add
        two_nodes.wait_for_nodes()
        return plan

    monkeypatch.setattr(stylize, "plan_actors", plan_then_scale_up)
    settings = (stylize.parse_args(_inputs(tmp_path) + [
        "--run-id", "gpu", "--gpus-per-actor", "1", "--device", "cpu"]))
    summary = stylize.run(settings)
    assert summary["counts"] == {"ok": 8} and summary["stages"] == "split" and summary["gpus_per_actor"] == 1.0
    assert (summary["actor_pool"]["min"], summary["actor_pool"]["max"]) == (1, planning.DEFAULT_MAX_GPU_ACTORS)
    gpu_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")}
    assert len(gpu_nodes) == 1 and _actor_nodes() == gpu_nodes
