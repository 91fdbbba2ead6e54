"""A node lost mid-run (a preempted spot instance, a raylet killed by the kernel's OOM killer): a
two-node local cluster (Ray's own ``ray.cluster_utils.Cluster``), the job connected with
``--address``, the worker node removed without warning once some outputs exist. Each job finishes
with every input exactly once in the metrics and once as an output, and no temporary files left.
What Ray cannot recover (injected on the session's local Ray) stops the job with one line after the
rows it holds are written, and a rerun of the same run id completes the run.

The cluster lives in its own temp dir (RAY_TMPDIR), as in tests/jobs/test_two_node.py; its head is
shared by the module's tests, each adding a fresh worker node to lose. The tests on the session's
local Ray come first; it is restarted after the last cluster test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch
from PIL import Image
from ray.cluster_utils import Cluster

from jobs.batch import driver as stylize
from jobs.common import attempts, ray_runtime
from stylize_core.checkpoint import save_style_model
from stylize_core.transformer_net import TransformerNet

NODE_CPUS = 2
INPUTS = 48
# The GCS marks a node dead after missed health checks (Ray 2.60's defaults: 5 misses 3 s apart,
# after a 10 s timeout); a test need not wait that long to see it.
FAST_NODE_DEATH = {"health_check_period_ms": 1000, "health_check_timeout_ms": 1000, "health_check_failure_threshold": 2}
# One stylize actor: whichever node is lost, the head keeps a CPU free for Ray Data's read tasks. The
# default CPU plan (an actor on each node, a fixed pool) fills the surviving head with two restarted
# actors, and Ray Data then waits forever for a CPU for its repartition task (seen here once: a night
# stuck at 45 of 48 outputs); docs/operations/clusters.md says so.
ONE_ACTOR = ["--actors", "1"]
SIDE = 96  # big enough that the run is still going when the node goes, small enough for 2 cores


@dataclass
class TwoNodes:
    cluster: Cluster
    worker: object  # ray._private.node.Node: what Cluster.remove_node takes

    @property
    def worker_id(self) -> str:
        return self.worker.node_id


@pytest.fixture(scope="module")
def head() -> Iterator[Cluster]:
    """The cluster's head node, shared by the module's tests (each adds its own worker node); the
    session's local Ray, if it was running, is restarted after the last of them."""
    was_running = ray.is_initialized()
    ray.shutdown()
    mp = pytest.MonkeyPatch()
    temp = tempfile.mkdtemp(prefix="rn-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    mp.setenv("RAY_TMPDIR", temp)
    mp.delenv("RAY_ADDRESS", raising=False)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": NODE_CPUS, "include_dashboard": False,
                                                            "_system_config": FAST_NODE_DEATH})
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        mp.undo()
        shutil.rmtree(temp, ignore_errors=True)
        if was_running:  # as tests/jobs/conftest.py's ray_local started it
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            ray.data.DataContext.get_current().enable_progress_bars = False


@pytest.fixture
def two_nodes(head: Cluster) -> Iterator[TwoNodes]:
    """The head and a fresh worker node; the test's driver connection ends with the test."""
    worker = head.add_node(num_cpus=NODE_CPUS)
    head.wait_for_nodes()
    try:
        yield TwoNodes(head, worker)
    finally:
        ray.shutdown()
        if worker in head.worker_nodes:  # the test failed before removing it
            head.remove_node(worker, allow_graceful=False)


def _images(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(folder / f"p{k:02d}.png")


def _style(tmp_path: Path) -> str:
    torch.manual_seed(0)
    path = tmp_path / "s.pth"
    save_style_model(TransformerNet(), str(path), style_image=np.zeros((8, 8, 3), dtype=np.uint8))
    return f"s={path}"


def _batch_args(tmp_path: Path, address: str, run_id: str, n: int = INPUTS) -> list[str]:
    _images(tmp_path / "in", n)
    return ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--style", _style(tmp_path),
            "--vgg-weights", "random:0", "--no-metrics", "--contact-sheet", "0", "--quiet",
            "--batch-size", "1", "--read-batch-size", "1", *ONE_ACTOR, "--address", address, "--run-id", run_id]


class NodeRemoval(threading.Thread):
    """Removes the worker node, ungracefully (a preemption, a raylet killed), once ``count`` files
    match ``pattern`` under ``folder``; ``at`` is when."""

    def __init__(self, nodes: TwoNodes, folder: Path, count: int, pattern: str) -> None:
        super().__init__(daemon=True)
        self.nodes, self.folder, self.count, self.pattern = nodes, folder, count, pattern
        self.at = float("inf")
        self.start()

    def _made(self) -> int:
        if not self.folder.exists():
            return 0
        return sum(1 for p in self.folder.rglob(self.pattern) if ".tmp-" not in p.name)

    def run(self) -> None:
        deadline = time.time() + 300
        while time.time() < deadline and self._made() < self.count:
            time.sleep(0.02)
        self.at = time.time()
        self.nodes.cluster.remove_node(self.nodes.worker, allow_graceful=False)

    def check_mid_run(self, finished: float) -> None:
        """The node went while the job was still running, and Ray has marked it dead."""
        self.join(timeout=60)
        assert not self.is_alive() and self.at < finished
        assert sum(1 for n in ray.nodes() if n["Alive"]) == 1


