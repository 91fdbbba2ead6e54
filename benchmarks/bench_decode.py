"""JPEG decode + shrink to --max-side: full decode then Lanczos, against a reduced-scale decode
(Pillow's draft mode, what the job's read stage does) then Lanczos to the same size.

    python benchmarks/bench_decode.py [--width 2048] [--height 1536] [--repeats 7]

Prints, per max side: median milliseconds of each path, the speed-up, and the pixel difference
between them (mean, 99th percentile, max, in grey levels). Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
import skimage.data
from PIL import Image

from stylize_core.image_io import decode_image, resize_max_side


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--height", type=int, default=1536)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    photo = Image.fromarray(skimage.data.astronaut()).resize((args.width, args.height), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    print(f"{args.width}x{args.height} JPEG q90, {len(data)} bytes; median of {args.repeats}")
    print(f"{'max side':>8} {'full ms':>8} {'draft ms':>9} {'speed-up':>9} {'mean diff':>10} {'p99':>4} {'max':>4}")
    for side in (1024, 768, 512, 256, 100):
        full = resize_max_side(decode_image(data), side)
        drafted = decode_image(data, max_side=side)
        diff = np.abs(full.astype(np.int16) - drafted.astype(np.int16))
        t_full = _median_ms(lambda: resize_max_side(decode_image(data), side), args.repeats)
        t_draft = _median_ms(lambda: decode_image(data, max_side=side), args.repeats)
        print(f"{side:>8} {t_full:>8.1f} {t_draft:>9.1f} {t_full / t_draft:>8.1f}x {diff.mean():>10.2f} "
              f"{np.percentile(diff, 99):>4.0f} {diff.max():>4}")


if __name__ == "__main__":
    main()
