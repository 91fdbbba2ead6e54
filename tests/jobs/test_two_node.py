"""The batch job on a two-node Ray cluster on this machine (Ray's own ``ray.cluster_utils.Cluster``):
the stylize actors are spread over both nodes and every output is written.

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
from ray.util.state import list_actors

from jobs import stylize
from stylize_core.checkpoint import save_style_model
from stylize_core.transformer_net import TransformerNet

NODE_CPUS = 3  # one 2-CPU actor fits per node, with a CPU left for read/write tasks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    was_running = ray.is_initialized()
    ray.shutdown()
    temp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    monkeypatch.setenv("RAY_TMPDIR", temp)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": NODE_CPUS, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": _free_port(), "dashboard_agent_listen_port": _free_port(),
    })
    try:
        cluster.add_node(num_cpus=NODE_CPUS)
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


def test_stylize_actors_run_on_both_nodes(two_nodes, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for n in range(8):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(inputs / f"p{n}.png")
    torch.manual_seed(0)
    save_style_model(TransformerNet(), str(tmp_path / "s.pth"), style_image=rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    settings = stylize.parse_args([
        "--input", str(inputs), "--output", str(tmp_path / "out"), "--style", f"s={tmp_path / 's.pth'}",
        "--vgg-weights", "random:0", "--no-metrics", "--contact-sheet", "0", "--quiet", "--run-id", "two-node",
        "--actors", "2", "--cpus-per-actor", "2", "--batch-size", "1", "--read-batch-size", "1",
    ])
    summary = stylize.run(settings)
    assert summary["counts"] == {"ok": 8} and summary["actors"] == 2
    assert sorted(os.listdir(tmp_path / "out" / "s")) == [f"p{n}.jpg" for n in range(8)]

    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    actors = [a for a in list_actors(limit=1000, raise_on_missing_output=False) if "StylizeActor" in a.class_name]
    assert len(actors) >= 2, actors
    assert {a.node_id for a in actors} == nodes and len(nodes) == 2