def _actors(class_name: str) -> list[dict]:
    """This driver's job's actors in the GCS's actor table (no dashboard needed, unlike ray.util.state);
    the module's earlier tests ran on the same head as other jobs."""
    from ray._private.state import actors

    job = ray.get_runtime_context().get_job_id()
    return [a for a in actors().values() if a["ActorClassName"] == class_name and a["JobID"] == job]


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


def _names(n: int, ext: str) -> list[str]:
    return [f"p{k:02d}.{ext}" for k in range(n)]


def _check_batch_outputs(out: Path, run_id: str) -> None:
    rows = pq.read_table(out / "_metrics" / f"run_id={run_id}").to_pylist()
    inputs = sorted(os.path.basename(r["input_uri"]) for r in rows)
    assert inputs == _names(INPUTS, "png")  # each exactly once
    assert {r["status"] for r in rows} == {"ok"}
    assert sorted(p.name for p in (out / "s").iterdir()) == _names(INPUTS, "jpg")
    assert _temp_files(out) == []


# ---------------------------------------------------------------- on the session's local Ray (first)


@pytest.mark.parametrize("failure", ["raises", "stalls"])
def test_a_pipeline_failure_writes_the_rows_held_and_a_rerun_of_the_run_id_completes(ray_local, tmp_path, monkeypatch,
                                                                                     capsys, failure):
    """What Ray cannot recover: the rows already back are written, the job stops with one line, and a
    rerun of the same run id completes the run (each input once in its metrics). ``stalls``: a
    stream that stops delivering rows (a fixed pool that no longer fits after a lost node waits
    forever) is stopped by --stall-timeout the same way."""
    real = ray_runtime.stylize_dataset
    never = threading.Event()

    def fails_after_one_batch(*args, **kwargs):
        stream = real(*args, **kwargs)
        yield next(stream)
        stream.close()
        if failure == "stalls":
            never.wait(120)
        raise ray.exceptions.RayError("the node holding these blocks is gone\nsecond line")

    monkeypatch.setattr(ray_runtime, "stylize_dataset", fails_after_one_batch)
    n = 8
    args = _batch_args(tmp_path, "", "again", n)
    args = args[:args.index("--address")] + args[args.index("--address") + 2:]
    settings = stylize.parse_args([*args, "--stall-timeout", "2"])
    assert stylize.main(settings) == 2
    never.set()
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[stylize] error")]
    cause = "StreamStalled: no row for 2 s" if failure == "stalls" else "RayError: the node holding"
    assert len(err) == 1 and "rerun with --run-id again" in err[0] and cause in err[0]
    held = pq.read_table(tmp_path / "out" / "_metrics" / "run_id=again")
    assert 0 < held.num_rows < n and set(held["status"].to_pylist()) == {"ok"}
    made = len(list((tmp_path / "out" / "s").glob("*.jpg")))  # in-flight batches may have written more

    monkeypatch.setattr(ray_runtime, "stylize_dataset", real)
    # the rerun waits as long as the default: a loaded machine may take 2 s between rows
    assert stylize.main(settings.replace(skip_existing=True, stall_timeout=0)) == 0
    rows = pq.read_table(tmp_path / "out" / "_metrics" / "run_id=again")
    assert sorted(os.path.basename(u) for u in rows["input_uri"].to_pylist()) == _names(n, "png")
    assert rows["status"].to_pylist().count("skipped") == made >= held.num_rows  # the first run's outputs stand
    assert _temp_files(tmp_path / "out") == []


def _dying_video_worker(base: type) -> type:
    """``base`` whose every segment call kills its process, as a node lost again and again would.
    Built in a function, so cloudpickle ships it to the workers by value."""

    def segment(self, task):
        os._exit(1)

    return type(f"Dying{base.__name__}", (base,), {"segment": segment})


def test_video_actor_lost_for_good_stops_with_one_line_and_a_rerun_completes(ray_local, tmp_path, monkeypatch, capsys):
    from stylize_core.video import make_clip, pan_frames
    from stylize_core.video.synthetic import sample_photo

    from jobs.video import driver as video
    from jobs.video import worker
    from jobs.video.settings import parse_args as video_args

    (tmp_path / "in").mkdir()
    make_clip(str(tmp_path / "in" / "c0.mp4"), pan_frames(sample_photo("astronaut"), 12, (64, 48), seed=0), gop=6,
              audio_hz=None)
    settings = video_args(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--style",
                           _style(tmp_path), "--segment-seconds", "0.25", "--warmup-frames", "2", "--vgg-weights",
                           "random:0", "--no-metrics", "--preset", "ultrafast", "--quiet", "--contact-sheet", "0",
                           "--actors", "1", "--run-id", "v1"])
    monkeypatch.setattr(worker, "VideoWorker", _dying_video_worker(worker.VideoWorker))
    assert video.main(settings) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[stylize_video] error")]
    assert len(err) == 1 and "lost for good" in err[0] and "rerun with --run-id v1" in err[0]
    monkeypatch.undo()
    assert video.main(settings) == 0
    rows = pq.read_table(tmp_path / "out" / "_metrics_video" / "run_id=v1").to_pylist()
    assert [r["rel_path"] for r in rows] == ["c0.mp4"] and rows[0]["status"] == "ok"


