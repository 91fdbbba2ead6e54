"""How much the shipped demo AdaIN model styles, on style images it never saw in training.

    python benchmarks/bench_adain_demo.py [--checkpoint stylize_core/assets/demo_adain.pth] [--size 192]

For each held-out style image (stylize_core.adain_demo.heldout_styles: procedural generators and
palettes not used in training, and scikit-image's gravel photograph) and each content photo, at
alpha 1: the distance ratio d(stats(output), stats(style)) / d(stats(content), stats(style)), where
stats are the per-channel mean and std of features at relu1_1..relu4_1 equivalents and d sums, per
layer, the RMS difference of the means and that of the stds (stylize_core.losses.stats_distance, as
the metrics' ``style_stat_ratio``, there over the loss network's style layers). 1 = as far from the
style as the photo, 0 = the style's statistics; the goal (issue 18) is <= 0.5. Two feature
extractors, each printed:

* ``texture:0``: the texture loss network (random multi-scale filters; its colour layer and both
  banks on octaves 0..3 = full to 1/8 scale). The decoder was trained against ``texture:1`` and its
  own encoder, never against ``texture:0``.
* ``encoder``: the demo's own encoder (relu1_1..relu4_1), which its training loss used.

An untrained decoder (the same layout, PyTorch's default init) is printed as the baseline, and two
colour references: ``photo recoloured`` is the content photo with each RGB channel's mean and std set
to the style image's (no network: what the palette alone scores), ``demo recoloured`` the demo's
output recoloured the same way (a colour step after the decoder, which is not shipped). Exits 1
when its invariants fail (ratios finite, outputs the content's size); never on a ratio.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from stylize_core import adain, adain_demo
from stylize_core.losses import feature_stats, stats_distance
from stylize_core.adain import AdaINStylizer
from stylize_core.adain_checkpoint import load_adain
from stylize_core.demo_assets import demo_adain

CONTENT = ("camera", "astronaut", "coffee", "rocket")  # camera: no AdaIN training run saw it


def lscpu_flags() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "lscpu unavailable"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = [f for f in fields.get("Flags", "").split() if f.startswith(("avx", "amx", "fma", "sse4"))]
    return f"{fields.get('Model name', '?').strip()}; {fields.get('CPU(s)', '?').strip()} CPUs; flags: {' '.join(flags)}"


def content_images(size: int) -> dict[str, np.ndarray]:
    import skimage.data

    out = {}
    for name in CONTENT:
        img = getattr(skimage.data, name)()
        img = np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
        scale = size / min(img.shape[:2])
        t = torch.nn.functional.interpolate(t, scale_factor=scale, mode="bilinear", antialias=True)
        h, w = t.shape[-2:]
        y, x = (h - size) // 2, (w - size) // 2
        out[name] = t[0, :, y:y + size, x:x + size].permute(1, 2, 0).clamp(0, 255).round().byte().numpy()
    return out


def outputs(enc, dec, styles, contents) -> tuple[dict[tuple[str, str], np.ndarray], list[str]]:
    """Every (style, content) output at alpha 1, and what is wrong with their sizes."""
    stylizer = AdaINStylizer(enc, dec, styles, {n: [(n, 1.0)] for n in styles}, alpha=1.0, device="cpu")
    out, problems = {}, []
    for cname, content in contents.items():
        for name, results in stylizer.stylize_many([content]).items():
            image = out[name, cname] = results[0].image
            if image.shape != content.shape or image.dtype != np.uint8:
                problems.append(f"{name}/{cname}: output {image.dtype} {image.shape}, expected {content.shape}")
    return out, problems


def recoloured(image: np.ndarray, style: np.ndarray) -> np.ndarray:
    """``image`` with each RGB channel's mean and std set to ``style``'s, (H, W, 3) uint8."""
    x, s = image.reshape(-1, 3).astype(np.float64), style.reshape(-1, 3).astype(np.float64)
    out = (x - x.mean(0)) / (x.std(0) + 1e-6) * s.std(0) + s.mean(0)
    return np.clip(out, 0, 255).round().astype(np.uint8).reshape(image.shape)


@torch.no_grad()
def ratios(columns, styles, contents, levels) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Per column (name -> its outputs by (style, content)), per style, the mean distance ratio over the
    contents; the styles' and contents' statistics are computed once for all columns."""
    def stats(image):
        return feature_stats(levels(adain.to_unit(image, torch.device("cpu"))))

    style_stats = {name: stats(image) for name, image in styles.items()}
    content_stats = {name: stats(image) for name, image in contents.items()}
    table, problems = {}, []
    for column, made in columns.items():
        per_style = table[column] = {}
        for name in styles:
            values = [float(stats_distance(stats(made[name, c]), style_stats[name])[0]
                            / stats_distance(content_stats[c], style_stats[name])[0]) for c in contents]
            if not all(math.isfinite(v) for v in values):
                problems.append(f"{column} / {name}: non-finite ratio {values}")
            per_style[name] = statistics.mean(values)
    return table, problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=demo_adain())
    p.add_argument("--size", type=int, default=128, help="content crop side (px)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    weights = load_adain(None, args.checkpoint, lambda uri: open(uri, "rb").read())
    width = float(weights.metadata.get("width", 1.0))
    styles, contents = adain_demo.heldout_styles(), content_images(args.size)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch {torch.__version__}; {lscpu_flags()}; "
          f"{torch.get_num_threads()} threads")
    print(f"# checkpoint {args.checkpoint} (encoder {weights.metadata.get('encoder', 'weights')}, width {width}); "
          f"content {', '.join(CONTENT)} at {args.size} px; alpha 1")
    torch.manual_seed(0)
    untrained = adain.decoder(width)
    extractors = {"texture:0": adain_demo.texture_levels(0), "encoder": adain_demo.encoder_levels(weights.encoder)}
    made, problems = outputs(weights.encoder, weights.decoder, styles, contents)
    made_untrained, bad = outputs(weights.encoder, untrained, styles, contents)
    problems += bad
    photo_recoloured = {(s, c): recoloured(image, styles[s]) for s in styles for c, image in contents.items()}
    demo_recoloured = {key: recoloured(image, styles[key[0]]) for key, image in made.items()}
    columns = {"demo": made, "untrained": made_untrained, "photo recoloured": photo_recoloured,
               "demo recoloured": demo_recoloured}
    table = {}
    for label, levels in extractors.items():
        per_column, bad = ratios(columns, styles, contents, levels)
        table |= {(label, column): per_style for column, per_style in per_column.items()}
        problems += bad
    print(f"{'style':<18}" + "".join(f"{label + ' ' + column:>{len(label + column) + 3}}" for label, column in table))
    for name in [*styles, "mean"]:
        print(f"{name:<18}" + "".join(
            f"{(statistics.mean(v.values()) if name == 'mean' else v[name]):>{len(label + column) + 3}.3f}"
            for (label, column), v in table.items()))
    goal = statistics.mean(table["texture:0", "demo"].values())
    print(f"# goal (texture:0 mean ratio <= 0.5): {'met' if goal <= 0.5 else 'NOT met'} ({goal:.3f}); "
          f"{time.perf_counter() - start:.0f} s")
    for line in problems:
        print("INVARIANT FAILED:", line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
