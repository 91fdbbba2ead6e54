"""Style prediction: images/s against the plain Johnson network of the same size, and how much the
shipped demo predictor styles on held-out style images.

    python benchmarks/bench_predict.py [--size 512] [--rounds 3] [--seconds 8] [--eval-size 128] [--skip-eval]

Speed: both run through the Stylizer the jobs use (metrics off), one 512 px image per call, in
alternating rounds (medians), so a busy machine slows both alike. ``predict`` is the registry's
``--method predict`` (its style image encoded once, at build; that one-off cost is printed apart);
``johnson`` is a plain single-style TransformerNet of the same NetConfig. Slim: the shipped demo
predictor against the shipped slim demo network; default size: a random-weight predictor against the
shipped full demo network (speed does not depend on the values). Goal (issue 18): predict / johnson
per-image cost within 1.1x.

Style distance: as ``benchmarks/bench_adain_demo.py`` measures it (same contents, held-out styles,
feature statistics and ratio: 1 = as far from the style as the photo, 0 = the style's statistics),
for the demo predictor, an untrained one of the same size, and the demo AdaIN model, on ``texture:0``
(never trained against) and on the demo AdaIN encoder's features.

Exits 1 when its own invariants fail (outputs uint8 of the input's size, ratios finite, the style
image encoded once); never on a speed or a ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

import bench_adain_demo as bad  # benchmarks/ is on sys.path when run as a script
from bench_adain import rate
from machine import print_machine
from stylize_core import adain_demo
from stylize_core.adain import AdaINStylizer
from stylize_core.adain_checkpoint import load_adain
from stylize_core.builder import StylizerSpec
from stylize_core.checkpoint import load_style_model
from stylize_core.demo_assets import demo_adain, demo_predictor, demo_style_network
from stylize_core.host import retain_freed_memory
from stylize_core.image_io import encode_image
from stylize_core.predictor import PredictorConfig, StylePredictorModel
from stylize_core.predictor_checkpoint import load_predictor, predictor_checkpoint_bytes
from stylize_core.registry import build_stylizer
from stylize_core.stylizer import Stylizer, StylizerConfig
from stylize_core.transformer_net import NetConfig


def speed(label: str, predictor_bytes: bytes, johnson_uri: str, args, image: np.ndarray, style_png: bytes
          ) -> list[str]:
    files = {"predictor.pth": predictor_bytes, "style.png": style_png}
    spec = StylizerSpec(styles={}, style_images={"s": "style.png"}, method="predict", predictor="predictor.pth",
                        metrics=False, device="cpu")
    start = time.perf_counter()
    built = build_stylizer(spec, files.__getitem__)
    setup_s = time.perf_counter() - start
    predict = built.stylizer
    johnson_model = load_style_model(johnson_uri)
    johnson = Stylizer({"j": johnson_model}, config=StylizerConfig(device="cpu", metrics=False))
    runs = {"predict": lambda: predict.stylize([image], "s")[0].image,
            "johnson": lambda: johnson.stylize([image], "j")[0].image}
    problems = []
    if johnson_model.arch != predict.styles["s"].arch:
        problems.append(f"{label}: architectures differ ({johnson_model.arch} vs {predict.styles['s'].arch})")
    with torch.inference_mode():
        for name, fn in runs.items():
            out = fn()
            if out.shape != image.shape or out.dtype != np.uint8:
                problems.append(f"{label} {name}: output {out.dtype} {out.shape}, expected {image.shape}")
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, fn in runs.items():
                rates[name].append(rate(fn, args.seconds))
    if predict.style_encodes != 1:
        problems.append(f"{label}: the style image was encoded {predict.style_encodes} times, expected once")
    med = {name: statistics.median(r) for name, r in rates.items()}
    print(f"{label} ({johnson_model.arch.describe()}), {args.size}x{args.size}, one image per call:")
    for name, r in med.items():
        print(f"  {name:8s} {r:.3f} images/s (median of {args.rounds}: {', '.join(f'{x:.3f}' for x in rates[name])})")
    print(f"  per-image cost predict / johnson: {med['johnson'] / med['predict']:.3f}x (goal <= 1.1x); "
          f"one-off build incl. the style encode: {setup_s:.2f} s")
    return problems


def predictor_outputs(model: StylePredictorModel, styles, contents) -> tuple[dict, list[str]]:
    out, problems = {}, []
    with torch.inference_mode():
        nets = {name: model.bake(model.mix([(model.embed_image(img), 1.0)], 1.0)) for name, img in styles.items()}
        for cname, content in contents.items():
            x = torch.from_numpy(content).permute(2, 0, 1)[None].float()
            for name, net in nets.items():
                y = net(x).clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
                if y.shape != content.shape:
                    problems.append(f"{name}/{cname}: output {y.shape}, expected {content.shape}")
                out[name, cname] = y
    return out, problems


def evaluate(args) -> list[str]:
    weights = load_predictor(args.checkpoint, lambda uri: open(uri, "rb").read())
    styles, contents = adain_demo.heldout_styles(), bad.content_images(args.eval_size)
    torch.manual_seed(0)
    untrained = StylePredictorModel(weights.model.config).eval()
    ada = load_adain(None, demo_adain(), lambda uri: open(uri, "rb").read())
    made = {"predict demo": predictor_outputs(weights.model, styles, contents)}
    made["predict untrained"] = predictor_outputs(untrained, styles, contents)
    stylizer = AdaINStylizer(ada.encoder, ada.decoder, styles, {n: [(n, 1.0)] for n in styles}, device="cpu")
    ada_out = {}
    for cname, content in contents.items():
        for name, results in stylizer.stylize_many([content]).items():
            ada_out[name, cname] = results[0].image
    made["adain demo"] = (ada_out, [])
    problems = [p for _, bad_ in made.values() for p in bad_]
    extractors = {"texture:0": adain_demo.texture_levels(0), "adain-encoder": adain_demo.encoder_levels(ada.encoder)}
    print(f"style distance ratio on held-out styles ({', '.join(styles)}), contents {', '.join(bad.CONTENT)} at "
          f"{args.eval_size} px, alpha 1 (1 = as far as the photo, 0 = the style's statistics):")
    header = "".join(f"{f'{m} / {e}':>34}" for e in extractors for m in made)
    print(f"{'style':<16}{header}")
    table = {}
    for e, levels in extractors.items():
        per_model, bad_ = bad.ratios({m: outs for m, (outs, _) in made.items()}, styles, contents, levels)
        problems += bad_
        table |= {(m, e): per_style for m, per_style in per_model.items()}
    for name in styles:
        print(f"{name:<16}" + "".join(f"{table[m, e][name]:>34.3f}" for e in extractors for m in made))
    print(f"{'mean':<16}" + "".join(f"{statistics.mean(table[m, e].values()):>34.3f}" for e in extractors for m in made))
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", default=demo_predictor())
    ap.add_argument("--eval-size", type=int, default=128, help="content crop side of the style-distance part (px)")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    retain_freed_memory()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print_machine()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    style_png = encode_image(adain_demo.heldout_styles()["rings"], "png")
    problems: list[str] = []
    if not args.skip_speed:
        with open(args.checkpoint, "rb") as f:
            demo_bytes = f.read()
        problems += speed("slim: demo predictor vs demo_mosaic_slim", demo_bytes, demo_style_network(slim=True),
                          args, image, style_png)
        torch.manual_seed(0)
        full = StylePredictorModel(PredictorConfig(NetConfig()))
        problems += speed("default size: random predictor vs demo_mosaic", predictor_checkpoint_bytes(full),
                          demo_style_network(), args, image, style_png)
    if not args.skip_eval:
        problems += evaluate(args)
    for p in problems:
        print(f"INVARIANT FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
