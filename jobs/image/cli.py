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

import json
import math
import os
import posixpath
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from typing import Any

import numpy as np

from stylize_core.adain import AdaINStylizer
from stylize_core.builder import SetupError as BuildError
from stylize_core.builder import load_checkpoints
from stylize_core.registry import build_stylizer
from stylize_core.enhance_eval import EVALUATION_KEYS, prepare
from stylize_core.enhance_net import check_output_pixels
from stylize_core.gatys_stylizer import GatysStylizer
from stylize_core.host import retain_freed_memory
from stylize_core.image_formats import (PixelFormat, composite_any, decode_image_full, eight_bit, network_input,
                                         resized)
from stylize_core.image_encode import encode_image_full
from stylize_core.image_io import FORMAT_EXTENSIONS, IMAGE_EXTENSIONS, ImageDecodeError
from stylize_core.style_result import StyleResult
from stylize_core.stylizer import Stylizer

from jobs.common.checkpoints import one_line
from jobs.common.cli_settings import parse_selection
from jobs.image.masking import CliMask, MaskUnusable
from jobs.image.settings import PROG, ImageSettings, parse_args
from jobs.common.stylizer_spec import stylizer_spec
from jobs.common.run_settings import background_rgb, demo_checkpoint
from jobs.common.storage import (StorageOptions, join_uri, read_bytes, redact, redact_text, split_protocol,
                                 url_path, write_bytes_atomic)

# Output extensions we can write, mapped to the encoder's format name (".jpeg" is accepted too).
_WRITABLE = {**{ext: fmt for fmt, ext in FORMAT_EXTENSIONS.items()}, ".jpeg": "jpeg", ".tiff": "tiff"}


class SetupError(Exception):
    """Nothing can run (exit 2): bad option combination, missing checkpoint, style image or weights."""


def _basename(uri: str) -> str:
    return posixpath.basename(split_protocol(url_path(uri))[1].rstrip("/"))  # a signed URL's query names no file


def _say(msg: str, err: bool = False) -> None:
    """Every line the CLI prints, redacted (inputs and checkpoints may be presigned URLs)."""
    print(redact_text(msg), file=sys.stderr if err else sys.stdout, flush=True)


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
            raise SetupError(f"cannot write {ext} files; name the output .jpg, .png, .webp or .tif, or give a directory")
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

    stylizer: Stylizer | GatysStylizer | AdaINStylizer
    style: str
    method: str
    loss_model: str
    checkpoint_sha256: str = ""
    backend: str = ""
    scale: int = 1  # output size / input size (super-resolution networks: 2 or 4)
    enhance: Any = None  # an enhancement network's EnhanceInfo (task, scale, degradation)
    regions: Any = None  # --regions: stylize_core.region_stylizer.RegionRenderer (style "regions")
    parts: int = 0  # --regions: the number of parts (labels 1..parts)


REGIONS = "regions"  # the style name of a --regions output


def _region_parts(args: ImageSettings, opener: Callable[[str], bytes]) -> tuple[dict, dict, dict, dict]:
    """--regions: (styles, style_images, mixes, loaded) naming part k ``p{k}``: style images for the
    style-image methods; selections of a multi-style --checkpoint, else single-style checkpoints."""
    names = [f"p{k}" for k in range(1, len(args.regions) + 1)]
    if args.method in ("optimize", "adain", "predict"):
        return {}, dict(zip(names, args.regions)), {}, {}
    source = args.checkpoint or demo_checkpoint()
    try:
        first = load_checkpoints({"checkpoint": source}, opener, {"checkpoint": 0})["checkpoint"]
        if first.multi_style:
            mixes = {n: parse_selection(p) for n, p in zip(names, args.regions)}
            loaded = load_checkpoints({n: source for n in names}, opener, mixes)
            return {n: source for n in names}, {}, mixes, loaded
        styles = dict(zip(names, args.regions))
        return styles, {}, {}, load_checkpoints(styles, opener)
    except (BuildError, ValueError) as exc:
        raise SetupError(str(exc)) from None


