"""Does the texture loss network (``texture[:SEED]``, stylize_core/texture_net.py) transfer style,
and what does it cost? Printed numbers and ratios; exits 1 when an invariant fails (never on time).

    python benchmarks/bench_texture.py                 # everything (~3-6 min on 2 cores)
    python benchmarks/bench_texture.py --skip-gatys    # cost + demo checkpoints only

Content is ``skimage.data.camera()`` (the cameraman, grey, as RGB), which no demo network was
trained on (stylize_core/training_demo.py's photos), centre-cropped; the style is the demo mosaic.

Two perception numbers, both computed with tools no model was trained or optimised with:

* style ratio: Gram matrices (F·Fᵀ / HW) of ReLU responses of an EVALUATION bank, full-resolution
  random zero-mean unit-norm filters of sizes 4, 6, 9, 13, 19, 27 (64 each, seed 12345; the loss
  network uses 3x3/5x5 filters on an octave pyramid, seed 0); the distance of the output's Grams to
  the style's (squared, relative to the style's, summed over sizes) divided by the content image's
  distance. 1 = as unstyled as the input, 0 = the style's statistics.
* edges kept: Pearson correlation of the luminance gradient magnitudes of output and content.
  1 = the content's edges, where they were; ~0 = unrelated.

Cost: forward + backward of each loss network's content + style loss for one 256x256 image, CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from stylize_core.checkpoint import load_style_model  # noqa: E402
from stylize_core.gatys import GatysConfig, optimize_image  # noqa: E402
from stylize_core.loss_network import build_loss_network, default_layers  # noqa: E402
from stylize_core.losses import content_loss, image_to_tensor, style_grams, style_loss  # noqa: E402
from stylize_core.texture_net import KERNELS  # noqa: E402
from stylize_core.training import prepare_content  # noqa: E402
from stylize_core.training_demo import DEMO_CONTENT, mosaic_style_image  # noqa: E402
from stylize_core.vgg import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

ASSETS = os.path.join(ROOT, "stylize_core", "assets")
EVAL_SIZES = (4, 6, 9, 13, 19, 27)
EVAL_SEED = 12345
GOALS = {"gatys": (0.10, 0.6), "demo_mosaic": (0.25, 0.5)}  # (style ratio <=, edges kept >=)


class EvalBank:
    """The evaluation statistic's filter bank (see the module docstring)."""

    def __init__(self, sizes=EVAL_SIZES, channels: int = 64, seed: int = EVAL_SEED) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.filters = []
        for k in sizes:
            w = torch.randn((channels, 3, k, k), generator=gen)
            w = w - w.mean(dim=(1, 2, 3), keepdim=True)
            self.filters.append(w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255

    @torch.no_grad()
    def grams(self, image: np.ndarray) -> list[torch.Tensor]:
        x = (image_to_tensor(image) - self.mean) / self.std  # (1, 3, H, W)
        out = []
        for w in self.filters:
            k = w.shape[-1]
            f = F.relu(F.conv2d(F.pad(x, ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2), mode="reflect"), w))
            f = f.flatten(2)[0]  # (C, HW)
            out.append(f @ f.T / f.shape[1])  # (C, C)
        return out

    def distance(self, image: np.ndarray, targets: list[torch.Tensor]) -> float:
        return sum(float((g - t).pow(2).sum() / t.pow(2).sum()) for g, t in zip(self.grams(image), targets))

    def style_ratio(self, output: np.ndarray, content: np.ndarray, style: np.ndarray) -> float:
        targets = self.grams(style)
        return self.distance(output, targets) / self.distance(content, targets)


def edges_kept(output: np.ndarray, content: np.ndarray) -> float:
    """Correlation of luminance gradient magnitudes (central differences) of two same-sized images."""

    def magnitude(image: np.ndarray) -> np.ndarray:
        y = image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # (H, W)
        return np.hypot(y[1:-1, 2:] - y[1:-1, :-2], y[2:, 1:-1] - y[:-2, 1:-1]).ravel()

    return float(np.corrcoef(magnitude(output), magnitude(content))[0, 1])


def held_out_content(size: int) -> np.ndarray:
    import skimage.data

    assert "camera" not in DEMO_CONTENT  # held out from the demo networks' training photos
    grey = skimage.data.camera()  # (512, 512) uint8
    return prepare_content(np.stack([grey] * 3, axis=-1), size)


def cpu_flags() -> str:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or "unknown"
    return " ".join(sorted(set(re.findall(r"\b(avx512[a-z_]*|amx[a-z_]*|avx2)\b", text)))) or "none of avx2/avx512/amx"


def loss_cost(name: str, weights: str, size: int, repeats: int) -> float:
    """Median ms of content + style loss forward + backward for one (1, 3, size, size) image."""
    net = build_loss_network(name, weights)
    content_layers, style_layers = default_layers(name)
    style = image_to_tensor(mosaic_style_image())
    targets = style_grams(net, style, style_layers)
    x0 = image_to_tensor(held_out_content(size))
    with torch.no_grad():
        content_targets = {k: v for k, v in net(x0).items() if k in content_layers}
    times = []
    for _ in range(repeats + 1):  # the first run warms up oneDNN
        x = x0.clone().requires_grad_(True)
        start = time.perf_counter()
        feats = net(x)
        loss = sum(content_loss(feats[k], content_targets[k]) for k in content_layers) + style_loss(feats, targets)
        loss.backward()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[1:])