# ---------------------------------------------------------------- a node lost from a two-node cluster


@pytest.mark.slow  # two raylets, a node death: ~25 s on 2 shared cores
def test_batch_job_survives_losing_a_worker_node(two_nodes, tmp_path):
    """The issue's case failed because the crash-loop guard, then an actor of the run's, sat on the
    node that was lost. Its counts now live in the head's GCS (jobs.common.attempts): the run
    completes, and leaves no count behind."""
    from ray.experimental.internal_kv import _internal_kv_list

    settings = stylize.parse_args(_batch_args(tmp_path, two_nodes.cluster.address, "lost-node"))
    removal = NodeRemoval(two_nodes, tmp_path / "out" / "s", 6, "*.jpg")
    summary = stylize.run(settings)
    removal.check_mid_run(time.time())
    assert summary["counts"] == {"ok": INPUTS} and summary["passed"]
    _check_batch_outputs(tmp_path / "out", "lost-node")
    assert _internal_kv_list(b"", namespace=attempts.ATTEMPTS_NAMESPACE) == []


def test_video_job_reruns_the_lost_nodes_segments(two_nodes, tmp_path):
    from stylize_core.video import make_clip, pan_frames
    from stylize_core.video.synthetic import sample_photo

    from jobs.video import driver as video
    from jobs.video.settings import parse_args as video_args

    clips = 4
    (tmp_path / "in").mkdir()
    for k in range(clips):
        make_clip(str(tmp_path / "in" / f"c{k}.mp4"), pan_frames(sample_photo("astronaut"), 24, (96, 64), seed=k), gop=6,
                  audio_hz=None)
    out = tmp_path / "out"
    settings = video_args(["--input", str(tmp_path / "in"), "--output", str(out), "--style", _style(tmp_path),
                           "--segment-seconds", "0.25", "--warmup-frames", "2", "--vgg-weights", "random:0",
                           "--no-metrics", "--preset", "ultrafast", "--quiet", "--contact-sheet", "0",
                           "--address", two_nodes.cluster.address, "--run-id", "lost-node"])
    removal = NodeRemoval(two_nodes, out / "_video_work", 3, "seg-*.json")
    summary = video.run(settings)
    removal.check_mid_run(time.time())
    assert any(a["NumRestarts"] for a in _actors("VideoWorker"))  # the lost node's actor came back on the head
    assert summary["counts"] == {"ok": clips, "error": 0} and summary["passed"]
    rows = pq.read_table(out / "_metrics_video" / "run_id=lost-node").to_pylist()
    assert sorted(r["rel_path"] for r in rows) == [f"c{k}.mp4" for k in range(clips)]  # each exactly once
    assert sorted(p.name for p in (out / "s").iterdir()) == [f"c{k}.mp4" for k in range(clips)]
    assert _temp_files(out) == []


def test_catalog_night_commits_each_pair_once_when_a_node_is_lost(two_nodes, tmp_path):
    """One night, the worker node removed mid-render: the night commits, its ledger names every
    input's output once, and no journal is left open."""
    from catalog_fakes import style_outputs

    from jobs.catalog import ledger as L
    from jobs.catalog import night as catalog

    _images(tmp_path / "in", INPUTS)
    out = tmp_path / "out"
    argv = ["--source", str(tmp_path / "in"), "--output", str(out), f"--style={_style(tmp_path)}", "--run-id", "n1",
            "--vgg-weights", "random:0", "--no-metrics", "--contact-sheet", "0", "--quiet", "--batch-size", "1",
            "--read-batch-size", "1", *ONE_ACTOR, "--address", two_nodes.cluster.address]
    removal = NodeRemoval(two_nodes, out / "s", 6, "*.jpg")
    assert catalog.cli(argv) == 0
    removal.check_mid_run(time.time())
    ledger = L.read_ledger(str(out))
    assert sorted(os.path.basename(u) for u in ledger.column("input_uri").to_pylist()) == _names(INPUTS, "png")
    assert style_outputs(str(out)) == set(ledger.column("output_uri").to_pylist())  # no orphan, nothing missing
    assert not L.read_journals(str(out)) and not L.read_tombstones(str(out))
    _check_batch_outputs(out, "n1")
    from ray.experimental.internal_kv import _internal_kv_list

    assert _internal_kv_list(b"", namespace=attempts.ATTEMPTS_NAMESPACE) == []  # the guard's counts went with it
