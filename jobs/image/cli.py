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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from stylize_core.adain import AdaINStylizer
from stylize_core.builder import SetupError as BuildError
from stylize_core.builder import load_checkpoints
from stylize_core.registry import build_stylizer
from stylize_core.gatys import INITS, OPTIMIZERS
from stylize_core.enhance_eval import EVALUATION_KEYS, prepare
from stylize_core.enhance_net import check_output_pixels
from stylize_core.gatys_stylizer import GatysStylizer
from stylize_core.host import retain_freed_memory
from stylize_core.image_io import FORMAT_EXTENSIONS, IMAGE_EXTENSIONS, ImageDecodeError, decode_image, encode_image, resize_max_side
from stylize_core.masks import MaskError, check_labels, check_size, composite, decode_mask, fit_mask, region_weights
from stylize_core.stylizer import Stylizer, StyleResult

from jobs.common.checkpoints import one_line
from jobs.common.mask_settings import MaskMode, mask_feather_option, mask_mode_option
from jobs.common.stylizer_spec import stylizer_spec
from jobs.common import cli_settings
from jobs.common.cli_settings import option, parse_selection
from jobs.common.run_settings import (ADAIN_ENCODER_ALONE, BackendSpec, MemorySize, TileSide, demo_adain_checkpoint,
                                      demo_checkpoint, max_memory_option, tile_option, tileable_option)
from jobs.common.storage import (StorageOptions, join_uri, read_bytes, redact, redact_text, split_protocol,
                                 url_path, write_bytes_atomic)

PROG = "python -m jobs.stylize_image"
# Output extensions we can write, mapped to the encoder's format name (".jpeg" is accepted too).
_WRITABLE = {**{ext: fmt for fmt, ext in FORMAT_EXTENSIONS.items()}, ".jpeg": "jpeg"}


class SetupError(Exception):
    """Nothing can run (exit 2): bad option combination, missing checkpoint, style image or weights."""


_FF, _METRICS, _GATYS, _STORAGE, _MASK = ("feed-forward (default method)", "metrics and loss network",
                                          "Gatys optimisation (--optimize)", "storage (URIs)", "masks")
_ADAIN = "AdaIN (--method adain)"


