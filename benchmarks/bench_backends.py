"""The style network on each CPU backend: images/s and how far outputs are from eager PyTorch.

    python benchmarks/bench_backends.py [--checkpoint PATH] [--sizes 512 256] [--images 8] [--repeats 5]
                                        [--variants eager compile onnxruntime openvino eager:bf16 openvino:bf16]

Same weights (the demo checkpoint unless --checkpoint), same images (scikit-image's sample photographs,
cropped square and resized), batch 1, one image after another as a CPU actor runs them. Each variant is
built and warmed up first (build and first-call seconds printed: export, compile), then the variants
take turns, pass after pass over the images, in an order rotated every pass, so that load from other
processes on a shared machine falls on all of them alike; the medians of the passes are printed with
their ratio to eager fp32, and the max/mean |output - eager fp32| over the images in 0..255 units.
Numbers only; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from stylize_core.backends import Backend, OpenVinoBackend, backend_available, make_backend, parse_spec  # noqa: E402
from stylize_core.checkpoint import load_style_model  # noqa: E402
from stylize_core.host import retain_freed_memory  # noqa: E402

DEMO_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stylize_core", "assets", "demo_mosaic.pth")
# scikit-image's bundled colour photographs (the grey and synthetic ones are left out)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "stereo_motorcycle:0", "stereo_motorcycle:1")
# (fraction of the short side kept, position of the crop along the long side): 6 distinct crops per photo
CROPS = ((1.0, 0.5), (1.0, 0.0), (1.0, 1.0), (0.7, 0.25), (0.7, 0.5), (0.7, 0.75))


def sample_photos(n: int, size: int) -> list[np.ndarray]:
    """``n`` distinct (size, size, 3) uint8 photographs: square crops of scikit-image's colour samples,
    resized with Lanczos; crop k of every photo comes before crop k+1 of any, so all photos appear."""
    import skimage.data
    from PIL import Image

    sources = []
    for name in PHOTOS:
        attr, _, index = name.partition(":")
        img = getattr(skimage.data, attr)()
        sources.append(img[int(index)] if index else img)
    out: list[np.ndarray] = []
    for keep, pos in CROPS:
        for img in sources:
            h, w = img.shape[:2]
            side = int(min(h, w) * keep)
            top, left = int((h - side) * (pos if h > w else 0.5)), int((w - side) * (pos if w >= h else 0.5))
            crop = Image.fromarray(np.ascontiguousarray(img[top : top + side, left : left + side, :3]))
            out.append(np.array(crop.resize((size, size), Image.Resampling.LANCZOS)))  # writable: torch.from_numpy
            if len(out) == n:
                return out
    raise ValueError(f"only {len(out)} distinct crops available, asked for {n}")


def to_batch(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 channels_last, as the Stylizer hands a batch to its model."""
    return torch.from_numpy(img).permute(2, 0, 1)[None].float().contiguous(memory_format=torch.channels_last)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=DEMO_CHECKPOINT)
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 256])
    p.add_argument("--images", type=int, default=8, help="distinct photographs per pass")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per variant and size")
    p.add_argument("--variants", nargs="+",
                   default=["eager", "compile", "onnxruntime", "openvino", "eager:bf16", "compile:bf16", "openvino:bf16"],
                   help="backend specs (NAME or NAME:bf16); eager (fp32) is always measured, as the reference")
    p.add_argument("--ov-static", action="store_true",
                   help="also OpenVINO with a static compiled model per input shape, against the one dynamic-shape "
                   "model make_backend uses")
    args = p.parse_args()
    retain_freed_memory()  # as the actors and the CLI do
    torch.manual_seed(0)
    model = load_style_model(args.checkpoint).model.eval()
    variants = ["eager"] + [v for v in args.variants if parse_spec(v) != ("eager", "fp32")]
    print(f"cpu: {torch.get_num_threads()} torch threads, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"load average {os.getloadavg()[0]:.1f} at start; checkpoint {os.path.basename(args.checkpoint)}")

    backends: dict[str, Backend] = {}
    for spec in variants:
        reason = backend_available(spec)
        if reason:
            print(f"{spec}: skipped ({reason})")
            continue
        start = time.perf_counter()
        backends[spec] = make_backend(model, spec)
        print(f"{spec}: built in {time.perf_counter() - start:.1f} s -> {backends[spec].describe()}")
        if args.ov_static and parse_spec(spec)[0] == "openvino":
            name, precision = parse_spec(spec)
            backends[spec + " static"] = OpenVinoBackend(model, precision, torch.get_num_threads(), static_shapes=True)

    for size in args.sizes:
        images = [to_batch(img) for img in sample_photos(args.images, size)]
        outputs: dict[str, list[torch.Tensor]] = {}
        for key, backend in backends.items():  # warm-up pass: compiles, shape caches, allocator
            start = time.perf_counter()
            backend(images[0])
            first = time.perf_counter() - start
            outputs[key] = [backend(x) for x in images]
            print(f"  {size}px {key}: first call {first:.1f} s")
        ref = outputs["eager"]
        rates: dict[str, list[float]] = {key: [] for key in backends}
        order = list(backends)
        for rep in range(args.repeats):
            turn = order[rep % len(order):] + order[: rep % len(order)]
            for key in turn:
                start = time.perf_counter()
                for x in images:
                    backends[key](x)
                rates[key].append(len(images) / (time.perf_counter() - start))
        base = statistics.median(rates["eager"])
        print(f"{size}x{size}, batch 1, {len(images)} photographs, median of {args.repeats} alternating passes "
              f"(load average {os.getloadavg()[0]:.1f} at end):")
        for key in backends:
            med = statistics.median(rates[key])
            diff = torch.stack([(o - r).abs().max() for o, r in zip(outputs[key], ref)])
            mean = torch.stack([(o - r).abs().mean() for o, r in zip(outputs[key], ref)]).mean()
            spread = f"{min(rates[key]):.2f}-{max(rates[key]):.2f}"
            label = backends[key].describe() + (" static" if key.endswith(" static") else "")
            print(f"  {label:<44} {med:6.2f} images/s (passes {spread})  x{med / base:4.2f} eager"
                  f"   |out - eager| max {diff.max().item():.4f} mean {mean.item():.5f}")


if __name__ == "__main__":
    main()