def naive_bank_cost(size: int, repeats: int, sizes=(3, 5, 7, 11, 15, 23), channels: int = 128) -> float:
    """The same measurement for Ustyuzhaninov et al.'s bank as sketched in issue 21: every filter
    size at full resolution (direct convolution), Gram loss per size. What the pyramid replaces."""
    gen = torch.Generator().manual_seed(0)
    filters = [torch.randn((channels, 3, k, k), generator=gen) for k in sizes]
    x0 = image_to_tensor(held_out_content(size)) / 64.0
    times = []
    for _ in range(repeats + 1):
        x = x0.clone().requires_grad_(True)
        start = time.perf_counter()
        loss = x.new_zeros(())
        for w in filters:
            k = w.shape[-1]
            f = F.relu(F.conv2d(F.pad(x, (k // 2,) * 4, mode="reflect"), w)).flatten(2)  # (1, C, HW)
            loss = loss + (f @ f.transpose(1, 2) / f.shape[-1]).pow(2).mean()
        loss.backward()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[1:])


def bench_gatys(bank: EvalBank, size: int, steps: int, levels: int) -> dict[str, float]:
    content, style = held_out_content(size), mosaic_style_image()
    net = build_loss_network("texture:0", use="gatys")
    start = time.perf_counter()
    out = optimize_image(content, style, net, GatysConfig(steps=steps, pyramid_levels=levels)).image
    seconds = time.perf_counter() - start
    return {"style_ratio": bank.style_ratio(out, content, style), "edges": edges_kept(out, content), "seconds": seconds}


def bench_checkpoint(bank: EvalBank, path: str, size: int) -> dict[str, float | str]:
    model = load_style_model(path)
    content, style = held_out_content(size), mosaic_style_image()
    with torch.no_grad():
        y = model.model.float().eval()(image_to_tensor(content)).clamp(0, 255)  # (1, 3, S, S)
    out = y[0].permute(1, 2, 0).round().byte().numpy()
    return {"style_ratio": bank.style_ratio(out, content, style), "edges": edges_kept(out, content),
            "loss_model": str(model.metadata.get("loss_model", "?"))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cost-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--gatys-size", type=int, default=160)
    p.add_argument("--gatys-steps", type=int, default=300, help="L-BFGS loss evaluations per pyramid level")
    p.add_argument("--gatys-levels", type=int, default=2)
    p.add_argument("--demo-size", type=int, default=192)
    p.add_argument("--checkpoints", nargs="*", default=[os.path.join(ASSETS, f"{n}.pth")
                                                          for n in ("demo_mosaic", "demo_mosaic_slim")])
    p.add_argument("--skip-gatys", action="store_true")
    p.add_argument("--skip-cost", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, cpu flags: {cpu_flags()}")
    failures = []

    bank = EvalBank()
    content, style = held_out_content(args.demo_size), mosaic_style_image()
    unstyled, styled = bank.style_ratio(content, content, style), bank.style_ratio(style, content, style)
    if abs(unstyled - 1) > 1e-6 or styled > 1e-6 or abs(edges_kept(content, content) - 1) > 1e-9:
        failures.append(f"statistic sanity: unstyled ratio {unstyled}, style's own ratio {styled}")
    if set(EVAL_SIZES) & set(KERNELS):  # the evaluation bank must not be the loss network's
        failures.append("evaluation filter sizes overlap the loss network's")

    if not args.skip_cost:
        n = args.cost_size
        vgg = loss_cost("vgg16", "random:0", n, args.repeats)
        tex = loss_cost("texture:0", "", n, args.repeats)
        naive = naive_bank_cost(n, args.repeats)
        print(f"\ncost of content + style loss, forward + backward, 1 image {n}x{n}, median of {args.repeats}:")
        print(f"  vgg16 to relu4_3        {vgg:8.1f} ms  1.00x")
        print(f"  texture (octaves)       {tex:8.1f} ms  {tex / vgg:.2f}x")
        print(f"  full-res bank 3..23     {naive:8.1f} ms  {naive / vgg:.2f}x   (issue 21's sketch, direct conv)")

    if not args.skip_gatys:
        r = bench_gatys(bank, args.gatys_size, args.gatys_steps, args.gatys_levels)
        goal = GOALS["gatys"]
        print(f"\nGatys, texture:0, {args.gatys_size} px, {args.gatys_levels} levels x {args.gatys_steps} L-BFGS "
              f"evaluations, defaults (content 1, style 1e6, tv 1e-3): style ratio {r['style_ratio']:.3f} "
              f"(goal <= {goal[0]}), edges kept {r['edges']:.3f} (goal >= {goal[1]}), {r['seconds']:.0f} s")
        if not (r["style_ratio"] <= goal[0] and r["edges"] >= goal[1]):
            failures.append(f"Gatys misses its goal: {r}")

    print(f"\nfeed-forward checkpoints on held-out content ({args.demo_size} px):")
    for path in args.checkpoints:
        r = bench_checkpoint(bank, path, args.demo_size)
        name = os.path.splitext(os.path.basename(path))[0]
        print(f"  {name:22s} style ratio {r['style_ratio']:.3f}  edges kept {r['edges']:.3f}  ({r['loss_model']})")
        if name in GOALS and not (r["style_ratio"] <= GOALS[name][0] and r["edges"] >= GOALS[name][1]):
            failures.append(f"{name} misses its goal {GOALS[name]}: {r}")

    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