class ImageSettings(BaseModel):
    """``python -m jobs.stylize_image`` options, from flags and ``--config`` YAML alike."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: list[str] = option(..., "input image files (paths or URIs)", positional=True, metavar="IN", min_length=1)
    output: str = option(..., "with one input and a name ending in .jpg/.jpeg/.png/.webp: the output file (its "
                         "extension picks the format); otherwise a directory receiving {stem}.{ext} per input (two "
                         "inputs with the same stem are refused). Required", short="-o", metavar="OUT", min_length=1)
    format: Literal["jpeg", "png", "webp"] | None = option(None, "output format (default: from OUT's extension, else jpeg)")
    quality: int = option(90, "JPEG/WebP quality 1-100", ge=1, le=100)
    max_side: int | None = option(None, "downscale inputs whose longer side exceeds N pixels before stylising "
                                  "(default: keep size)", metavar="N", ge=1)
    max_pixels: int = option(64_000_000, "refuse inputs with more pixels than this (decompression bombs)", ge=1)
    strength: float = option(1.0, "style strength, 0 (the input unchanged) .. 1 (full style)", ge=0, le=1)
    preserve_color: bool = option(False, "keep the input's colours (luminance-only transfer)")
    device: str = option("auto", "torch device: auto (CUDA when present), cpu, cuda, cuda:N",
                         pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    bf16: bool = option(True, "on CUDA, run in float32 instead of bf16 autocast", negate="--no-bf16")
    channels_last: bool = option(True, "keep NCHW contiguous activations (default: channels_last, faster on CUDA and "
                                 "on CPU)", negate="--no-channels-last")
    json_rows: bool = option(False, "print one JSON object per input on stdout (status, output, size, losses, timings; "
                        "losses are null without --metrics); human-readable progress is then suppressed", flag="--json")
    quiet: bool = option(False, "no progress lines (errors are still printed)", short="-q")

    checkpoint: str | None = option(None, "style network: this project's checkpoint or a pytorch/examples "
                                    "fast_neural_style .pth (default: the shipped demo model)",
                                    metavar="PATH_OR_URI", group=_FF, min_length=1)
    mix: Annotated[int | str | dict[int | str, float] | None, BeforeValidator(parse_selection)] = option(
        None, "multi-style checkpoints: the style to render, an index or a name (`--mix 3`), or a blend with weights "
        "normalised to sum to one (`--mix 3:0.5,wave:0.5`); `python -m jobs.styles CHECKPOINT` lists the styles",
        metavar="SPEC", group=_FF)
    backend: BackendSpec = option("eager", "where the style network runs on CPU: PyTorch eager, torch.compile, "
                                  "onnxruntime or OpenVINO (these two need `pip install 'stylize[cpu]'`); NAME:bf16 "
                                  "runs in bfloat16. See README 'CPU backends'", group=_FF)
    batch_size: int = option(4, "images read and stylised together; same-sized ones share a forward pass",
                             group=_FF, ge=1, le=1024)
    evaluate: bool = option(False, "enhancement networks: degrade each input as the network was trained for, restore "
                            "that, write the restoration and report psnr/ssim (luminance) of it and of the baseline "
                            "(Lanczos upscale or the degraded input) in --json rows", group=_FF)
    tile: TileSide = tile_option(_FF)
    max_memory: MemorySize = max_memory_option(_FF)
    tileable: bool = tileable_option(_FF)

    metrics: bool = option(False, "measure content, style and TV loss of each output with the VGG loss network",
                           group=_METRICS)
    vgg: str | None = option(None, "loss network: vgg16, vgg19 or texture[:SEED] (random filters, nothing to "
                             "download) (default: vgg16 for metrics, vgg19 for --optimize)", group=_METRICS,
                             pattern=r"^(vgg16|vgg19|texture(:\d+)?)$")
    vgg_weights: str = option("imagenet", "loss network weights: torchvision's ImageNet weights from its cache, a "
                              "state dict path/URI, or random:SEED (tests and demos only)",
                              metavar="imagenet|PATH|URI|random:SEED", group=_METRICS, min_length=1)
    metrics_size: int = option(256, "short side at which losses are measured", group=_METRICS, ge=16)
    style_image: str | None = option(None, "style image: the target of --optimize (required there); for feed-forward "
                                     "metrics, overrides the style image stored in the checkpoint (bare "
                                     "pytorch/examples files have none)", metavar="PATH_OR_URI", group=_METRICS)

    method_name: Literal["feedforward", "optimize", "adain"] | None = option(
        None, "feedforward (a style network, the default), optimize (as --optimize) or adain (any --style-image "
        "through pytorch-AdaIN's --encoder/--decoder, or the shipped demo model without them; docs/methods/adain.md)", flag="--method")
    encoder: str | None = option(None, "adain: pytorch-AdaIN's vgg_normalised.pth (path or URI)",
                                 metavar="PATH_OR_URI", group=_ADAIN, min_length=1)
    decoder: str | None = option(None, "adain: pytorch-AdaIN's decoder.pth (with --encoder), or this project's "
                                 "one-file AdaIN checkpoint (alone); default: the shipped demo model", metavar="PATH_OR_URI", group=_ADAIN, min_length=1)
    alpha: float = option(1.0, "adain: style strength in feature space, 0 (the decoded content) .. 1 (full style)",
                          group=_ADAIN, ge=0, le=1)

    optimize: bool = option(False, "optimise each image's pixels towards --style-image instead of using a "
                            "checkpoint (slow)", group=_GATYS)
    steps: int = option(100, "loss evaluations per pyramid level", group=_GATYS, ge=1)
    levels: int = option(2, "coarse-to-fine pyramid levels", group=_GATYS, ge=1, le=8)
    optimizer: Literal[tuple(OPTIMIZERS)] = option("lbfgs", "optimiser", group=_GATYS)  # type: ignore[valid-type]
    init: Literal[tuple(INITS)] = option("content", "starting image", group=_GATYS)  # type: ignore[valid-type]
    content_weight: float = option(1.0, "content loss weight", group=_GATYS, ge=0, allow_inf_nan=False)
    style_weight: float = option(1e6, "style loss weight", group=_GATYS, ge=0, allow_inf_nan=False)
    tv_weight: float = option(1e-3, "total-variation weight", group=_GATYS, ge=0, allow_inf_nan=False)
    lr: float | None = option(None, "learning rate (default: 1.0 for lbfgs, 2.0 for adam)", group=_GATYS, gt=0)
    seed: int = option(0, "seed of the noise init", group=_GATYS)

    mask: str | None = option(None, "mask image (path or URI) of every input's size: white = styled, black = the "
                              "input unchanged, grey = a blend (docs/operations/masks.md)", metavar="MASK",
                              group=_MASK, min_length=1)
    mask_feather: float = mask_feather_option(_MASK)
    mask_mode: MaskMode = mask_mode_option(_MASK)

    endpoint_url: str | None = option(None, "S3 endpoint (default: AWS_ENDPOINT_URL or AWS's own)", group=_STORAGE)
    region: str | None = option(None, "S3 region (default: from the AWS environment/config)", group=_STORAGE)
    profile: str | None = option(None, "AWS profile for credentials (default: the standard AWS chain)", group=_STORAGE)

    @property
    def method(self) -> str:
        return "optimize" if self.optimize else self.method_name or "feedforward"

    def gatys_options(self) -> dict[str, Any]:
        """``--optimize``'s options, as :class:`stylize_core.gatys.GatysConfig` takes them."""
        return {"steps": self.steps, "pyramid_levels": self.levels, "optimizer": self.optimizer, "init": self.init,
                "content_weight": self.content_weight, "style_weight": self.style_weight, "tv_weight": self.tv_weight,
                "lr": self.lr, "seed": self.seed, "preserve_color": self.preserve_color}

    @model_validator(mode="after")
    def _method_options(self) -> ImageSettings:
        if self.optimize and self.method_name not in (None, "optimize"):
            raise ValueError(f"--optimize contradicts --method {self.method_name}")
        if self.method == "adain":
            if self.encoder and not self.decoder:
                raise ValueError(ADAIN_ENCODER_ALONE)
            if not self.decoder:  # the shipped demo model (a one-file checkpoint)
                object.__setattr__(self, "decoder", demo_adain_checkpoint())
            if self.style_image is None:
                raise ValueError("--method adain needs --style-image (the style to transfer)")
            if self.checkpoint is not None or self.mix is not None:
                raise ValueError("--checkpoint and --mix are for style networks; --method adain uses --style-image "
                                 "with --encoder/--decoder")
        elif self.encoder or self.decoder:
            raise ValueError("--encoder/--decoder belong to --method adain")
        if self.method == "optimize" and self.style_image is None:
            raise ValueError("--optimize needs --style-image (the style to optimise towards)")
        if self.method == "optimize" and self.checkpoint is not None:
            raise ValueError("--checkpoint and --optimize exclude each other: --optimize uses --style-image only")
        return self


