"""The whole Ray job against a plain single-process loop over the same images and checkpoint.

    python benchmarks/bench_job.py [--images 48] [--size 512] [--workdir /tmp/stylize-bench]

(a) plain loop: read, decode, forward, encode, write, one image at a time (timed after its model is
    loaded; the cost of a process that imports torch and loads the checkpoint is printed beside it);
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

from jobs.settings import demo_checkpoint
from stylize_core.checkpoint import load_style_model, save_style_model
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


def plain_loop(paths: list[str], checkpoint: str, out: str) -> float:
    os.makedirs(out, exist_ok=True)
    model = load_style_model(checkpoint).model
    start = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            with open(path, "rb") as f:
                image = decode_image(f.read())
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
            y = model(x).clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
            with open(os.path.join(out, os.path.basename(path)), "wb") as f:
                f.write(encode_image(y, "jpeg", 90))
    return time.perf_counter() - start


def process_start(checkpoint: str) -> float:
    """Wall time of a fresh process that imports torch and loads the checkpoint: a plain loop's start-up."""
    code = "import torch; from stylize_core.checkpoint import load_style_model; load_style_model(%r)" % checkpoint
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


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
    args = p.parse_args()
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

    loop_s = plain_loop(paths, checkpoint, os.path.join(args.workdir, "loop"))
    start_s = process_start(checkpoint)
    print(f"(a) plain loop:           {n / loop_s:6.3f} images/s  ({loop_s:.1f}s; a process to run it starts in {start_s:.1f}s)")
    job_s, summary = job(inputs, checkpoint, os.path.join(args.workdir, "job"), metrics=False)
    assert summary["counts"].get("ok") == n, summary["counts"]
    steady = summary["stylize_ms_total"] / 1000 / summary["actors"]  # actors run side by side
    print(f"(b) job, metrics off:     {n / job_s:6.3f} images/s  ({job_s:.1f}s incl. start-up)  ratio b/a {loop_s / job_s:.2f}, "
          f"with the loop's start-up {(loop_s + start_s) / job_s:.2f}")
    print(f"    of which in the network (per actor): {steady:.1f}s; start-up, I/O and Ray around it: {job_s - steady:.1f}s "
          f"({summary['stages']} stages)")
    job_m, summary_m = job(inputs, checkpoint, os.path.join(args.workdir, "job_m"), metrics=True)
    overhead = summary_m["metrics_ms_total"] / summary_m["stylize_ms_total"]
    print(f"(c) job, metrics on:      {n / job_m:6.3f} images/s  ({job_m:.1f}s)  metrics time / stylize time {overhead:.0%}")


if __name__ == "__main__":
    main()