def build_engine(args: ImageSettings, opener: Callable[[str], bytes]) -> Engine:
    """Load the models the options ask for (the job's actors use the same builder); SetupError when
    they cannot be loaded."""
    source = args.checkpoint or demo_checkpoint()
    loaded = None
    if args.regions:
        styles, style_images, mixes, loaded = _region_parts(args, opener)
        spec = stylizer_spec(args, styles=styles, style_images=style_images, mixes=mixes, max_batch=args.batch_size)
        spec.regions = {REGIONS: tuple(list(styles) or list(style_images))}
        try:
            built = build_stylizer(spec, opener, loaded)
        except BuildError as exc:
            raise SetupError(str(exc)) from None
        return Engine(built.stylizer, REGIONS, args.method, built.loss_model, built.model_sha256[REGIONS],
                      built.backend, regions=built.regions, parts=len(args.regions))
    if args.method in ("optimize", "adain", "predict"):
        style = posixpath.splitext(_basename(args.style_image))[0] or "style"
        styles, style_images = {}, {style: args.style_image}
    else:
        named = posixpath.splitext(_basename(source))[0] or "style"  # errors name the style as the jobs do
        try:
            model = load_checkpoints({named: source}, opener, {named: args.mix} if args.mix is not None else None)[named]
        except BuildError as exc:
            hint = "" if args.checkpoint else " (the demo model is not installed; pass --checkpoint PATH_OR_URI)"
            raise SetupError(f"{exc}{hint}") from None
        style = str(model.name or named)
        styles, loaded = {style: source}, {style: model}
        style_images = {style: args.style_image} if args.style_image else {}
    spec = stylizer_spec(args, styles=styles, style_images=style_images, mixes={}, max_batch=args.batch_size)
    try:
        built = build_stylizer(spec, opener, loaded)
    except BuildError as exc:
        raise SetupError(str(exc)) from None
    method = args.method
    sha256 = "" if method == "optimize" else built.model_sha256[style]
    return Engine(built.stylizer, style, method, built.loss_model, sha256, built.backend,
                  getattr(built.stylizer, "scales", {}).get(style, 1),
                  built.models[style].enhance if method == "feedforward" else None)


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

    def __init__(self, args: ImageSettings, engine: Engine) -> None:
        self.args, self.engine, self.failed = args, engine, 0

    def _base(self, uri: str, out: str) -> dict:
        e = self.engine
        return {"input_uri": uri, "output_uri": out, "style": e.style, "method": e.method,
                "checkpoint_sha256": e.checkpoint_sha256, "loss_model": e.loss_model, "backend": e.backend,
                "mask_uri": self.args.mask}

    def error(self, uri: str, out: str, exc: BaseException) -> None:
        self.failed += 1
        _say(f"{PROG}: error: {uri}: {_error_type(exc)}: {exc}", err=True)
        if self.args.json_rows:
            row = {**self._base(uri, out), "status": "error", "error_type": _error_type(exc), "error": str(exc)}
            print(json.dumps(redact(row, keys=False)), flush=True)

    def ok(self, uri: str, out: str, result: StyleResult, scores: Any = None, decode_ms: float = float("nan"),
           encode_ms: float = float("nan"), fmt: PixelFormat | None = None, alpha: str = "") -> None:
        h, w = result.image.shape[:2]
        if self.args.json_rows:
            row = {**self._base(uri, out), "status": "ok", "error_type": None, "error": None, "width": w, "height": h,
                   "pixel_format": fmt.label if fmt else None, "alpha": alpha or None,
                   "color_profile": (fmt.profile or None) if fmt else None,
                   "content_loss": _finite_or_none(result.content_loss), "style_loss": _finite_or_none(result.style_loss),
                   "tv_loss": _finite_or_none(result.tv_loss),
                   "style_stat_distance": _finite_or_none(result.style_stat_distance),
                   "style_stat_ratio": _finite_or_none(result.style_stat_ratio), "stylize_ms": result.stylize_ms,
                   "metrics_ms": result.metrics_ms, "decode_ms": _finite_or_none(decode_ms),
                   "encode_ms": _finite_or_none(encode_ms), "tiles": result.tiles}
            if scores is not None:
                row.update({k: _finite_or_none(getattr(scores, k)) for k in EVALUATION_KEYS})
            print(json.dumps(redact(row, keys=False)), flush=True)
        elif not self.args.quiet:
            extra = "" if scores is None else (f", PSNR {scores.psnr:.2f} dB vs {scores.baseline_psnr:.2f}, "
                                               f"SSIM {scores.ssim:.3f} vs {scores.baseline_ssim:.3f}")
            tiles = f", {result.tiles} tiles" if result.tiles > 1 else ""
            _say(f"{uri} -> {out} ({w}x{h}, {result.stylize_ms:.0f} ms{tiles}{extra})")


def _read(uri: str, args: ImageSettings, opener: Callable[[str], bytes], scale: int = 1,
          mask: CliMask | None = None, parts: int = 0) -> tuple[np.ndarray, PixelFormat, np.ndarray | None]:
    """The input at the size it is stylised ((H, W, 3) uint8, or uint16 from a 16-bit file), its pixel
    format (alpha, bits, grey, profile, metadata: stylize_core.image_formats), and the --mask's
    feathered weights at that size (or None); with ``parts`` (--regions), its (parts + 1) label planes."""
    decoded = decode_image_full(opener(uri), max_pixels=args.max_pixels)
    if mask is not None:
        mask.check(uri, decoded.pixels)  # against the file, before --max-side
    image, fmt = resized(decoded, args.max_side)
    check_output_pixels(*image.shape[:2], scale, args.max_pixels)  # --max-pixels bounds the output too
    if mask is None:
        return image, fmt, None
    return image, fmt, mask.planes(image, parts) if parts else mask.weights(image)


