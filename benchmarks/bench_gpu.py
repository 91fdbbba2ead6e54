"""GPU throughput: the style network alone, and an in-process pipeline without Ray around the Stylizer.

    python benchmarks/bench_gpu.py                       # on a CUDA machine
    python benchmarks/bench_gpu.py --memory-format both  # NCHW against channels_last
    python benchmarks/bench_gpu.py --device cpu --quick  # exercises the logic anywhere, in seconds

(1) model only: images/s of the demo checkpoint's TransformerNet on a resident 512x512 batch
    (bf16 autocast on CUDA; batches 8/32/64; CUDA-event timing), per memory format.
(2) pipeline: a mixed-size set of JPEGs (made here: smooth fields, shapes and noise, sizes around
    512 px of several aspect ratios, some a few pixels off) -> decode threads -> windows of
    ``--window`` images -> the same Stylizer the job's actors hold (shape buckets, pinned memory,
    one sync per window) -> encode threads. Prints images/s, images per forward (mean and
    histogram), GPU utilisation (busy time from CUDA events / wall time), CPU cores used (process
    CPU time / wall time) and the pipeline/model-only ratio, per image and per pixel (the mixed
    set has fewer pixels per image than 512x512). ``--metrics`` adds the per-image losses (VGG16
    with random weights) and prints their share of stylize time.

Needs only torch, numpy and Pillow (it imports stylize_core, never Ray or scikit-image), so it runs
on a bare GPU machine. Without CUDA and without ``--device cpu`` it prints one line and exits 0.
Numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a bare checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from stylize_core.checkpoint import load_style_model  # noqa: E402
from stylize_core.image_io import decode_image, encode_image  # noqa: E402
from stylize_core.sampling import sampled  # noqa: E402
from stylize_core.stylizer import Stylizer, StylizerConfig  # noqa: E402

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stylize_core", "assets", "demo_mosaic.pth")
# (H, W) of the mixed set: common photo shapes, the 4:3 ones also a few pixels short (as resized
# catalogs come), so bucketing has to pad to batch them.
BASE_SIZES = [(512, 384), (384, 512), (512, 512), (480, 360), (512, 341), (341, 512), (448, 448), (500, 375)]


def synthetic_photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A photo-like (H, W, 3) uint8 image: a smooth colour field, a few flat shapes, mild noise."""
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(img).astype(np.int16)
    for _ in range(int(rng.integers(3, 8))):
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        arr[y0 : y0 + int(rng.integers(h // 8, h // 2)), x0 : x0 + int(rng.integers(w // 8, w // 2))] = rng.integers(0, 256, 3)
    arr += rng.normal(0, 6, arr.shape).astype(np.int16)
    return np.clip(arr, 0, 255).astype(np.uint8)


def make_set(count: int, distinct: int, scale: float, seed: int = 0) -> list[bytes]:
    """``count`` JPEG files (``distinct`` different ones, repeated), sizes from BASE_SIZES x ``scale``."""
    rng = np.random.default_rng(seed)
    files = []
    for i in range(distinct):
        h, w = BASE_SIZES[i % len(BASE_SIZES)]
        if i % 3 == 1:  # a few pixels short of the base size
            h, w = h - int(rng.integers(1, 9)), w - int(rng.integers(1, 9))
        h, w = max(8, round(h * scale)), max(8, round(w * scale))
        files.append(encode_image(synthetic_photo(rng, h, w), "jpeg", 90))
    return [files[i % distinct] for i in range(count)]


def timed_ms(fn, device: torch.device, iters: int) -> float:
    """Mean ms per call over ``iters`` calls after one warm-up: CUDA events, or perf_counter on CPU."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) * 1000 / iters


def model_only(args, device: torch.device, channels_last: bool) -> dict[int, float]:
    """images/s per batch size on a resident batch."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = load_style_model(args.checkpoint).model.to(device, memory_format=fmt).eval()
    cuda = device.type == "cuda"
    rates = {}
    for batch in args.batches:
        x = (torch.rand(batch, 3, args.size, args.size, device=device) * 255).contiguous(memory_format=fmt)

        def step(x: torch.Tensor = x) -> None:  # bound now: x is deleted after the timing
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and args.bf16):
                model(x)

        try:
            ms = timed_ms(step, device, args.iters)
        except torch.cuda.OutOfMemoryError:
            print(f"  batch {batch}: out of memory")
            continue
        rates[batch] = batch * 1000 / ms
        print(f"  {'channels_last' if channels_last else 'NCHW':13s} {'bf16' if cuda and args.bf16 else 'fp32'} "
              f"batch {batch:3d} at {args.size}x{args.size}: {rates[batch]:9.1f} images/s")
        del x
    return rates


def loss_network(args):
    """VGG16 with random weights for ``--metrics`` (the cost does not depend on the weights), or None."""
    if not args.metrics:
        return None
    from stylize_core.vgg import VGGFeatures

    return VGGFeatures("vgg16", ("relu1_2", "relu2_2", "relu3_3", "relu4_3"), "random:0")


def pipeline(args, device: torch.device, channels_last: bool, files: list[bytes]) -> dict:
    """decode threads -> Stylizer windows -> encode threads; returns the measured numbers."""
    vgg = loss_network(args)
    config = StylizerConfig(device=device.type, channels_last=channels_last, bf16=args.bf16, metrics=vgg is not None,
                            metrics_short_side=args.metrics_size,
                            max_batch=args.max_batch, max_batch_pixels=args.max_batch * 512 * 512,
                            cpu_max_batch_pixels=args.max_batch * 512 * 512 if args.quick else StylizerConfig.cpu_max_batch_pixels)
    stylizer = Stylizer({"demo": load_style_model(args.checkpoint)}, vgg, config)
    stylizer.stylize([decode_image(f) for f in files[: args.window]], "demo")  # warm-up: kernels, allocator
    stylizer.reset_stats()
    windows: queue.Queue = queue.Queue(maxsize=4)  # bounded: decode runs ahead by a few windows at most
    encoded: list[int] = []
    pixels, stylize_ms, metrics_ms = 0, 0.0, 0.0

    def decode_all() -> None:
        with ThreadPoolExecutor(args.decode_threads, thread_name_prefix="decode") as pool:
            for i in range(0, len(files), args.window):
                windows.put(list(pool.map(decode_image, files[i : i + args.window])))
        windows.put(None)

    cpu0, t0 = time.process_time(), time.perf_counter()
    producer = threading.Thread(target=decode_all, daemon=True)
    producer.start()
    with ThreadPoolExecutor(args.encode_threads, thread_name_prefix="encode") as encoders:
        futures = []
        n = 0
        while (window := windows.get()) is not None:
            pixels += sum(img.shape[0] * img.shape[1] for img in window)
            measure = [sampled(f"bench://{n + i}", args.metrics_sample) for i in range(len(window))]
            n += len(window)
            for res in stylizer.stylize_many(window, ["demo"], measure=measure)["demo"]:
                stylize_ms += res.stylize_ms
                metrics_ms += res.metrics_ms
                futures.append(encoders.submit(encode_image, res.image, "jpeg", 90))
        encoded = [len(f.result()) for f in futures]
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    producer.join()
    return {"images": len(encoded), "pixels": pixels, "wall_s": wall, "cpu_s": cpu, "stats": stylizer.stats(),
            "metrics_share": metrics_ms / stylize_ms if vgg is not None and stylize_ms else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes and counts: checks the logic, not the speed")
    p.add_argument("--checkpoint", default=DEMO)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batches", type=int, nargs="+", default=[8, 32, 64])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--memory-format", choices=["channels_last", "nchw", "both"], default="channels_last")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="float32 on CUDA too")
    p.add_argument("--images", type=int, default=4096, help="pipeline images (repeats of --distinct files)")
    p.add_argument("--distinct", type=int, default=256)
    p.add_argument("--window", type=int, default=64, help="images per Stylizer call, as the actor gets them")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--decode-threads", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--encode-threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    p.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN autotune per shape")
    p.add_argument("--metrics", action="store_true", help="per-image losses in the pipeline (VGG16, random weights)")
    p.add_argument("--metrics-size", type=int, default=256)
    p.add_argument("--metrics-sample", type=float, default=1.0)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"bench_gpu: no CUDA device here (torch {torch.__version__}); pass --device cpu --quick to check the logic")
        return 0
    scale = 1.0
    if args.quick:
        args.size, args.batches, args.iters = 32, [2, 4], 1
        args.images, args.distinct, args.window, args.max_batch = 16, 8, 8, 8
        args.decode_threads = args.encode_threads = 2
        scale = 0.0625
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; {os.cpu_count()} CPU cores; cudnn.benchmark={args.cudnn_benchmark}")
    formats = {"channels_last": [True], "nchw": [False], "both": [True, False]}[args.memory_format]
    files = make_set(args.images, args.distinct, scale)
    for channels_last in formats:
        label = "channels_last" if channels_last else "NCHW"
        print(f"model only ({label}):")
        rates = model_only(args, device, channels_last)
        print(f"pipeline ({label}): {len(files)} JPEGs, {args.distinct} distinct, sizes around "
              f"{round(512 * scale)} px; window {args.window}, max batch {args.max_batch}, "
              f"{args.decode_threads} decode + {args.encode_threads} encode threads")
        r = pipeline(args, device, channels_last, files)
        st = r["stats"]
        ips = r["images"] / r["wall_s"]
        util = "n/a (CPU)" if st["utilisation"] is None else f"{st['utilisation']:.2f}"
        print(f"  {ips:9.1f} images/s ({r['pixels'] / r['wall_s'] / 1e6:.1f} Mpixel/s); images per forward: "
              f"mean {st['images_per_forward_mean']:.1f}, histogram {st['images_per_forward_hist']}; "
              f"padding {st['pad_fraction']:.1%} of pixels")
        print(f"  GPU utilisation {util}; CPU cores used {r['cpu_s'] / r['wall_s']:.1f}")
        if r["metrics_share"] is not None:
            print(f"  metrics (size {args.metrics_size}, sample {args.metrics_sample:g}): "
                  f"{r['metrics_share']:.1%} of stylize time")
        if rates:
            best_batch = max(rates, key=rates.get)
            best = rates[best_batch]
            mean_px = r["pixels"] / r["images"]
            print(f"  pipeline / model-only (batch {best_batch}): {ips / best:.2f} per image, "
                  f"{ips * mean_px / (best * args.size * args.size):.2f} per pixel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
