"""The demo enhancement networks shipped in ``stylize_core/assets/`` (``enhance_{sr2,sr4,denoise,deblock}.pth``),
trained on the CPU on scikit-image's photographs (no download); recipes in ``stylize_core/assets/README.md``.

Training and evaluation photographs are kept apart: :data:`TRAIN_PHOTOS` train, :data:`EVAL_PHOTOS`
(astronaut, coffee) are only ever evaluated (here, in ``--evaluate`` tests and in
``benchmarks/bench_enhance.py``).

    python -m stylize_core.enhance_demo --task sr2 --out stylize_core/assets/enhance_sr2.pth
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import numpy as np
import torch

from .enhance_eval import evaluate
from .enhance_net import EnhanceNet
from .enhance_training import EnhanceTrainConfig, EnhanceTrainer
from .host import retain_freed_memory

# skimage.data names; grey photographs are used as RGB with three equal channels.
TRAIN_PHOTOS = ("chelsea", "immunohistochemistry", "stereo_motorcycle", "rocket", "camera", "brick", "grass",
                "gravel", "coins", "moon")
EVAL_PHOTOS = ("astronaut", "coffee")
# The shipped recipes: network size and steps per task (2-6 minutes each on one idle CPU core).
RECIPES = {
    "sr2": dict(channels=16, blocks=3, patch=48, batch_size=8, steps=8000, lr=2e-3),
    "sr4": dict(channels=16, blocks=3, patch=96, batch_size=8, steps=8000, lr=2e-3),
    "denoise": dict(channels=16, blocks=3, unshuffle=2, patch=48, batch_size=8, steps=8000, lr=2e-3),
    "deblock": dict(channels=16, blocks=3, unshuffle=2, patch=48, batch_size=8, steps=8000, lr=2e-3),
}


def photo(name: str) -> np.ndarray:
    """A scikit-image photograph as (H, W, 3) uint8 RGB (shipped in its wheel: no download)."""
    import skimage.data

    img = getattr(skimage.data, name)()
    img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle -> (left, right, disparity)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def train_photos() -> list[np.ndarray]:
    return [photo(n) for n in TRAIN_PHOTOS]


def eval_photos(side: int | None = None) -> list[np.ndarray]:
    """The held-out photographs, centre-cropped to ``side`` x ``side`` when given."""
    out = []
    for img in (photo(n) for n in EVAL_PHOTOS):
        if side:
            h, w = img.shape[:2]
            y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
            img = np.ascontiguousarray(img[y : y + side, x : x + side])
        out.append(img)
    return out


def restorer(net: torch.nn.Module) -> "callable":
    """[(H, W, 3) uint8] -> [restored uint8], one image at a time on the CPU."""

    def run(images: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        with torch.inference_mode():
            for img in images:
                x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float()
                y = net.eval()(x).clamp(0, 255).round().byte()[0].permute(1, 2, 0)
                out.append(y.numpy())
        return out

    return run


def held_out_psnr(net: EnhanceNet, trainer: EnhanceTrainer, side: int = 192) -> dict[str, float]:
    """Mean PSNR/SSIM (Y) of the network and the baseline on the held-out photographs' centres."""
    scores = evaluate(eval_photos(side), trainer.degradation, restorer(net), keys=list(EVAL_PHOTOS))
    mean = lambda k: float(np.mean([getattr(s, k) for s in scores]))  # noqa: E731
    return {k: round(mean(k), 3) for k in ("psnr", "ssim", "baseline_psnr", "baseline_ssim")}


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Train a demo enhancement network on scikit-image photos (CPU).")
    p.add_argument("--task", required=True, choices=sorted(RECIPES))
    p.add_argument("--out", required=True, metavar="OUT.pth", help="where to write the fp16 checkpoint")
    p.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    p.add_argument("--eval-every", type=int, default=1000, help="held-out PSNR every N steps (0: at the end only)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the shipped files: 1)")
    args = p.parse_args(argv)
    retain_freed_memory()
    torch.set_num_threads(args.threads)
    recipe = dict(RECIPES[args.task])
    if args.steps is not None:
        recipe["steps"] = args.steps
    config = EnhanceTrainConfig(task=args.task, seed=0, **recipe)
    trainer = EnhanceTrainer(config)
    images = train_photos()
    rng = np.random.default_rng(config.seed)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(trainer.optimizer, config.steps, eta_min=config.lr * 0.05)
    curve = [{"step": 0, **held_out_psnr(trainer.raw_net, trainer)}]
    print(json.dumps(curve[-1]), flush=True)
    start = time.perf_counter()
    for step in range(1, config.steps + 1):
        losses = trainer.step(*trainer.batch(images, rng))
        sched.step()
        if (args.eval_every and step % args.eval_every == 0) or step == config.steps:
            curve.append({"step": step, "seconds": round(time.perf_counter() - start, 1), "loss": round(losses["total"], 5),
                          **held_out_psnr(trainer.raw_net, trainer)})
            print(json.dumps(curve[-1]), flush=True)
    seconds = time.perf_counter() - start
    data = trainer.checkpoint_bytes(half=True, demo=True, train_seconds=round(seconds, 1), train_photos=list(TRAIN_PHOTOS),
                                    eval_photos=list(EVAL_PHOTOS), psnr_curve=curve)
    with open(args.out, "wb") as f:
        f.write(data)
    print(f"trained {config.steps} steps in {seconds:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
