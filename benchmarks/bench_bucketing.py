"""How much does padding an image to a larger bucket shape change its stylised output?

    python benchmarks/bench_bucketing.py [--short-side 256] [--checkpoint PATH]

Instance norm averages over the whole padded image, so reflection padding (the Stylizer's bucket
padding, cropped back afterwards) shifts the output a little. For scikit-image's colour sample
photographs (resized to ``--short-side``, cropped to multiples of 4 so the reference run has no
padding at all), each image is padded by a grid of per-axis fractions (height only, width only,
both), stylised with the demo checkpoint in float32, cropped back, and compared with the unpadded
run on the 0..255 uint8 outputs. Prints, per band of pad fraction (share of the bucket's pixels
that are padding), the mean absolute pixel difference, its 99.9th percentile and the maximum,
over all images and channels. Numbers only; the Stylizer's DEFAULT_MAX_PAD_FRACTION is chosen
from them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from stylize_core.bucketing import crop, pad_fraction, pad_to
from stylize_core.checkpoint import load_style_model
from stylize_core.image_io import decode_image, encode_image, resize_short_side

DEMO = "stylize_core/assets/demo_mosaic.pth"


def photos(short_side: int) -> dict[str, np.ndarray]:
    import skimage.data

    raw = {
        "astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee(), "chelsea": skimage.data.chelsea(),
        "rocket": skimage.data.rocket(), "ihc": skimage.data.immunohistochemistry(),
        "motorcycle": skimage.data.stereo_motorcycle()[0],
    }
    out = {}
    for name, img in raw.items():
        img = resize_short_side(img, short_side)
        h, w = img.shape[0] // 4 * 4, img.shape[1] // 4 * 4
        out[name] = np.ascontiguousarray(img[:h, :w])
    return out


def run(model: torch.nn.Module, image: np.ndarray, shape: tuple[int, int] | None) -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    padded, pads = pad_to(x, shape or tuple(x.shape[-2:]))
    with torch.inference_mode():
        y = crop(model(padded), pads)
    return y.clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--checkpoint", default=DEMO)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.02, 0.04, 0.06, 0.1, 0.2, 0.3])
    args = p.parse_args()
    model = load_style_model(args.checkpoint).model.eval()
    bands = [(0.0, 0.03), (0.03, 0.06), (0.06, 0.10), (0.10, 0.15), (0.15, 0.25), (0.25, 0.35),
             (0.35, 0.55)]
    diffs: dict[tuple[float, float], list[np.ndarray]] = {b: [] for b in bands}
    edge: dict[tuple[float, float], list[float]] = {b: [] for b in bands}  # max diff 16 px away from borders
    jpeg: list[np.ndarray] = []  # yardstick: what writing the unpadded output as JPEG q90 changes
    start = time.perf_counter()
    for name, img in photos(args.short_side).items():
        ref = run(model, img, None)
        h, w = img.shape[:2]
        jpeg.append(np.abs(decode_image(encode_image(ref, "jpeg", 90)).astype(np.int16) - ref).ravel())
        for f in args.fractions:
            for fh, fw in ((f, 0.0), (0.0, f), (f, f)):
                shape = (h + 4 * round(h * fh / 4), w + 4 * round(w * fw / 4))
                if shape == (h, w):
                    continue
                d = np.abs(run(model, img, shape).astype(np.int16) - ref.astype(np.int16))
                frac = pad_fraction((h, w), shape)
                band = next(b for b in bands if b[0] < frac <= b[1])
                diffs[band].append(d.ravel())
                edge[band].append(float(d[16:-16, 16:-16].max()))
    print(f"checkpoint {args.checkpoint}, photos at short side {args.short_side}, float32 on "
          f"{torch.get_num_threads()} threads, {time.perf_counter() - start:.0f} s")
    j = np.concatenate(jpeg)
    print(f"yardstick, the unpadded output written as JPEG q90: mean |diff| {j.mean():.2f}, "
          f"p99.9 {np.percentile(j, 99.9):.0f}, max {j.max()}")
    print("pad fraction of bucket pixels | runs | mean |diff| | worst image's mean | p99.9 | max | max >16 px from the border")
    for band in bands:
        if not diffs[band]:
            continue
        d = np.concatenate(diffs[band])
        worst = max(x.mean() for x in diffs[band])
        print(f"  ({band[0]:.2f}, {band[1]:.2f}]  | {len(diffs[band]):4d} | {d.mean():6.2f} | {worst:6.2f} | "
              f"{np.percentile(d, 99.9):5.0f} | {d.max():3d} | {max(edge[band]):3.0f}")


if __name__ == "__main__":
    main()