DESCRIPTION = (
    "Stylise image files on this machine (no Ray) with a style network checkpoint, or with\n"
    "per-image Gatys optimisation (--optimize). Inputs and outputs may be local paths or URIs\n"
    "(s3://, file://, any fsspec URI).\n\n"
    "exit status: 0 all written; 1 some inputs failed (reported on stderr, the others are still\n"
    "written); 2 nothing ran (bad options, missing checkpoint, style image or VGG weights)."
)
EPILOG = (f"examples:\n  {PROG} photo.jpg --checkpoint mosaic.pth -o styled.jpg\n"
          f"  {PROG} a.jpg b.png --checkpoint s3://models/mosaic.pth -o out/ --format png --json --metrics\n"
          f"  {PROG} photo.jpg --optimize --style-image starry.jpg -o out/ --levels 3\n"
          f"  {PROG} photo.jpg --method adain --encoder vgg_normalised.pth --decoder decoder.pth "
          "--style-image starry.jpg --alpha 0.8 -o styled.jpg\n"
          f"  {PROG} photo.jpg --method adain --style-image starry.jpg -o styled.jpg   (the shipped demo model)")


def build_parser() -> argparse.ArgumentParser:
    """The command line of the local, Ray-free stylisation tool."""
    return cli_settings.build_parser(ImageSettings, PROG, DESCRIPTION, EPILOG)


def parse_args(argv: Sequence[str] | None = None) -> ImageSettings:
    """Validated settings from ``argv`` (default: ``sys.argv[1:]``); exits 2 with one line when invalid."""
    return cli_settings.parse(ImageSettings, argv, build_parser())


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

    stylizer: Stylizer | GatysStylizer | AdaINStylizer
    style: str
    method: str
    loss_model: str
    checkpoint_sha256: str = ""
    backend: str = ""
    scale: int = 1  # output size / input size (super-resolution networks: 2 or 4)
    enhance: Any = None  # an enhancement network's EnhanceInfo (task, scale, degradation)


