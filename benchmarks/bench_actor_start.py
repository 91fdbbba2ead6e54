"""What a batch-job stylize actor costs to start on the default path: a fresh process imports the
actor's module and builds the actor (default settings: metrics with ImageNet VGG16 read from
torchvision's cache), with Ray's cluster queries stubbed (one CPU node, no GPU).

    python benchmarks/bench_actor_start.py [--runs 3]

ImageNet weights cannot be downloaded here, so a VGG16 state dict of the right shapes (random
values) is staged in a temporary TORCH_HOME under the file name torchvision uses. Each run prints the
seconds spent importing torch, importing the job's modules and constructing the actor, and the
process's wall and CPU time. Exits 1 when an actor reports a setup error or a run fails.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

from machine import print_machine

CHILD = r"""
import json, sys, time
from unittest import mock
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
from jobs.batch import settings as batch_settings
from jobs.batch.actor import StylizeActor
from jobs.common import ray_runtime
from jobs.common.planning import plan_actors
t2 = time.perf_counter()
settings = batch_settings.parse_args(["--input", sys.argv[1], "--output", sys.argv[2], "--style", "s=" + sys.argv[3]])
with mock.patch.object(ray_runtime, "cluster_gpus", return_value=0.0), \
        mock.patch.object(ray_runtime, "node_cpus", return_value=[2.0]):
    plan = plan_actors(settings)
t3 = time.perf_counter()
actor = StylizeActor(settings, plan)
t4 = time.perf_counter()
print(json.dumps({"import torch": t1 - t0, "import job": t2 - t1, "construct": t4 - t3,
                  "setup_error": actor.setup_error, "torchvision imported": "torchvision" in sys.modules}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    import json

    import torch

    from stylize_core.checkpoint import save_style_model
    from stylize_core.transformer_net import TransformerNet
    from stylize_core.vgg import IMAGENET_WEIGHTS_URL, make_trunk

    print_machine()
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "hub", "checkpoints")
        os.makedirs(cache)
        state = {f"features.{k}": v for k, v in make_trunk("vgg16").state_dict().items()}
        torch.save(state, os.path.join(cache, os.path.basename(IMAGENET_WEIGHTS_URL["vgg16"])))
        checkpoint = os.path.join(tmp, "style.pth")
        save_style_model(TransformerNet(), checkpoint, style="s")
        os.makedirs(os.path.join(tmp, "in"))
        env = dict(os.environ, TORCH_HOME=tmp)
        for run in range(1, args.runs + 1):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", CHILD, os.path.join(tmp, "in"), os.path.join(tmp, "out"),
                                   checkpoint], capture_output=True, text=True, env=env)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            if proc.returncode:
                problems.append(f"run {run} exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            if got["setup_error"]:
                problems.append(f"run {run}: the actor could not build its stylizer: {got['setup_error']}")
            print(f"run {run}: import torch {got['import torch']:.2f} s, import job {got['import job']:.2f} s, "
                  f"construct {got['construct']:.2f} s; process {wall:.2f} s wall, {cpu:.2f} CPU-s; "
                  f"torchvision imported: {got['torchvision imported']}")
    for line in problems:
        print("INVARIANT FAILED:", line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
