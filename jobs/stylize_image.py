"""Stylise a few images on this machine, without Ray: ``python -m jobs.stylize_image``.

Feed-forward with a style network checkpoint (default: the shipped demo model), or per-image Gatys
optimisation towards a style image (``--optimize``). Inputs and outputs are local paths or any URI
``jobs.storage`` reads (``s3://``, ``file://``, ...).

Exit status: 0 every input was written; 1 some inputs failed (each reported on stderr, the rest are
still written); 2 nothing ran (bad options, missing checkpoint, style image or VGG weights).

Imports only ``stylize_core`` and the Ray-free parts of ``jobs`` so it starts quickly and runs where
Ray is not installed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import posixpath
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stylize_core.checkpoint import StyleModelError, load_style_model
from stylize_core.gatys import INITS, OPTIMIZERS, GatysConfig
from stylize_core.gatys_stylizer import GatysStylizer
from stylize_core.host import retain_freed_memory
from stylize_core.image_io import FORMAT_EXTENSIONS, IMAGE_EXTENSIONS, ImageDecodeError, decode_image, encode_image, resize_max_side
from stylize_core.loss_meter import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, LossMeter
from stylize_core.stylizer import Stylizer, StylizerConfig, StyleResult, resolve_device
from stylize_core.vgg import VGGFeatures, VGGWeightsError

from .settings import demo_checkpoint
from .storage import StorageOptions, join_uri, read_bytes, split_protocol, write_bytes_atomic

PROG = "python -m jobs.stylize_image"
# Output extensions we can write, mapped to the encoder's format name (".jpeg" is accepted too).
_WRITABLE = {**{ext: fmt for fmt, ext in FORMAT_EXTENSIONS.items()}, ".jpeg": "jpeg"}


class SetupError(Exception):
    """Nothing can run (exit 2): bad option combination, missing checkpoint, style image or weights."""


def _fraction(value: str) -> float:
    f = float(value)
    if not 0.0 <= f <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number within [0, 1], got {value}")
    return f


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return n


def _quality(value: str) -> int:
    q = int(value)
    if not 1 <= q <= 100:
        raise argparse.ArgumentTypeError(f"expected an integer within 1..100, got {value}")
    return q


def _non_negative(value: str) -> float:
    f = float(value)
    if not f >= 0.0 or not math.isfinite(f):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {value}")
    return f


def build_parser() -> argparse.ArgumentParser:
    """The command line of the local, Ray-free stylisation tool."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Stylise image files on this machine (no Ray) with a style network checkpoint, or with\n"
        "per-image Gatys optimisation (--optimize). Inputs and outputs may be local paths or URIs\n"
        "(s3://, file://, any fsspec URI).\n\n"
        "exit status: 0 all written; 1 some inputs failed (reported on stderr, the others are still\n"
        "written); 2 nothing ran (bad options, missing checkpoint, style image or VGG weights).",
        epilog=f"examples:\n  {PROG} photo.jpg --checkpoint mosaic.pth -o styled.jpg\n"
        f"  {PROG} a.jpg b.png --checkpoint s3://models/mosaic.pth -o out/ --format png --json --metrics\n"
        f"  {PROG} photo.jpg --optimize --style-image starry.jpg -o out/ --levels 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="input image files (paths or URIs)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="with one input and a name ending in .jpg/.jpeg/.png/.webp: the output file (its "
                   "extension picks the format); otherwise a directory receiving {stem}.{ext} per input "
                   "(two inputs with the same stem are refused)")
    p.add_argument("--format", choices=sorted(FORMAT_EXTENSIONS), default=None,
                   help="output format (default: from OUT's extension, else jpeg)")
    p.add_argument("--quality", type=_quality, default=90, help="JPEG/WebP quality 1-100 (default: %(default)s)")
    p.add_argument("--max-side", type=_positive_int, default=None, metavar="N",
                   help="downscale inputs whose longer side exceeds N pixels before stylising (default: keep size)")
    p.add_argument("--max-pixels", type=_positive_int, default=64_000_000,
                   help="refuse inputs with more pixels than this (decompression bombs) (default: %(default)s)")
    p.add_argument("--strength", type=_fraction, default=1.0,
                   help="style strength, 0 (the input unchanged) .. 1 (full style) (default: %(default)s)")
    p.add_argument("--preserve-color", action="store_true", help="keep the input's colours (luminance-only transfer)")
    p.add_argument("--device", default="auto", help="torch device: auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per input on stdout (status, output, size, losses, timings; "
                   "losses are null without --metrics); human-readable progress is then suppressed")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines (errors are still printed)")

    ff = p.add_argument_group("feed-forward (default method)")
    ff.add_argument("--checkpoint", default=None, metavar="PATH_OR_URI",
                    help="style network: this project's checkpoint or a pytorch/examples fast_neural_style .pth "
                    "(default: the shipped demo model)")
    ff.add_argument("--batch-size", type=_positive_int, default=4,
                    help="images read and stylised together; same-sized ones share a forward pass (default: %(default)s)")

    m = p.add_argument_group("metrics and loss network")
    m.add_argument("--metrics", action="store_true",
                   help="measure content, style and TV loss of each output with the VGG loss network")
    m.add_argument("--vgg", choices=["vgg16", "vgg19"], default=None,
                   help="loss network (default: vgg16 for metrics, vgg19 for --optimize)")
    m.add_argument("--vgg-weights", default="imagenet", metavar="imagenet|PATH|URI|random:SEED",
                   help="loss network weights: torchvision's ImageNet weights from its cache, a state dict "
                   "path/URI, or random:SEED (tests and demos only) (default: %(default)s)")
    m.add_argument("--metrics-size", type=_positive_int, default=256,
                   help="short side at which losses are measured (default: %(default)s)")
    m.add_argument("--style-image", default=None, metavar="PATH_OR_URI",
                   help="style image: the target of --optimize (required there); for feed-forward metrics, "
                   "overrides the style image stored in the checkpoint (bare pytorch/examples files have none)")

    g = p.add_argument_group("Gatys optimisation (--optimize)")
    g.add_argument("--optimize", action="store_true",
                   help="optimise each image's pixels towards --style-image instead of using a checkpoint (slow)")
    g.add_argument("--steps", type=_positive_int, default=100, help="loss evaluations per pyramid level (default: %(default)s)")
    g.add_argument("--levels", type=_positive_int, default=2, help="coarse-to-fine pyramid levels (default: %(default)s)")
    g.add_argument("--optimizer", choices=list(OPTIMIZERS), default="lbfgs", help="optimiser (default: %(default)s)")
    g.add_argument("--init", choices=list(INITS), default="content", help="starting image (default: %(default)s)")
    g.add_argument("--content-weight", type=_non_negative, default=1.0, help="content loss weight (default: %(default)s)")
    g.add_argument("--style-weight", type=_non_negative, default=1e6, help="style loss weight (default: %(default)s)")
    g.add_argument("--tv-weight", type=_non_negative, default=1e-3, help="total-variation weight (default: %(default)s)")
    g.add_argument("--lr", type=float, default=None, help="learning rate (default: 1.0 for lbfgs, 2.0 for adam)")
    g.add_argument("--seed", type=int, default=0, help="seed of the noise init (default: %(default)s)")

    s = p.add_argument_group("storage (URIs)")
    s.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL or AWS's own)")
    s.add_argument("--region", help="S3 region (default: from the AWS environment/config)")
    s.add_argument("--profile", help="AWS profile for credentials (default: the standard AWS chain)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default: ``sys.argv[1:]``)."""
    return build_parser().parse_args(argv)


def _basename(uri: str) -> str:
    return posixpath.basename(split_protocol(uri)[1].rstrip("/"))


def _same_place(a: str, b: str) -> bool:
    pa, ra = split_protocol(a)
    pb, rb = split_protocol(b)
    if pa in (None, "file") and pb in (None, "file"):
        return os.path.realpath(os.path.expanduser(ra)) == os.path.realpath(os.path.expanduser(rb))
    return a.rstrip("/") == b.rstrip("/")


def plan_outputs(inputs: Sequence[str], output: str, fmt: str | None) -> tuple[str, list[str]]:
    """``(format, output uri per input)``; raises SetupError on clashes or an unwritable extension."""
    ext = posixpath.splitext(_basename(output))[1].lower()
    protocol, rest = split_protocol(output)
    existing_dir = protocol in (None, "file") and os.path.isdir(os.path.expanduser(rest))
    single_file = not existing_dir and not output.endswith(("/", os.sep)) and ext in IMAGE_EXTENSIONS | set(_WRITABLE)
    if single_file:
        if ext not in _WRITABLE:
            raise SetupError(f"cannot write {ext} files; name the output .jpg, .png or .webp, or give a directory")
        if len(inputs) != 1:
            raise SetupError(f"-o {output} names one file but {len(inputs)} inputs were given; give a directory")
        if fmt is not None and fmt != _WRITABLE[ext]:
            raise SetupError(f"--format {fmt} contradicts the output name {output}")
        outs, fmt = [output], _WRITABLE[ext]
    else:
        fmt = fmt or "jpeg"
        outs = [join_uri(output, posixpath.splitext(_basename(uri))[0] + FORMAT_EXTENSIONS[fmt]) for uri in inputs]
        seen: dict[str, str] = {}
        for uri, out in zip(inputs, outs):
            if out in seen:
                raise SetupError(f"inputs {seen[out]} and {uri} would both be written to {out}; "
                                 "rename one or stylise them into different directories")
            seen[out] = uri
    for uri, out in zip(inputs, outs):
        if _same_place(uri, out):
            raise SetupError(f"refusing to overwrite the input {uri} with its output; choose another -o")
    return fmt, outs


@dataclass
class Engine:
    """What stylises: the stylizer, the style's name and how its results are labelled."""

    stylizer: Stylizer | GatysStylizer
    style: str
    method: str
    loss_model: str
    checkpoint_sha256: str = ""


def _check_device(device: str) -> None:
    try:
        dev = resolve_device(device)
    except RuntimeError as exc:
        raise SetupError(f"--device {device}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SetupError(f"--device {device}: CUDA is not available on this machine; use cpu or auto")


def _load_style_image(uri: str, opener: Callable[[str], bytes], max_pixels: int) -> np.ndarray:
    try:
        return decode_image(opener(uri), max_pixels=max_pixels)
    except (OSError, ImageDecodeError) as exc:
        raise SetupError(f"cannot read style image {uri}: {type(exc).__name__}: {exc}") from None


def build_engine(args: argparse.Namespace, opener: Callable[[str], bytes]) -> Engine:
    """Load the models the options ask for; SetupError when they cannot be loaded."""
    _check_device(args.device)
    arch = args.vgg or ("vgg19" if args.optimize else "vgg16")
    style_image = _load_style_image(args.style_image, opener, args.max_pixels) if args.style_image else None
    metric_layers = DEFAULT_CONTENT_LAYERS + DEFAULT_STYLE_LAYERS
    try:
        if args.optimize:
            if style_image is None:
                raise SetupError("--optimize needs --style-image (the style to optimise towards)")
            if args.checkpoint is not None:
                raise SetupError("--checkpoint and --optimize exclude each other: --optimize uses --style-image only")
            style = posixpath.splitext(_basename(args.style_image))[0] or "style"
            config = GatysConfig(
                steps=args.steps, pyramid_levels=args.levels, optimizer=args.optimizer, init=args.init,
                content_weight=args.content_weight, style_weight=args.style_weight, tv_weight=args.tv_weight,
                lr=args.lr, seed=args.seed, preserve_color=args.preserve_color,
            )
            meter = None
            if args.metrics:
                vgg = VGGFeatures(arch, metric_layers, args.vgg_weights, opener=opener)
                meter = LossMeter(vgg, {style: style_image}, short_side=args.metrics_size,
                                  device=resolve_device(args.device))
            gatys = GatysStylizer({style: style_image}, config, arch=arch, weights=args.vgg_weights, opener=opener,
                                  device=args.device, strength=args.strength, meter=meter)
            return Engine(gatys, style, "optimize", gatys.loss_model)

        source = args.checkpoint or demo_checkpoint()
        try:
            model = load_style_model(source, opener=opener)
        except (FileNotFoundError, IsADirectoryError):
            hint = "" if args.checkpoint else " (the demo model is not installed; pass --checkpoint PATH_OR_URI)"
            raise SetupError(f"style checkpoint not found: {source}{hint}") from None
        except (StyleModelError, OSError) as exc:
            raise SetupError(str(exc)) from None
        style = str(model.metadata.get("style") or posixpath.splitext(_basename(source))[0] or "style")
        vgg = VGGFeatures(arch, metric_layers, args.vgg_weights, opener=opener) if args.metrics else None
        config = StylizerConfig(device=args.device, metrics=args.metrics, metrics_short_side=args.metrics_size,
                                strength=args.strength, preserve_color=args.preserve_color, max_batch=args.batch_size)
        overrides = {style: style_image} if style_image is not None else None
        stylizer = Stylizer({style: model}, vgg, config, style_images=overrides)
        return Engine(stylizer, style, "feedforward", stylizer.loss_model, model.sha256)
    except VGGWeightsError as exc:
        raise SetupError(str(exc)) from None
    except ValueError as exc:  # e.g. an impossible Gatys setting, or a VGG state dict of the wrong shape
        raise SetupError(str(exc)) from None


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, ImageDecodeError):
        return exc.error_type
    if isinstance(exc, FileNotFoundError):
        return "not_found"
    return type(exc).__name__


class _Reporter:
    """Prints progress, error lines (stderr) and, with --json, one row per input (stdout)."""

    def __init__(self, args: argparse.Namespace, engine: Engine) -> None:
        self.args, self.engine, self.failed = args, engine, 0

    def _base(self, uri: str, out: str) -> dict:
        e = self.engine
        return {"input_uri": uri, "output_uri": out, "style": e.style, "method": e.method,
                "checkpoint_sha256": e.checkpoint_sha256, "loss_model": e.loss_model}

    def error(self, uri: str, out: str, exc: BaseException) -> None:
        self.failed += 1
        print(f"{PROG}: error: {uri}: {_error_type(exc)}: {exc}", file=sys.stderr, flush=True)
        if self.args.json:
            row = {**self._base(uri, out), "status": "error", "error_type": _error_type(exc), "error": str(exc)}
            print(json.dumps(row), flush=True)

    def ok(self, uri: str, out: str, result: StyleResult) -> None:
        h, w = result.image.shape[:2]
        if self.args.json:
            row = {**self._base(uri, out), "status": "ok", "error_type": None, "error": None, "width": w, "height": h,
                   "content_loss": _finite_or_none(result.content_loss), "style_loss": _finite_or_none(result.style_loss),
                   "tv_loss": _finite_or_none(result.tv_loss), "stylize_ms": result.stylize_ms,
                   "metrics_ms": result.metrics_ms}
            print(json.dumps(row), flush=True)
        elif not self.args.quiet:
            print(f"{uri} -> {out} ({w}x{h}, {result.stylize_ms:.0f} ms)", flush=True)


def _read(uri: str, args: argparse.Namespace, opener: Callable[[str], bytes]) -> np.ndarray:
    image = decode_image(opener(uri), max_pixels=args.max_pixels)  # (H, W, 3) uint8
    return resize_max_side(image, args.max_side)


def _stylize(engine: Engine, images: list[np.ndarray]) -> list[StyleResult | BaseException]:
    """Results in order; a failing batch is retried image by image so one bad image fails alone."""
    try:
        return list(engine.stylizer.stylize(images, engine.style))
    except Exception:
        if len(images) == 1:
            raise
    out: list[StyleResult | BaseException] = []
    for image in images:
        try:
            out.append(engine.stylizer.stylize([image], engine.style)[0])
        except Exception as exc:  # noqa: BLE001 - reported per input, the run goes on
            out.append(exc)
    return out


def main(args: argparse.Namespace) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 some inputs failed, 2 nothing ran)."""
    retain_freed_memory()
    opts = StorageOptions(endpoint_url=args.endpoint_url, region=args.region, profile=args.profile)
    opener: Callable[[str], bytes] = lambda uri: read_bytes(uri, opts)  # noqa: E731
    try:
        fmt, outputs = plan_outputs(args.inputs, args.output, args.format)
        engine = build_engine(args, opener)
    except SetupError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    report = _Reporter(args, engine)
    # Gatys runs one image at a time anyway; batching there would only hold more images in memory.
    chunk = 1 if args.optimize else args.batch_size
    pairs = list(zip(args.inputs, outputs))
    for start in range(0, len(pairs), chunk):
        ready: list[tuple[str, str, np.ndarray]] = []
        for uri, out in pairs[start : start + chunk]:
            try:
                ready.append((uri, out, _read(uri, args, opener)))
            except (OSError, ImageDecodeError, ValueError) as exc:
                report.error(uri, out, exc)
        if not ready:
            continue
        try:
            results = _stylize(engine, [image for _, _, image in ready])
        except Exception as exc:  # noqa: BLE001 - a single image's failure
            results = [exc]
        for (uri, out, _), result in zip(ready, results):
            if isinstance(result, BaseException):
                report.error(uri, out, result)
                continue
            try:
                write_bytes_atomic(out, encode_image(result.image, fmt, args.quality), opts)
            except (OSError, ValueError) as exc:
                report.error(uri, out, exc)
                continue
            report.ok(uri, out, result)
    if report.failed and not args.json:
        print(f"{PROG}: {report.failed} of {len(pairs)} input(s) failed", file=sys.stderr, flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