def build_engine(args: ImageSettings, opener: Callable[[str], bytes]) -> Engine:
    """Load the models the options ask for (the job's actors use the same builder); SetupError when
    they cannot be loaded."""
    source = args.checkpoint or demo_checkpoint()
    loaded = None
    if args.method in ("optimize", "adain"):
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
           encode_ms: float = float("nan")) -> None:
        h, w = result.image.shape[:2]
        if self.args.json_rows:
            row = {**self._base(uri, out), "status": "ok", "error_type": None, "error": None, "width": w, "height": h,
                   "content_loss": _finite_or_none(result.content_loss), "style_loss": _finite_or_none(result.style_loss),
                   "tv_loss": _finite_or_none(result.tv_loss), "stylize_ms": result.stylize_ms,
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


class MaskUnusable(Exception):
    """The --mask cannot be used (exit 2): the message names the mask and what is wrong."""


def _read_mask(args: ImageSettings, opener: Callable[[str], bytes], scale: int) -> np.ndarray | None:
    """The decoded --mask (weights or labels), or None; MaskUnusable when it cannot be used."""
    if args.mask is None:
        return None
    what = f"mask {args.mask}"
    if scale != 1:
        raise MaskUnusable(f"{what}: masks apply to same-size outputs; this network upscales by {scale}")
    try:
        mask = decode_mask(opener(args.mask), args.mask_mode, max_pixels=args.max_pixels)
        if args.mask_mode == "labels":
            check_labels(mask, 1)  # the CLI renders one style: label 1
    except FileNotFoundError:
        raise MaskUnusable(f"{what}: not found") from None
    except MaskError as exc:
        raise MaskUnusable(f"{what}: {exc}") from None
    except OSError as exc:
        raise MaskUnusable(f"{what}: cannot be read ({type(exc).__name__}: {exc})") from None
    return mask


def _read(uri: str, args: ImageSettings, opener: Callable[[str], bytes], scale: int = 1,
          mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The input at the size it is stylised, and the --mask's feathered weights at that size (or None)."""
    image = decode_image(opener(uri), max_pixels=args.max_pixels)  # (H, W, 3) uint8
    if mask is not None:
        try:
            check_size(mask, *image.shape[:2])  # against the file, before --max-side
        except MaskError as exc:
            raise MaskUnusable(f"mask {args.mask}: {exc} ({uri})") from None
    image = resize_max_side(image, args.max_side)
    check_output_pixels(*image.shape[:2], scale, args.max_pixels)  # --max-pixels bounds the output too
    if mask is None:
        return image, None
    fitted = fit_mask(mask, *image.shape[:2])
    return image, region_weights(fitted, args.mask_mode, args.mask_feather, 0, 1)


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


def main(args: ImageSettings) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 some inputs failed, 2 nothing ran)."""
    retain_freed_memory()
    opts = StorageOptions(endpoint_url=args.endpoint_url, region=args.region, profile=args.profile)
    opener: Callable[[str], bytes] = lambda uri: read_bytes(uri, opts)  # noqa: E731
    try:
        fmt, outputs = plan_outputs(args.inputs, args.output, args.format)
        engine = build_engine(args, opener)
        mask = _read_mask(args, opener, engine.scale)
    except (SetupError, MaskUnusable) as exc:
        _say(f"{PROG}: error: {one_line(str(exc))}", err=True)
        return 2
    report = _Reporter(args, engine)
    # Gatys runs one image at a time anyway; batching there would only hold more images in memory.
    chunk = 1 if args.method == "optimize" else args.batch_size
    pairs = list(zip(args.inputs, outputs))
    for start in range(0, len(pairs), chunk):
        ready: list[tuple[str, str, np.ndarray]] = []
        decode_ms: dict[str, float] = {}  # output -> read + decode ms (outputs are unique)
        weights: dict[str, np.ndarray | None] = {}  # output -> the mask's weights at the input's size
        for uri, out in pairs[start : start + chunk]:
            began = time.perf_counter()
            try:
                image, weights[out] = _read(uri, args, opener, engine.scale, mask)
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
                try:
                    evals[len(kept)] = prepare(image, engine.enhance.degradation, uri)
                    kept.append((uri, out, evals[len(kept)].degraded))
                except ValueError as exc:  # too small to downscale by the network's scale
                    report.error(uri, out, exc)
            ready = kept
            if not ready:
                continue
        try:
            results = _stylize(engine, [image for _, _, image in ready])
        except Exception as exc:  # noqa: BLE001 - a single image's failure
            results = [exc]
        for (uri, out, image), result, scores in zip(ready, results, evals):
            if isinstance(result, BaseException):
                report.error(uri, out, result)
                continue
            if weights.get(out) is not None:  # the output over the input, where the mask says
                result = replace(result, image=composite(image, result.image, weights[out]))
            began = time.perf_counter()
            try:
                write_bytes_atomic(out, encode_image(result.image, fmt, args.quality), opts)
            except (OSError, ValueError) as exc:
                report.error(uri, out, exc)
                continue
            report.ok(uri, out, result, scores.score(result.image) if scores is not None else None,
                      decode_ms[out], (time.perf_counter() - began) * 1000)
    if report.failed and not args.json_rows:
        _say(f"{PROG}: {report.failed} of {len(pairs)} input(s) failed", err=True)
    return 1 if report.failed else 0


def cli(argv: Sequence[str] | None = None) -> int:
    return main(parse_args(argv))
