"""TransformerNet throughput on the current device, against an fp32 matmul's rate in the same run.

    python benchmarks/bench_transformer.py [--sizes 256 512] [--batch 4] [--seconds 10]
    python benchmarks/bench_transformer.py --archs [--rounds 3] [--seconds 6]

Prints images/s, achieved GFLOP/s (counted with torch's FlopCounterMode: ~20.2 GFLOP per 256x256
image, scaling with pixels) and the ratio to the matmul rate. On CUDA it also runs bf16 autocast
with channels_last. ``--archs`` compares the network sizes at 512x512, one image per forward,
channels_last (what the Stylizer runs on CPU): default, slim (width 0.25) and slim with
depthwise-separable residual convs, in alternating rounds (medians), so a busy machine slows all
of them alike. It also prints each one's CPU seconds per image on ONE thread (process time), which
a machine shared with other work disturbs far less than wall-clock rates. Numbers only; nothing
here asserts a speed.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from stylize_core.host import retain_freed_memory
from stylize_core.transformer_net import NetConfig, TransformerNet

ARCHS = {
    "default": NetConfig(),
    "slim": NetConfig(width=0.25),
    "slim+depthwise": NetConfig(width=0.25, depthwise=True),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, seconds: float) -> tuple[int, float]:
    fn()  # warm-up (allocator, kernels, autotuning)
    sync(device)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        runs += 1
    sync(device)
    return runs, time.perf_counter() - start


def matmul_gflops(device: torch.device, seconds: float, n: int = 2048) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    runs, elapsed = timed(lambda: a @ b, device, seconds)
    return 2 * n**3 * runs / elapsed / 1e9


def flops_per_image(model: torch.nn.Module, size: int, device: torch.device) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, size, size, device=device))
    return float(counter.get_total_flops())


def compare_archs(size: int, rounds: int, seconds: float, device: torch.device) -> None:
    """Alternating rounds over :data:`ARCHS`; prints the median images/s of each and ratios."""
    import statistics

    fmt = torch.channels_last
    x = (torch.rand(1, 3, size, size, device=device) * 255).contiguous(memory_format=fmt)  # (1, 3, S, S)
    models = {}
    for name, arch in ARCHS.items():
        torch.manual_seed(0)
        models[name] = TransformerNet(arch).to(device).eval().to(memory_format=fmt)
    rates: dict[str, list[float]] = {name: [] for name in ARCHS}
    for _ in range(rounds):
        for name, model in models.items():
            def step(model=model) -> None:
                with torch.inference_mode():
                    model(x)

            runs, elapsed = timed(step, device, seconds)
            rates[name].append(runs / elapsed)
    # CPU seconds per image on one thread: the work itself, little disturbed by other processes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cpu: dict[str, list[float]] = {name: [] for name in ARCHS}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, model in models.items():
                reps = 1 if name == "default" else 4
                start = time.process_time()
                for _ in range(reps):
                    model(x)
                cpu[name].append((time.process_time() - start) / reps)
    torch.set_num_threads(threads)
    base = statistics.median(rates["default"])
    base_cpu = statistics.median(cpu["default"])
    for name, model in models.items():
        ips = statistics.median(rates[name])
        gflop = flops_per_image(model, size, device) / 1e9
        params = sum(p.numel() for p in model.parameters())
        cpu_s = statistics.median(cpu[name])
        print(f"{size}px {name:>15} ({ARCHS[name].describe()}): {params:>9,d} params {gflop:6.1f} GFLOP/image "
              f"{ips:6.2f} images/s (median of {rounds}: {', '.join(f'{r:.2f}' for r in rates[name])}) "
              f"x{ips / base:.2f} vs default; 1 thread: {cpu_s:.3f} CPU s/image x{base_cpu / cpu_s:.2f} vs default")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", action="store_true", help="compare default / slim / slim+depthwise at 512 px")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    tuned = retain_freed_memory()  # as the job's actors do; STYLIZE_MALLOC_TUNING=0 measures malloc's defaults
    device = torch.device(args.device)
    model = TransformerNet().to(device).eval()
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    mm = matmul_gflops(device, args.seconds / 2)
    print(f"device: {name}; fp32 matmul 2048^3: {mm:.1f} GFLOP/s; malloc tuned: {tuned}")
    if args.archs:
        compare_archs(512, args.rounds, args.seconds, device)
        return
    variants = [("fp32", torch.contiguous_format, None), ("fp32 channels_last", torch.channels_last, None)]
    if device.type == "cuda":
        variants.append(("bf16 channels_last", torch.channels_last, torch.bfloat16))
    for size in args.sizes:
        gflop = flops_per_image(model, size, device) / 1e9
        for label, fmt, dtype in variants:
            m = model.to(memory_format=fmt)
            x = (torch.rand(args.batch, 3, size, size, device=device) * 255).contiguous(memory_format=fmt)

            def step() -> None:
                with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    m(x)

            runs, elapsed = timed(step, device, args.seconds)
            ips = runs * args.batch / elapsed
            print(f"{size}px batch {args.batch} {label:>20}: {ips:8.2f} images/s  {ips * gflop:8.1f} GFLOP/s "
                  f"({gflop:.1f} GFLOP/image)  ratio to matmul {ips * gflop / mm:.2f}")


if __name__ == "__main__":
    main()
