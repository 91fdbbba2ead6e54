"""Enhancement networks on photographs they were not trained on: quality against the classical
baselines, speed per megapixel, and how PSNR moved with training steps.

    python benchmarks/bench_enhance.py [--assets stylize_core/assets] [--backends eager,onnxruntime,openvino]
                                       [--side 0] [--threads 2]

Uses the demo checkpoints ``enhance_{sr2,sr4,denoise,deblock}.pth`` and scikit-image's held-out
photographs (``stylize_core.enhance_demo.EVAL_PHOTOS``: astronaut, coffee), degraded as each network
was evaluated (x2/x4 bicubic downscale; Gaussian noise sigma 25; JPEG quality 20), seeded by name.
Metrics: PSNR and SSIM on BT.601 luminance (``stylize_core.enhance_eval``).

Goals (printed, MET or NOT MET; they do not change the exit status):
  x2 PSNR >= Lanczos + 1.5 dB; x4 >= Lanczos + 0.8 dB; denoising sigma 25 above OpenCV's
  fastNlMeansDenoisingColored at its best h on the same images and faster per megapixel;
  JPEG q20 >= +1.0 dB over the JPEG.
Exit status 1 when the script's own invariants fail: an output of the wrong size, a CPU backend
whose output differs from eager PyTorch by more than 2 levels (of 255), or a non-finite score.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stylize_core.checkpoint import load_style_model  # noqa: E402
from stylize_core.enhance_demo import EVAL_PHOTOS, photo  # noqa: E402
from stylize_core.enhance_eval import prepare, psnr, ssim  # noqa: E402

TASKS = ("sr2", "sr4", "denoise", "deblock")
GOALS = {"sr2": 1.5, "sr4": 0.8, "deblock": 1.0}
NLM_H = (10, 15, 20, 25, 30)


def cpu_line() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    model = fields.get("Model name", "?").strip()
    flags = [f for f in fields.get("Flags", "").split() if f.startswith(("avx", "amx", "fma", "sse4"))]
    return f"{model}; {os.cpu_count()} logical CPUs; flags {' '.join(flags)}"


def run_backend(model, spec: str):
    if spec == "eager":
        return lambda x: model(x)
    from stylize_core.backends import make_backend

    return make_backend(model, spec)


def restore(fn, image: np.ndarray) -> tuple[np.ndarray, float]:
    """(output uint8, seconds) for one (H, W, 3) image; the best of three runs (the first warms up)."""
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float()
    best, y = float("inf"), None
    with torch.inference_mode():
        for _ in range(3):
            start = time.perf_counter()
            y = fn(x)
            best = min(best, time.perf_counter() - start)
    return y.clamp(0, 255).round().byte()[0].permute(1, 2, 0).numpy(), best


def nlm(image: np.ndarray, h: int) -> tuple[np.ndarray, float]:
    import cv2

    start = time.perf_counter()
    out = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(image), None, h, h, 7, 21)
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--assets", default=os.path.join(os.path.dirname(__file__), "..", "stylize_core", "assets"))
    p.add_argument("--backends", default="eager,onnxruntime,openvino")
    p.add_argument("--side", type=int, default=0, help="centre-crop the photographs to SIDE (0: whole photographs)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        import cv2

        cv2.setNumThreads(args.threads)
    except ImportError:
        cv2 = None
    print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch {torch.__version__}; "
          f"{args.threads} threads; {cpu_line()}")
    photos = {}
    for name in EVAL_PHOTOS:
        img = photo(name)
        if args.side:
            h, w = img.shape[:2]
            img = np.ascontiguousarray(img[(h - args.side) // 2 :][: args.side, (w - args.side) // 2 :][:, : args.side])
        photos[name] = img
    print(f"held-out photographs: {', '.join(f'{n} {i.shape[1]}x{i.shape[0]}' for n, i in photos.items())}")
    failures: list[str] = []
    backends = [b for b in args.backends.split(",") if b]
    summary = {}
    for task in TASKS:
        path = os.path.join(args.assets, f"enhance_{task}.pth")
        sm = load_style_model(path)
        info = sm.enhance
        fns = {}
        for spec in backends:
            try:
                fns[spec] = run_backend(sm.model, spec)
            except Exception as exc:  # an optional runtime not installed
                print(f"  {task}: backend {spec} unavailable: {str(exc).splitlines()[0]}")
        rows = {spec: [] for spec in fns}
        base_scores, pixels = [], 0
        reference_out = {}
        for name, img in photos.items():
            ev = prepare(img, info.degradation, name)
            base_scores.append((ev.baseline_psnr, ev.baseline_ssim))
            pixels += ev.reference.shape[0] * ev.reference.shape[1]
            for spec, fn in fns.items():
                out, seconds = restore(fn, ev.degraded)
                if out.shape != ev.reference.shape:
                    failures.append(f"{task}/{spec}: output {out.shape} for reference {ev.reference.shape}")
                    continue
                if spec == "eager":
                    reference_out[name] = out
                elif name in reference_out:
                    diff = int(np.abs(out.astype(int) - reference_out[name].astype(int)).max())
                    if diff > 2:
                        failures.append(f"{task}/{spec}: differs from eager by {diff} levels on {name}")
                rows[spec].append((psnr(ev.reference, out), ssim(ev.reference, out), seconds))
            if task == "denoise" and cv2 is not None:
                best = None
                for h in NLM_H:
                    out, seconds = nlm(ev.degraded, h)
                    score = (psnr(ev.reference, out), ssim(ev.reference, out), seconds, h)
                    best = score if best is None or score[0] > best[0] else best
                summary.setdefault("nlm", []).append(best)
        bp, bs = np.mean(base_scores, axis=0)
        baseline = "Lanczos" if info.scale > 1 else "degraded input"
        print(f"\n{task} ({info.degradation.at_eval().describe()}; {sm.arch.describe()}): "
              f"baseline {baseline}: PSNR {bp:.2f} dB, SSIM {bs:.4f}")
        for spec, scores in rows.items():
            if not scores:
                continue
            mp, ms, _ = np.mean(scores, axis=0)
            spmp = sum(s for *_, s in scores) / (pixels / 1e6)
            if not np.isfinite(mp):
                failures.append(f"{task}/{spec}: PSNR {mp}")
            print(f"  {spec:<12} PSNR {mp:.2f} dB ({mp - bp:+.2f}), SSIM {ms:.4f} ({ms - bs:+.4f}); "
                  f"{spmp:.2f} s/MP of output = {1 / spmp:.3f} MP/s")
            summary.setdefault(task, {})[spec] = (mp - bp, spmp, mp)
        curve = sm.metadata.get("psnr_curve") or []
        if curve:
            print("  held-out PSNR during training (192 px centre crops): " + ", ".join(
                f"step {c['step']}: {c['psnr']:.2f} ({c['psnr'] - c['baseline_psnr']:+.2f})" for c in curve))
        if task == "denoise" and summary.get("nlm"):
            n = np.array([b[:3] for b in summary["nlm"]])
            spmp = n[:, 2].sum() / (pixels / 1e6)
            hs = ",".join(str(b[3]) for b in summary["nlm"])
            print(f"  {'opencv NLM':<12} PSNR {n[:, 0].mean():.2f} dB ({n[:, 0].mean() - bp:+.2f}), SSIM "
                  f"{n[:, 1].mean():.4f}; best h per photo {hs} (of {NLM_H}); {spmp:.2f} s/MP")
            summary["nlm_mean"] = (float(n[:, 0].mean()), spmp)
    print("\ngoals:")
    for task, goal in GOALS.items():
        gain = summary.get(task, {}).get("eager", (float("nan"),))[0]
        print(f"  {task}: {gain:+.2f} dB over its baseline (goal >= +{goal}): {'MET' if gain >= goal else 'NOT MET'}")
    if "nlm_mean" in summary and "denoise" in summary:
        nlm_psnr, nlm_spmp = summary["nlm_mean"]
        for spec, (_, spmp, mp) in summary["denoise"].items():
            print(f"  denoise/{spec}: PSNR {mp:.2f} vs NLM {nlm_psnr:.2f} ({'MET' if mp > nlm_psnr else 'NOT MET'}); "
                  f"{spmp:.2f} vs {nlm_spmp:.2f} s/MP ({'MET' if spmp < nlm_spmp else 'NOT MET'})")
    for f in failures:
        print(f"INVARIANT FAILED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
