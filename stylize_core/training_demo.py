"""The demo style networks shipped in ``stylize_core/assets/``, trained on scikit-image's photographs
(no download) against a procedural mosaic; how each was made is in ``stylize_core/assets/README.md``.

    python -m stylize_core.training_demo --demo OUT.pth [--width 0.25]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .host import retain_freed_memory
from .losses import image_to_tensor
from .training import StyleTrainer, TrainConfig, prepare_content, train_local

DEMO_CONTENT = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "stereo_motorcycle")


def demo_content_images() -> list[np.ndarray]:
    """Photos shipped inside the scikit-image wheel (no download), plus their mirror images."""
    import skimage.data  # optional dependency: only the demo needs it

    images = []
    for name in DEMO_CONTENT:
        img = getattr(skimage.data, name)()
        img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle -> (left, right, disp)
        images += [img[..., :3], np.ascontiguousarray(img[:, ::-1, :3])]
    return images


def mosaic_style_image(size: int = 256, cells: int = 90, seed: int = 0) -> np.ndarray:
    """A procedural mosaic: Voronoi tiles in saturated colours with dark grout, (size, size, 3) uint8."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, size, (cells, 2))  # (K, 2) tile centres
    palette = np.array(
        [[230, 57, 70], [252, 191, 73], [42, 157, 143], [38, 70, 83], [244, 162, 97], [69, 123, 157], [241, 250, 238]],
        dtype=np.float32,
    )
    colours = palette[rng.integers(0, len(palette), cells)] * rng.uniform(0.8, 1.1, (cells, 1))  # (K, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dist = np.hypot(yy[..., None] - points[:, 0], xx[..., None] - points[:, 1])  # (H, W, K)
    nearest = np.sort(dist, axis=-1)[..., :2]  # (H, W, 2)
    image = colours[dist.argmin(-1)]  # (H, W, 3)
    shade = 1.0 - 0.25 * np.clip(nearest[..., 0] / (size / np.sqrt(cells)), 0, 1)  # darker tile edges
    image = image * shade[..., None]
    grout = (nearest[..., 1] - nearest[..., 0]) < 2.5  # pixels near the border of two tiles
    image[grout] = (30, 24, 20)
    return np.clip(image, 0, 255).astype(np.uint8)


def _preview(trainer: StyleTrainer, images: Sequence[np.ndarray], size: int, path: str) -> None:
    """Save style | before | after rows as a PNG to judge the demo by eye."""
    net = trainer.net.eval()
    if net.arch.multi_style:
        net = net.bake_style([1.0] + [0.0] * (net.arch.num_styles - 1))  # the first style
    rows = []
    style = prepare_content(trainer.style_image, size)
    for img in images:
        x = prepare_content(img, size)
        with torch.no_grad():
            y = net(image_to_tensor(x, trainer.device)).clamp(0, 255)[0].permute(1, 2, 0)  # (S, S, 3)
        rows.append(np.concatenate([style, x, y.round().byte().cpu().numpy()], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def parser():
    """The command line; its defaults are the shipped full-size demo's recipe."""
    import argparse

    p = argparse.ArgumentParser(description="Train the small demo style network on scikit-image photos.")
    p.add_argument("--demo", required=True, metavar="OUT.pth", help="where to write the fp16 checkpoint")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-3)
    # the shipped demos' recipe: the texture loss network (stylize_core/assets/README.md)
    p.add_argument("--content-weight", type=float, default=1.0)
    p.add_argument("--style-weight", type=float, default=6e4)
    p.add_argument("--tv-weight", type=float, default=0.0)
    p.add_argument("--vgg", "--loss-network", dest="vgg", default="texture",
                   help="loss network: vgg16, vgg19 or texture[:SEED] (random filters, no download)")
    p.add_argument("--vgg-weights", default="random:0", help="VGG only: random:SEED, imagenet, or a state-dict path")
    p.add_argument("--style-layers", default="",
                   help="comma-separated; empty: the loss network's defaults")
    p.add_argument("--style-image", default=None, help="image file; default: the procedural mosaic")
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier (0.25: the slim demo)")
    p.add_argument("--blocks", type=int, default=5, help="residual blocks")
    p.add_argument("--depthwise", action="store_true", help="depthwise-separable residual convs")
    p.add_argument("--name", default=None, help="style name [demo_mosaic, demo_mosaic_slim for other sizes]")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed for reproducibility)")
    p.add_argument("--preview", default="/tmp/demo_mosaic_preview.png", help="before/after PNG")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import time

    args = parser().parse_args(argv)
    retain_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    style = mosaic_style_image() if args.style_image is None else np.asarray(Image.open(args.style_image).convert("RGB"))
    default_name = "demo_mosaic" if args.style_image is None else "demo"
    if (args.width, args.blocks, args.depthwise) != (1.0, 5, False):
        default_name += "_slim"
    config = TrainConfig(
        style_name=args.name or default_name,
        width=args.width,
        blocks=args.blocks,
        depthwise=args.depthwise,
        image_size=args.image_size,
        batch_size=args.batch_size,
        steps=args.steps,
        epochs=10**6,  # the step count is the limit
        lr=args.lr,
        content_weight=args.content_weight,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        vgg=args.vgg,
        vgg_weights=args.vgg_weights,
        style_layers=tuple(filter(None, args.style_layers.split(","))),
        seed=0,
        log_every=20,
        checkpoint_every=0,
    )
    images = demo_content_images()
    start = time.perf_counter()
    trainer = train_local(images, style, config, device="cpu", autocast_dtype=None)
    seconds = time.perf_counter() - start
    trainer.save(args.demo, half=True, demo=True, train_seconds=round(seconds, 1))
    _preview(trainer, [images[0], images[2], images[6]], args.image_size * 2, args.preview)
    print(f"trained {trainer.step_count} steps in {seconds:.1f} s -> {args.demo} (preview {args.preview})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