def _stylize(engine: Engine, images: list[np.ndarray], planes: Sequence[np.ndarray | None] = ()
             ) -> list[StyleResult | BaseException]:
    """Results in order; a failing batch is retried image by image so one bad image fails alone.
    --regions: each image with its label planes, composited already."""
    if engine.regions is not None:
        out: list[StyleResult | BaseException] = []
        for image, weights in zip(images, planes):
            try:
                out.append(engine.regions.render(network_input(image, engine.regions), weights, REGIONS))
            except Exception as exc:  # noqa: BLE001 - reported per input, the run goes on
                out.append(exc)
        return out
    try:
        return list(engine.stylizer.stylize(images, engine.style))
    except Exception:
        if len(images) == 1:
            raise
    out = []
    for image in images:
        try:
            out.append(engine.stylizer.stylize([image], engine.style)[0])
        except Exception as exc:  # noqa: BLE001 - reported per input, the run goes on
            out.append(exc)
    return out


def main(args: ImageSettings) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 some inputs failed, 2 nothing ran)."""
    retain_freed_memory()
    opts = StorageOptions(endpoint_url=args.endpoint_url, region=args.region, profile=args.profile)
    opener: Callable[[str], bytes] = lambda uri: read_bytes(uri, opts)  # noqa: E731
    try:
        fmt, outputs = plan_outputs(args.inputs, args.output, args.format)
        engine = build_engine(args, opener)
        mask = CliMask.read(args.mask, args.mask_mode, args.mask_feather, opener, scale=engine.scale,
                            max_pixels=args.max_pixels, styles=engine.parts or 1)
    except (SetupError, MaskUnusable) as exc:
        _say(f"{PROG}: error: {one_line(str(exc))}", err=True)
        return 2
    report = _Reporter(args, engine)
    # Gatys runs one image at a time anyway; batching there would only hold more images in memory.
    chunk = 1 if args.method == "optimize" else args.batch_size
    pairs = list(zip(args.inputs, outputs))
    for start in range(0, len(pairs), chunk):
        ready: list[tuple[str, str, np.ndarray]] = []
        formats: dict[str, PixelFormat] = {}  # output -> the input's pixel format
        decode_ms: dict[str, float] = {}  # output -> read + decode ms (outputs are unique)
        weights: dict[str, np.ndarray | None] = {}  # output -> the mask's weights at the input's size
        for uri, out in pairs[start : start + chunk]:
            began = time.perf_counter()
            try:
                image, formats[out], weights[out] = _read(uri, args, opener, engine.scale, mask, engine.parts)
                ready.append((uri, out, image))
                decode_ms[out] = (time.perf_counter() - began) * 1000
            except MaskUnusable as exc:  # the mask does not fit this input: stop, as for a missing mask
                _say(f"{PROG}: error: {one_line(str(exc))}", err=True)
                return 2
            except (OSError, ImageDecodeError, ValueError) as exc:
                report.error(uri, out, exc)
        if not ready:
            continue
        evals: list[Any] = [None] * len(ready)
        if args.evaluate and engine.enhance is not None:  # restore degraded copies, scored against the inputs
            kept = []
            for uri, out, image in ready:
                try:  # scored on 8 bits: the degradations and PSNR/SSIM are defined on uint8 images
                    image = eight_bit(image)
                    evals[len(kept)] = prepare(image, engine.enhance.degradation, uri)
                    kept.append((uri, out, evals[len(kept)].degraded))
                except ValueError as exc:  # too small to downscale by the network's scale
                    report.error(uri, out, exc)
            ready = kept
            if not ready:
                continue
        try:
            results = _stylize(engine, [network_input(image, engine.stylizer) for _, _, image in ready],
                               [weights[out] for _, out, _ in ready])
        except Exception as exc:  # noqa: BLE001 - a single image's failure
            results = [exc]
        for (uri, out, image), result, scores in zip(ready, results, evals):
            if isinstance(result, BaseException):
                report.error(uri, out, result)
                continue
            if weights.get(out) is not None and engine.regions is None:  # the output over the input, where the mask says
                result = replace(result, image=composite_any(image, result.image, weights[out]))
            began = time.perf_counter()
            try:
                data, alpha = encode_image_full(result.image, formats[out], fmt, args.quality,
                                                background=background_rgb(args.background))
                write_bytes_atomic(out, data, opts)
            except (OSError, ValueError) as exc:
                report.error(uri, out, exc)
                continue
            report.ok(uri, out, result, scores.score(result.image) if scores is not None else None,
                      decode_ms[out], (time.perf_counter() - began) * 1000, formats[out], alpha)
    if report.failed and not args.json_rows:
        _say(f"{PROG}: {report.failed} of {len(pairs)} input(s) failed", err=True)
    return 1 if report.failed else 0


def cli(argv: Sequence[str] | None = None) -> int:
    return main(parse_args(argv))
