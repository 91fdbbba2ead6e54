"""What the per-image metrics cost, as a share of stylize time, at candidate defaults.

    python benchmarks/bench_metrics.py [--images 8] [--thumbs 32] [--repeats 2] [--vgg-weights random:0]

Runs the Stylizer (the job's code path, CPU settings of the actors: channels_last, malloc tuned)
with the demo checkpoint over (a) 512x512 crops of scikit-image's photographs and (b) thumbnails
of at most 128 px (64x48 ... 128x128), with metrics on, for each metrics short side (256, 192,
128) and style-layer set. Prints metrics time / stylize time (the sums of the per-image
``metrics_ms`` and ``stylize_ms``), the median over ``--repeats`` runs, and that share times each
candidate sample fraction; one sampled run (``stylize_core.sampling.sampled``) checks that the
cost scales with the fraction. The VGG weights do not change the cost; ``random:0`` needs no
download. Numbers only; nothing is asserted. Issue 11's goal: <= 25 % at 512x512, <= 50 % for
thumbnails.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from stylize_core.checkpoint import load_style_model
from stylize_core.host import retain_freed_memory
from stylize_core.image_io import resize_short_side
from stylize_core.loss_meter import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
from stylize_core.sampling import sampled
from stylize_core.stylizer import Stylizer, StylizerConfig
from stylize_core.vgg import VGGFeatures

DEMO = "stylize_core/assets/demo_mosaic.pth"
LAYER_SETS = {
    "relu1_2..relu4_3": DEFAULT_STYLE_LAYERS,
    "relu1_2..relu3_3": ("relu1_2", "relu2_2", "relu3_3"),
    "relu1_2,relu2_2": ("relu1_2", "relu2_2"),
}
THUMB_SIZES = [(48, 64), (72, 96), (96, 128), (128, 128), (96, 72)]


def photo_crops(count: int, sizes: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        p = resize_short_side(photos[i % len(photos)], max(h, w) + 32)
        y, x = rng.integers(0, p.shape[0] - h + 1), rng.integers(0, p.shape[1] - w + 1)
        out.append(np.ascontiguousarray(p[y : y + h, x : x + w]))
    return out


def share(stylizer: Stylizer, images: list[np.ndarray], measure: list[bool] | None = None) -> float:
    res = stylizer.stylize_many(images, measure=measure)["demo"]
    return sum(r.metrics_ms for r in res) / sum(r.stylize_ms for r in res)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--thumbs", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--vgg-weights", default="random:0")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 192, 128])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.25, 0.1])
    p.add_argument("--sets", nargs="+", choices=["512", "thumbs"], default=["512", "thumbs"])
    args = p.parse_args()
    retain_freed_memory()
    sets = {}
    if "512" in args.sets:
        sets["512x512"] = photo_crops(args.images, [(512, 512)])
    if "thumbs" in args.sets:
        sets["thumbnails <=128 px"] = photo_crops(args.thumbs, THUMB_SIZES)
    vgg = VGGFeatures("vgg16", DEFAULT_CONTENT_LAYERS + DEFAULT_STYLE_LAYERS, args.vgg_weights)
    style = {"demo": load_style_model(DEMO)}
    print(f"CPU, {torch.get_num_threads()} threads; demo checkpoint; VGG16 {args.vgg_weights}; "
          f"median of {args.repeats} runs; metrics time as % of stylize time")
    header = "set | metrics size | style layers | full | " + " | ".join(f"x{f:g}" for f in args.fractions)
    print(header)
    for set_name, images in sets.items():
        stylizer = Stylizer(style, None, StylizerConfig(device="cpu", metrics=False))
        stylizer.stylize(images[:2], "demo")  # warm-up
        for size in args.sizes:
            for layers_name, layers in LAYER_SETS.items():
                config = StylizerConfig(device="cpu", metrics_short_side=size, style_layers=layers)
                stylizer = Stylizer(style, vgg, config)
                stylizer.stylize(images[:2], "demo")  # warm-up
                full = statistics.median(share(stylizer, images) for _ in range(args.repeats))
                cols = " | ".join(f"{100 * full * f:5.1f}" for f in args.fractions)
                print(f"{set_name} | {size} | {layers_name} | {100 * full:5.1f} | {cols}", flush=True)
        # one measured sample, to check that cost follows the fraction
        stylizer = Stylizer(style, vgg, StylizerConfig(device="cpu", metrics_short_side=args.sizes[-1]))
        uris = [f"s3://bench/{set_name}/{i}.jpg" for i in range(len(images))]
        mask = [sampled(u, 0.25) for u in uris]
        got = statistics.median(share(stylizer, images, mask) for _ in range(args.repeats))
        print(f"{set_name} | {args.sizes[-1]} | relu1_2..relu4_3 | sampled 0.25 ({sum(mask)}/{len(mask)} inputs): "
              f"{100 * got:5.1f} % measured", flush=True)


if __name__ == "__main__":
    main()
