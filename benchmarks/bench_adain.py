"""AdaIN against the Johnson network (the shipped demo style network), images/s at 512 px, same run.

    python benchmarks/bench_adain.py [--size 512] [--rounds 3] [--seconds 8] [--device cpu]

Both run through the stylizers the jobs use (AdaINStylizer, Stylizer; metrics off), one image per
call, in alternating rounds (medians), so a busy machine slows both alike. AdaIN runs random weights
in pytorch-AdaIN's layout (the speed does not depend on the values). Prints the CPU's SIMD flags
beside the numbers. Exits 1 when its own invariants fail (outputs finite, uint8, the input's size);
never on a speed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import numpy as np
import torch

from stylize_core import adain
from stylize_core.adain import AdaINStylizer
from stylize_core.checkpoint import load_style_model
from stylize_core.host import retain_freed_memory
from stylize_core.stylizer import Stylizer, StylizerConfig
from jobs.common.run_settings import demo_checkpoint

SIMD = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "fma", "neon", "asimd")


def cpu_flags() -> str:
    """The CPU's model and the SIMD flags that matter for convolutions (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    lines = info.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith(("flags", "Features"))), [])
    found = " ".join(f for f in SIMD if f in flags) or "none of " + ",".join(SIMD)
    return f"{model}; {torch.get_num_threads()} threads; flags: {found}"


def rate(fn, seconds: float) -> float:
    fn()  # warm-up
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        runs += 1
    return runs / (time.perf_counter() - start)


def check(name: str, image: np.ndarray, size: int) -> list[str]:
    problems = []
    if image.shape != (size, size, 3) or image.dtype != np.uint8:
        problems.append(f"{name}: output {image.dtype} {image.shape}, expected uint8 ({size}, {size}, 3)")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    retain_freed_memory()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    style = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)

    ada = AdaINStylizer(adain.encoder(), adain.decoder(), {"s": style}, {"s": [("s", 1.0)]}, device=args.device)
    johnson = Stylizer({"demo": load_style_model(demo_checkpoint())},
                       config=StylizerConfig(device=args.device, metrics=False))
    runs = {"adain": lambda: ada.stylize([image], "s")[0].image,
            "johnson": lambda: johnson.stylize([image], "demo")[0].image}

    problems: list[str] = []
    with torch.inference_mode():
        for name, fn in runs.items():
            problems += check(name, fn(), args.size)
        if not torch.isfinite(ada.forward(adain.to_unit(image, ada.device), "s")).all():  # before the uint8 clamp
            problems.append("adain: non-finite decoder output")
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, fn in runs.items():
                rates[name].append(rate(fn, args.seconds))
    print(f"device: {args.device}; {cpu_flags()}; torch {torch.__version__}")
    med = {name: statistics.median(r) for name, r in rates.items()}
    for name, r in med.items():
        print(f"{name:8s} {args.size}x{args.size}: {r:.3f} images/s (median of {args.rounds} rounds: "
              f"{', '.join(f'{x:.3f}' for x in rates[name])})")
    print(f"adain / johnson: {med['adain'] / med['johnson']:.2f}x")
    for p in problems:
        print(f"INVARIANT FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
