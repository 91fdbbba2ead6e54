"""Masks: does the output equal the input where the mask is black, and the unmasked output where it is white?

Goal (issue 18), printed with the numbers, exit status 1 when one fails: where the mask is black the
output equals the input within 2 grey levels; where it is white, farther than the feather band from the
edge, it equals the unmasked output within 2 grey levels. On scikit-image's astronaut (512 x 512) with
the shipped demo network (and the slim demo as a second style for labels), masks written as PNG and
decoded by stylize_core.masks:

- hard: a white disc (radius 160) on black, no feathering: black region vs input, white region vs output;
- feathered: the same disc, --mask-feather 24: black and white farther than 24 px from the circle;
- grey: a 50 % grey mask (128/255) against the exact blend (input + output) / 2 (reported, goal <= 1);
- labels: three vertical bands (0 | 1 | 2) with feather 12: each band's core vs input, style 1, style 2;
- the CLI end to end (``python -m jobs.stylize_image --mask disc.png --mask-feather 24``, PNG out)
  against its own unmasked output.

    python benchmarks/bench_masks.py
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jobs.common.run_settings import demo_checkpoint  # noqa: E402
from stylize_core.checkpoint import load_style_model  # noqa: E402
from stylize_core.masks import composite, composite_labels, decode_mask, feather  # noqa: E402
from stylize_core.stylizer import Stylizer, StylizerConfig  # noqa: E402
from machine import print_machine  # noqa: E402  (benchmarks/machine.py)

GOAL = 2  # grey levels
failed: list[str] = []


def report(name: str, value: float, limit: float, judged: bool = True) -> None:
    ok = value <= limit
    mark = ("PASS" if ok else "FAIL") if judged else "(reported)"
    print(f"  {name}: {value:.2f} grey levels max (goal <= {limit}) {mark}", flush=True)
    if judged and not ok:
        failed.append(name)


def as_png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def maxdiff(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32))[where].max())


def main() -> int:
    from skimage import data

    print_machine()
    image = np.ascontiguousarray(data.astronaut())  # (512, 512, 3)
    h, w = image.shape[:2]
    styles = {"demo": load_style_model(demo_checkpoint()), "slim": load_style_model(demo_checkpoint(slim=True))}
    stylizer = Stylizer(styles, None, StylizerConfig(device="cpu", metrics=False))
    began = time.perf_counter()
    out = stylizer.stylize_all([image])
    styled, slim = out["demo"][0].image, out["slim"][0].image
    print(f"astronaut {w}x{h}, demo networks in {time.perf_counter() - began:.1f} s; mean |output - input| "
          f"{np.abs(styled.astype(int) - image).mean():.1f} (demo), {np.abs(slim.astype(int) - image).mean():.1f} (slim)")

    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.hypot(yy - h / 2 + 0.5, xx - w / 2 + 0.5) - 160  # signed distance to the circle, < 0 inside
    disc = decode_mask(as_png(np.where(dist < 0, 255, 0)))
    black, white = disc == 0, disc == 1

    print("hard disc mask (no feather):")
    hard = composite(image, styled, disc)
    report("black region vs input", maxdiff(hard, image, black), GOAL)
    report("white region vs unmasked output", maxdiff(hard, styled, white), GOAL)

    px = 24
    print(f"feathered disc mask (--mask-feather {px}):")
    soft = composite(image, styled, feather(disc, px))
    report(f"black, farther than {px} px from the edge, vs input", maxdiff(soft, image, dist > px), GOAL)
    report(f"white core, farther than {px} px from the edge, vs unmasked output", maxdiff(soft, styled, dist < -px), GOAL)
    band = np.abs(dist) < px / 2
    print(f"  inside the band (|d| < {px // 2} px): mean |out - input| {np.abs(soft.astype(int) - image)[band].mean():.1f}, "
          f"mean |out - output| {np.abs(soft.astype(int) - styled)[band].mean():.1f} (a blend of both)")

    print("grey 50% mask (128/255):")
    grey = composite(image, styled, decode_mask(as_png(np.full((h, w), 128))))
    halfway = (image.astype(np.float64) + styled) / 2
    report("vs halfway (input + output) / 2", float(np.abs(grey - halfway).max()), 1.0, judged=False)

    lpx = 12
    print(f"labels (0 | 1 | 2 in vertical bands, --mask-feather {lpx}):")
    labels = decode_mask(as_png(np.digitize(xx, [w // 3, 2 * w // 3])), "labels")
    mixed = composite_labels(image, [styled, slim], labels, lpx)
    cores = [(xx < w // 3 - lpx), (xx > w // 3 + lpx) & (xx < 2 * w // 3 - lpx), (xx > 2 * w // 3 + lpx)]
    report(f"label 0 core (> {lpx} px from a border) vs input", maxdiff(mixed, image, cores[0]), GOAL)
    report("label 1 core vs style 1 (demo)", maxdiff(mixed, styled, cores[1]), GOAL)
    report("label 2 core vs style 2 (demo slim)", maxdiff(mixed, slim, cores[2]), GOAL)

    print(f"CLI end to end (python -m jobs.stylize_image --mask disc.png --mask-feather {px}, PNG):")
    with tempfile.TemporaryDirectory() as tmp:
        Image.fromarray(image).save(f"{tmp}/in.png")
        Image.fromarray(np.where(dist < 0, 255, 0).astype(np.uint8)).save(f"{tmp}/disc.png")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cli = [sys.executable, "-m", "jobs.stylize_image", f"{tmp}/in.png", "--device", "cpu", "-q"]
        for extra in (["-o", f"{tmp}/plain.png"], ["-o", f"{tmp}/masked.png", "--mask", f"{tmp}/disc.png",
                                                   "--mask-feather", str(px)]):
            subprocess.run(cli + extra, check=True, env=env, cwd=REPO)
        plain, masked = (np.asarray(Image.open(f"{tmp}/{n}.png").convert("RGB")) for n in ("plain", "masked"))
    report(f"black, farther than {px} px, vs input", maxdiff(masked, image, dist > px), GOAL)
    report(f"white core, farther than {px} px, vs the CLI's unmasked output", maxdiff(masked, plain, dist < -px), GOAL)

    print("all goals met" if not failed else f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
