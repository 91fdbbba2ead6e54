"""Regions styles: several styles in one image by a label mask, rendered the region-aware way.

Goal (issue 18), printed with the numbers, exit status 1 when one fails: where the label is 0 the output
equals the input within 2 grey levels; inside region k, farther than the feather band from its
borders, the output has style k's look: it is closer (mean |difference|) to the method's own render of
style k than to its render of the other style. Reported beside it: the core's relu4_1 channel
statistics distance (the demo AdaIN encoder's) to each style image, for the regions style, the parts
rendered whole and blended, and the input.
On scikit-image's astronaut (512 x 512), label mask 0 | 1 | 2 in vertical bands, --mask-feather 12,
styles: the held-out plaid (label 1) and rings (label 2) of stylize_core.adain_demo, for

- adain (the shipped demo model): per-region statistics, one decoder pass;
- predict (the shipped demo predictor): spatially varying conditional norm, one network pass;

each against the parts rendered whole and blended (what a program did before regions styles), with
the time of both (best of 6, interleaved).

    python benchmarks/bench_regions.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stylize_core import adain_demo, masks  # noqa: E402
from stylize_core.adain import calc_mean_std, to_unit  # noqa: E402
from stylize_core.builder import StylizerSpec  # noqa: E402
from stylize_core.registry import build_stylizer  # noqa: E402
from machine import print_machine  # noqa: E402  (benchmarks/machine.py)

GOAL = 2  # grey levels
PX = 12
failed: list[str] = []


def _read(uri: str) -> bytes:
    with open(uri, "rb") as f:
        return f.read()


def best(fns, n: int = 6) -> list[tuple[float, object]]:
    """Each function's best time in ms (runs interleaved, so a shared machine's load hits both alike)
    and its last result."""
    times: list[list[float]] = [[] for _ in fns]
    outs: list[object] = [None] * len(fns)
    for _ in range(n):
        for i, fn in enumerate(fns):
            began = time.perf_counter()
            outs[i] = fn()
            times[i].append(time.perf_counter() - began)
    return [(min(t) * 1000, o) for t, o in zip(times, outs)]


def main() -> int:
    from skimage import data

    print_machine()
    image = np.ascontiguousarray(data.astronaut())
    h, w = image.shape[:2]
    xx = np.mgrid[0:h, 0:w][1]
    labels = np.digitize(xx, [w // 3, 2 * w // 3]).astype(np.int32)
    weights = masks.label_weights(labels, 2, PX)
    cores = [slice(0, w // 3 - PX), slice(w // 3 + PX, 2 * w // 3 - PX), slice(2 * w // 3 + PX, w)]
    held = adain_demo.heldout_styles()
    styles = {"a": held["plaid"], "b": held["rings"]}
    with tempfile.TemporaryDirectory() as tmp:
        uris = {}
        for name, style in styles.items():
            uris[name] = f"{tmp}/{name}.png"
            Image.fromarray(style).save(uris[name])
        built = {m: build_stylizer(StylizerSpec(styles={}, style_images=uris, method=m, metrics=False, device="cpu",
                                                regions={"ab": ("a", "b")}), _read) for m in ("adain", "predict")}
    judge = built["adain"].stylizer  # the statistics are measured with the demo AdaIN encoder
    with torch.inference_mode():
        targets = {n: calc_mean_std(judge.encoder(to_unit(s, judge.device))) for n, s in styles.items()}

    def distance(out: np.ndarray, cols: slice, style: str) -> float:
        with torch.inference_mode():
            mean, std = calc_mean_std(judge.encoder(to_unit(np.ascontiguousarray(out[:, cols]), judge.device)))
        m, s = targets[style]
        return float((mean - m).pow(2).mean().sqrt() + (std - s).pow(2).mean().sqrt())

    print(f"astronaut {w}x{h}, labels 0 | 1 | 2 in vertical bands, --mask-feather {PX}; styles plaid (1), rings (2)")
    for method, b in built.items():
        kind = b.regions.styles["ab"].kind

        renders: dict[str, np.ndarray] = {}

        def blended(b=b, renders=renders):
            parts = b.stylizer.stylize_many([image], ["a", "b"])
            renders.update({n: parts[n][0].image.astype(int) for n in ("a", "b")})
            return masks.composite_labels(image, [parts["a"][0].image, parts["b"][0].image], labels, PX)

        (ms, out), (ms_blend, whole) = best([lambda b=b: b.regions.render(image, weights, "ab").image, blended])
        print(f"{method} ({kind}): regions style {ms:.0f} ms, the parts whole + blended {ms_blend:.0f} ms; "
              f"mean |regions - blended| {np.abs(out.astype(int) - whole).mean():.1f} grey levels")
        zero = float(np.abs(out[:, cores[0]].astype(int) - image[:, cores[0]]).max())
        ok = zero <= GOAL
        print(f"  label 0 core (> {PX} px from its border) vs input: {zero:.2f} max (goal <= {GOAL}) "
              f"{'PASS' if ok else 'FAIL'}")
        if not ok:
            failed.append(f"{method} label 0")
        for k, (own, other) in enumerate((("a", "b"), ("b", "a")), start=1):
            core = out[:, cores[k]].astype(int)
            near = float(np.abs(core - renders[own][:, cores[k]]).mean())
            far = float(np.abs(core - renders[other][:, cores[k]]).mean())
            ok = near < far
            print(f"  label {k} core: mean |out - style {k}'s render| {near:.1f}, |out - the other's| {far:.1f} "
                  f"(goal: closer to its own) {'PASS' if ok else 'FAIL'}")
            print(f"    statistics distance to style {k} / the other: regions {distance(out, cores[k], own):.3f} / "
                  f"{distance(out, cores[k], other):.3f}, blended parts {distance(whole, cores[k], own):.3f} / "
                  f"{distance(whole, cores[k], other):.3f}, the input {distance(image, cores[k], own):.3f} / "
                  f"{distance(image, cores[k], other):.3f}")
            if not ok:
                failed.append(f"{method} label {k}")
    print("all goals met" if not failed else f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
