"""Training throughput on CPU: steps/s and images/s of one worker (StyleTrainer.step), and
optionally of the Ray Train job end to end (``--ray-workers N``). Prints numbers; asserts nothing.

    python benchmarks/bench_train.py                      # per-worker step, a few sizes
    python benchmarks/bench_train.py --ray-workers 2      # + jobs.train on synthetic images
    python benchmarks/bench_train.py --demo-quality       # the shipped demo networks' losses and GFLOP

``--demo-quality`` measures ``stylize_core/assets/demo_mosaic.pth`` against ``demo_mosaic_slim.pth``
on the same images (the 12 demo content photos, centre crops at 96 px, the training size, and at
256 px) with the same loss network and weights they were trained with (VGG16 ``random:0``; content
relu2_2 x 5e5, style relu1_2/relu2_2/relu3_3 x 1e10 against the mosaic's Gram targets), plus
each network's GFLOP per 512x512 image (torch's FlopCounterMode).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from stylize_core.host import retain_freed_memory  # noqa: E402
from stylize_core.training import StyleTrainer, TrainConfig  # noqa: E402
from stylize_core.vgg import VGGFeatures  # noqa: E402


def bench_step(size: int, batch: int, steps: int, style_layers: tuple[str, ...], threads: int,
               width: float = 1.0) -> dict[str, float]:
    """Time ``steps`` optimiser steps after one warm-up step."""
    torch.set_num_threads(threads)
    config = TrainConfig(image_size=size, batch_size=batch, vgg_weights="random:0", style_layers=style_layers,
                         width=width)
    layers = tuple(dict.fromkeys(config.content_layers + style_layers))
    vgg = VGGFeatures(config.vgg, layers, "random:0")
    style = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    trainer = StyleTrainer(config, style, device="cpu", vgg=vgg, autocast_dtype=None)
    x = torch.rand(batch, 3, size, size) * 255  # (B, 3, S, S)
    trainer.step(x)  # warm-up: allocator, oneDNN kernels
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(x)
    seconds = time.perf_counter() - start
    return {"size": size, "batch": batch, "width": width, "style_layers": len(style_layers), "threads": threads,
            "steps_per_s": steps / seconds, "images_per_s": steps * batch / seconds, "s_per_step": seconds / steps}


def bench_ray(workers: int, images: int, size: int, steps: int) -> dict[str, float]:
    """jobs.train end to end on synthetic PNGs (includes Ray start-up and export in wall time)."""
    from PIL import Image

    from jobs.train import driver as train

    with tempfile.TemporaryDirectory() as tmp:
        content = os.path.join(tmp, "content")
        os.makedirs(content)
        rng = np.random.default_rng(0)
        for i in range(images):
            Image.fromarray(rng.integers(0, 255, (size + 8, size + 8, 3), dtype=np.uint8)).save(f"{content}/{i}.png")
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(f"{tmp}/style.png")
        args = train.parse_args([
            "--content", content, "--style-image", f"{tmp}/style.png", "--output", f"{tmp}/out",
            "--steps", str(steps), "--epochs", "1000", "--image-size", str(size), "--batch-size", "2",
            "--workers", str(workers), "--vgg-weights", "random:0",  # CPUs per worker: the job's own plan
            "--checkpoint-every", str(steps), "--log-every", str(steps),
        ])
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the job's own summary; we print ours
            rc = train.main(args)
        wall = time.perf_counter() - start
        with open(f"{tmp}/out/train_summary.json") as f:
            summary = json.load(f)
    fit = summary["fit_seconds"]
    # fit_s includes starting the workers and the data pipeline: a lower bound on steady-state rates.
    return {"workers": workers, "rc": rc, "steps": steps, "fit_s": fit, "wall_s": wall,
            "steps_per_s_incl_startup": steps / fit, "images_per_s_per_worker_incl_startup": steps * 2 / fit}


def demo_quality() -> None:
    """Content and style loss of the two shipped demo networks on the same images, same loss network."""
    from benchmarks.bench_transformer import flops_per_image
    from stylize_core.checkpoint import load_style_model
    from stylize_core.losses import content_loss, image_to_tensor, style_grams, style_loss
    from stylize_core.training import prepare_content
    from stylize_core.training_demo import demo_content_images, mosaic_style_image

    assets = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "stylize_core", "assets")
    models = {name: load_style_model(os.path.join(assets, f"{name}.pth")) for name in ("demo_mosaic", "demo_mosaic_slim")}
    style_layers = ("relu1_2", "relu2_2", "relu3_3")
    vgg = VGGFeatures("vgg16", ("relu2_2", *style_layers), "random:0")
    targets = style_grams(vgg, image_to_tensor(mosaic_style_image()), style_layers)  # {layer: (1, C, C)}
    photos = demo_content_images()
    for size in (96, 256):
        x = torch.stack([image_to_tensor(prepare_content(p, size))[0] for p in photos])  # (12, 3, S, S)
        with torch.no_grad():
            feats_x = vgg(x)
            for name, sm in models.items():
                y = sm.model(x).clamp(0, 255)  # (12, 3, S, S)
                feats_y = vgg(y)
                content = 5e5 * content_loss(feats_y["relu2_2"], feats_x["relu2_2"])
                style = 1e10 * style_loss(feats_y, targets)
                print(json.dumps({"network": name, "arch": sm.arch.describe(), "size": size, "images": len(photos),
                                  "content_loss": round(float(content), 1), "style_loss": round(float(style), 1),
                                  "total": round(float(content + style), 1)}), flush=True)
    for name, sm in models.items():
        gflop = flops_per_image(sm.model, 512, torch.device("cpu")) / 1e9
        params = sum(p.numel() for p in sm.model.parameters())
        print(json.dumps({"network": name, "gflop_per_512px_image": round(gflop, 2), "parameters": params}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--ray-workers", type=int, default=0, help="also run jobs.train with this many workers")
    p.add_argument("--width", type=float, default=1.0, help="network width multiplier of the timed steps")
    p.add_argument("--demo-quality", action="store_true", help="only compare the shipped demo networks")
    args = p.parse_args()
    if args.demo_quality:
        demo_quality()
        return
    # as jobs.train's workers do; STYLIZE_MALLOC_TUNING=0 measures malloc's defaults
    print(json.dumps({"malloc_tuned": retain_freed_memory()}))
    full = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    for size, batch, layers in [(64, 4, full), (128, 2, full), (128, 2, full[:3]), (256, 4, full)]:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                          for k, v in bench_step(size, batch, args.steps, layers, args.threads, args.width).items()}),
              flush=True)
    if args.ray_workers:
        result = bench_ray(args.ray_workers, images=8, size=64, steps=4 * args.steps)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}), flush=True)


if __name__ == "__main__":
    main()
