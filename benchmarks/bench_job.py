"""The whole Ray job against a plain single-process loop over the same images and checkpoint.

    python benchmarks/bench_job.py [--images 48] [--size 512] [--workdir /tmp/stylize-bench]

(a) plain loop: read, decode, forward, encode, write, one image at a time, in a fresh process (timed
    after its model is loaded; that process's start-up is printed beside it); (a') the same with
    the CPU settings the job's actors use (malloc tuned by stylize_core.host, channels_last);
(b) `python -m jobs.stylize ... --no-metrics` as a subprocess, start-up included;
(c) the same job with metrics on, to report the metrics overhead (metrics time / stylize time).
Prints images/s and ratios; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

from jobs.common.run_settings import demo_checkpoint
from stylize_core.checkpoint import load_style_model, save_style_model
from stylize_core.host import retain_freed_memory
from stylize_core.image_io import decode_image, encode_image, resize_short_side
from stylize_core.transformer_net import TransformerNet


def make_inputs(root: str, count: int, size: int) -> list[str]:
    """Crops of scikit-image's sample photographs, `size` x `size`, as JPEG files."""
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    os.makedirs(root, exist_ok=True)
    paths = []
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = resize_short_side(photos[i % len(photos)], size + 64)
        y, x = rng.integers(0, photo.shape[0] - size + 1), rng.integers(0, photo.shape[1] - size + 1)
        path = os.path.join(root, f"img{i:04d}.jpg")
        with open(path, "wb") as f:
            f.write(encode_image(np.ascontiguousarray(photo[y : y + size, x : x + size]), "jpeg", 92))
        paths.append(path)
    return paths


def plain_loop(paths: list[str], checkpoint: str, out: str, channels_last: bool = False) -> float:
    os.makedirs(out, exist_ok=True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = load_style_model(checkpoint).model.to(memory_format=fmt)
    start = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            with open(path, "rb") as f:
                image = decode_image(f.read())
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float().contiguous(memory_format=fmt)
            y = model(x).clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
            with open(os.path.join(out, os.path.basename(path)), "wb") as f:
                f.write(encode_image(y, "jpeg", 90))
    return time.perf_counter() - start


def _loop_child(paths_file: str, checkpoint: str, out: str, tuned: bool) -> None:
    """Runs in a fresh process: prints when its model was ready (epoch s) and the loop's seconds."""
    if tuned:
        retain_freed_memory()
    with open(paths_file) as f:
        paths = f.read().split("\n")
    load_style_model(checkpoint)  # what a process must do before its first image
    ready = time.time()
    print(json.dumps({"ready": ready, "loop_s": plain_loop(paths, checkpoint, out, channels_last=tuned)}))


def loop_process(paths: list[str], checkpoint: str, out: str, tuned: bool) -> tuple[float, float]:
    """(loop seconds, start-up seconds of its process: torch import and checkpoint load) in a fresh process,
    so that one variant's allocator settings cannot leak into another's numbers."""
    paths_file = out + ".paths"
    os.makedirs(os.path.dirname(paths_file), exist_ok=True)
    with open(paths_file, "w") as f:
        f.write("\n".join(paths))
    cmd = [sys.executable, __file__, "--loop-child", paths_file, checkpoint, out] + (["--tuned"] if tuned else [])
    launched = time.time()
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(res.stdout.strip().splitlines()[-1])
    return result["loop_s"], result["ready"] - launched


def job(inputs: str, checkpoint: str, out: str, metrics: bool) -> tuple[float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "jobs.stylize", "--input", inputs, "--output", out, "--style", f"s={checkpoint}",
           "--vgg-weights", "random:0", "--run-id", "bench", "--quiet", "--contact-sheet", "0"]
    if not metrics:
        cmd.append("--no-metrics")
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    with open(os.path.join(out, "_runs", "bench.json")) as f:
        return wall, json.load(f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--workdir", default="/tmp/stylize-bench")
    p.add_argument("--loop-child", nargs=3, metavar=("PATHS_FILE", "CHECKPOINT", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--tuned", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.loop_child:
        _loop_child(*args.loop_child, tuned=args.tuned)
        return
    checkpoint = demo_checkpoint()
    if not os.path.exists(checkpoint):
        checkpoint = os.path.join(args.workdir, "random.pth")
        os.makedirs(args.workdir, exist_ok=True)
        save_style_model(TransformerNet(), checkpoint)
    inputs = os.path.join(args.workdir, "in")
    shutil.rmtree(inputs, ignore_errors=True)
    paths = make_inputs(inputs, args.images, args.size)
    n = len(paths)
    print(f"{n} images {args.size}x{args.size}, torch threads {torch.get_num_threads()}, checkpoint {checkpoint}")

    loops = {}
    for tuned, label in ((False, "(a) plain loop"), (True, "(a') plain loop, actor's settings")):
        loop_s, start_s = loop_process(paths, checkpoint, os.path.join(args.workdir, f"loop{int(tuned)}"), tuned)
        loops[label] = loop_s, start_s
        print(f"{label + ':':31s}{n / loop_s:6.3f} images/s  ({loop_s:.1f}s after a {start_s:.1f}s process start)")
    job_s, summary = job(inputs, checkpoint, os.path.join(args.workdir, "job"), metrics=False)
    assert summary["counts"].get("ok") == n, summary["counts"]
    print(f"{'(b) job, metrics off:':31s}{n / job_s:6.3f} images/s  ({job_s:.1f}s, start-up included)")
    for label, (loop_s, start_s) in loops.items():
        print(f"    ratio b / {label[:4]}: {loop_s / job_s:.2f}; counting the loop's process start too: "
              f"{(loop_s + start_s) / job_s:.2f}")
    steady = summary["stylize_ms_total"] / 1000 / summary["actors"]  # actors run side by side
    print(f"    in the network (per actor): {steady:.1f}s; start-up, I/O and Ray around it: {job_s - steady:.1f}s "
          f"({summary['stages']} stages)")
    job_m, summary_m = job(inputs, checkpoint, os.path.join(args.workdir, "job_m"), metrics=True)
    overhead = summary_m["metrics_ms_total"] / summary_m["stylize_ms_total"]
    print(f"{'(c) job, metrics on:':31s}{n / job_m:6.3f} images/s  ({job_m:.1f}s)  metrics time / stylize time {overhead:.0%}")


if __name__ == "__main__":
    main()
