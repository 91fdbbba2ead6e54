"""The batch job's settings: command-line flags, YAML config, and the resolved, picklable form."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources

from .config import parse_with_config

DEFAULT_OUTPUT = "./out"
DEFAULT_MAX_SIDE = 512  # for the embedded demo run only: sample photos go up to 3 MP
DEFAULT_MAX_ERROR_RATE = 0.01
# scikit-image's data folder holds one TIFF (multipage_rgb.tif) that Pillow cannot read: the demo shows
# it as an error row, and its budget allows that one file out of ~30.
DEMO_MAX_ERROR_RATE = 0.05
STYLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def demo_checkpoint() -> str:
    """Path of the demo style network shipped with the package."""
    return str(resources.files("stylize_core") / "assets" / "demo_mosaic.pth")


def sample_images_dir() -> str:
    """Real photographs (and a few odd files) that ship inside the scikit-image wheel."""
    import skimage.data

    return os.path.dirname(skimage.data.__file__)


def default_run_id() -> str:
    """Timestamped, sortable, unique enough for concurrent submits."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _name_uri(value: str) -> tuple[str, str]:
    name, sep, uri = value.partition("=")
    if not sep or not uri:
        raise argparse.ArgumentTypeError(f"expected NAME=URI, got {value!r}")
    if not STYLE_NAME.match(name):
        raise argparse.ArgumentTypeError(f"style name {name!r} must match {STYLE_NAME.pattern}")
    return name, uri


def _fraction(value: str) -> float:
    f = float(value)
    if not 0.0 <= f <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction within [0, 1], got {value}")
    return f


def _actor_range(value: str | int | tuple) -> tuple[int, int]:
    """"N" -> (N, N); "MIN:MAX" -> an autoscaling pool; 0 -> (0, 0), planned from the cluster."""
    if isinstance(value, tuple):
        return value
    text = str(value).strip()
    lo, sep, hi = text.partition(":")
    try:
        pair = (int(lo), int(hi)) if sep else (int(lo), int(lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN:MAX, got {text!r}") from None
    if pair[0] < 0 or pair[1] < pair[0] or (sep and pair[0] < 1):
        raise argparse.ArgumentTypeError(f"expected 0 <= N, or 1 <= MIN <= MAX, got {text!r}")
    return pair


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m jobs.stylize`` command line (flag names are a contract: keep them stable)."""
    p = argparse.ArgumentParser(
        prog="python -m jobs.stylize",
        description="Stylise every image under an input URI with one or more styles on a Ray cluster, "
        "writing images to {output}/{style}/{relative path} and per-image metrics as Parquet to "
        "{output}/_metrics/run_id={run_id}/. With no --input, runs the embedded demo: the sample "
        "photographs shipped with scikit-image, the demo style network, local Ray, output ./out.",
    )
    io_ = p.add_argument_group("input and output")
    io_.add_argument("--input", help="prefix URI (local path, file://, s3://, any fsspec URI) listed recursively "
                     "for image files, or a manifest (.parquet/.csv with a `uri` column). Default: the demo samples.")
    io_.add_argument("--output", default=DEFAULT_OUTPUT, help="output prefix URI (default: %(default)s)")
    io_.add_argument("--style", action="append", metavar="NAME=CHECKPOINT_URI",
                     help="a style network checkpoint (this project's or pytorch/examples' .pth); repeat for several "
                     "styles. In YAML: `style: {name: uri}`. Default: demo=<shipped demo checkpoint>.")
    io_.add_argument("--style-image", action="append", metavar="NAME=IMAGE_URI", default=[],
                     help="style image for NAME: the target of --method optimize, and the style-loss target for "
                     "checkpoints that do not carry their style image (pytorch/examples .pth files)")
    io_.add_argument("--run-id", help="run identifier (default: a UTC timestamp); rerunning an id overwrites its results")
    io_.add_argument("--format", choices=["jpeg", "png", "webp"], default="jpeg", help="output format (default: %(default)s)")
    io_.add_argument("--quality", type=int, default=90, help="JPEG/WebP quality 1-100 (default: %(default)s)")
    io_.add_argument("--max-side", type=int, default=None,
                     help="downscale inputs whose longer side exceeds this before stylising "
                     f"(default: none; {DEFAULT_MAX_SIDE} for the embedded demo)")
    io_.add_argument("--max-pixels", type=int, default=64_000_000,
                     help="refuse images with more pixels than this (decompression bombs) (default: %(default)s)")
    io_.add_argument("--skip-existing", action="store_true", help="skip input x style pairs whose output already exists")
    io_.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL or AWS's own)")
    io_.add_argument("--region", help="S3 region (default: from the AWS environment/config)")
    io_.add_argument("--profile", help="AWS profile for credentials (default: the standard AWS chain)")

    m = p.add_argument_group("method and model")
    m.add_argument("--method", choices=["feedforward", "optimize"], default="feedforward",
                   help="feedforward: the style networks (Johnson et al.); optimize: per-image Gatys optimisation "
                   "against --style-image (slow; for small, high-value sets)")
    m.add_argument("--vgg", choices=["vgg16", "vgg19"], default=None,
                   help="loss network for metrics and optimisation (default: vgg16 for metrics, vgg19 for optimize)")
    m.add_argument("--vgg-weights", default=None, metavar="imagenet|PATH|URI|random:SEED",
                   help="loss network weights: torchvision's ImageNet weights from its cache, a state dict path/URI, "
                   "or random:SEED (demos and tests). Default: imagenet (random:0 for the embedded demo)")
    m.add_argument("--no-metrics", action="store_true", help="skip the content/style/TV loss computation")
    m.add_argument("--metrics-size", type=int, default=256, help="short side at which losses are measured (default: %(default)s)")
    m.add_argument("--strength", type=_fraction, default=1.0, help="style strength, 0 (content) .. 1 (full style)")
    m.add_argument("--preserve-color", action="store_true", help="keep the input's colours (luminance-only transfer)")
    m.add_argument("--optimize-steps", type=int, default=100, help="optimize: steps per pyramid level (default: %(default)s)")
    m.add_argument("--optimize-levels", type=int, default=2, help="optimize: coarse-to-fine pyramid levels (default: %(default)s)")
    m.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs", help="optimize: optimiser (default: %(default)s)")
    m.add_argument("--device", default="auto", help="torch device in the actors: auto (CUDA when present), cpu, cuda")
    m.add_argument("--no-bf16", action="store_true", help="on CUDA, run in float32 instead of bf16 autocast")
    m.add_argument("--no-channels-last", action="store_true", help="keep NCHW contiguous activations (default: channels_last, faster on CUDA and on CPU)")

    r = p.add_argument_group("Ray")
    r.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    r.add_argument("--actors", type=_actor_range, default=(0, 0), metavar="N|MIN:MAX",
                   help="stylize actor pool: N actors, or MIN:MAX for Ray Data's autoscaling pool (default: one per "
                   "GPU; with --gpus-per-actor and no GPUs in the cluster yet, 1:8 so GPU workers that start at zero "
                   "scale up; on CPU-only clusters one per node, or see --cores-per-actor)")
    r.add_argument("--cores-per-actor", type=int, default=0,
                   help="CPU-only clusters: one actor per this many cores of each node, each running that many torch "
                   "threads (default: 0, one actor per node using all its cores)")
    r.add_argument("--batch-size", type=int, default=8, help="images per stylize batch (default: %(default)s)")
    r.add_argument("--gpus-per-actor", type=float, default=None,
                   help="GPUs per actor, fractional allowed (default: 1 when the cluster has GPUs, else 0)")
    r.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs reserved per actor (default: %(default)s)")
    r.add_argument("--torch-threads", type=int, default=0,
                   help="intra-op threads per CPU actor (default: the node's cores / actors)")
    r.add_argument("--read-batch-size", type=int, default=16, help="images per read/decode task batch (default: %(default)s)")
    r.add_argument("--stages", choices=["auto", "split", "fused"], default="auto",
                   help="split: decode and encode in CPU tasks beside the actor pool; fused: inside the actors. "
                   "auto (default): split for GPU actors, fused for CPU actors, whose cores those tasks would share")

    o = p.add_argument_group("outcome")
    o.add_argument("--max-error-rate", type=_fraction, default=None,
                   help=f"exit non-zero when errors / rows exceed this (default: {DEFAULT_MAX_ERROR_RATE}; "
                   f"{DEMO_MAX_ERROR_RATE} for the embedded demo)")
    o.add_argument("--contact-sheet", type=int, default=6, help="inputs shown on the contact sheet; 0 for none")
    o.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--config", metavar="FILE", help="YAML file with the same keys (underscores); flags override it")
    return p


@dataclass
class JobSettings:
    """Resolved settings, as passed to Ray workers (picklable, no secrets)."""

    input: str
    output: str
    styles: dict[str, str]
    style_images: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    format: str = "jpeg"
    quality: int = 90
    max_side: int | None = None
    max_pixels: int = 64_000_000
    skip_existing: bool = False
    method: str = "feedforward"
    vgg: str = "vgg16"
    vgg_weights: str = "imagenet"
    metrics: bool = True
    metrics_size: int = 256
    strength: float = 1.0
    preserve_color: bool = False
    optimize_steps: int = 100
    optimize_levels: int = 2
    optimizer: str = "lbfgs"
    device: str = "auto"
    bf16: bool = True
    channels_last: bool = True
    address: str | None = None
    actors: int = 0  # pool size, or its minimum when max_actors is larger; 0: planned from the cluster
    max_actors: int = 0
    cores_per_actor: int = 0
    batch_size: int = 8
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    torch_threads: int = 0
    read_batch_size: int = 16
    stages: str = "auto"
    max_error_rate: float = 0.01
    contact_sheet: int = 6
    quiet: bool = False
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    demo: bool = False
    # Fault injection for tests: the first stylize batch to see this path missing creates it and kills
    # its actor process, so a test can check that Ray's retry loses and duplicates nothing.
    crash_once_marker: str | None = None

    @property
    def style_names(self) -> list[str]:
        """Styles of this run: the checkpoints, plus (optimize) styles given only as a style image."""
        extra = [n for n in self.style_images if n not in self.styles] if self.method == "optimize" else []
        return list(self.styles) + extra

    def to_dict(self) -> dict:
        return asdict(self)


def resolve(args: argparse.Namespace) -> JobSettings:
    """Turn parsed flags into settings, filling the embedded demo defaults when --input is absent."""
    demo = args.input is None
    styles = dict(_name_uri(s) for s in (args.style or []))
    style_images = dict(_name_uri(s) for s in (args.style_image or []))
    if not styles and not (args.method == "optimize" and style_images):
        styles = {"demo": demo_checkpoint()}
    if args.method == "feedforward" and set(style_images) - set(styles):
        raise SystemExit(f"--style-image names {sorted(set(style_images) - set(styles))} match no --style")
    if args.quality < 1 or args.quality > 100:
        raise SystemExit(f"--quality must be within 1..100, got {args.quality}")
    return JobSettings(
        input=sample_images_dir() if demo else args.input,
        output=args.output,
        styles=styles,
        style_images=style_images,
        run_id=args.run_id or default_run_id(),
        format=args.format,
        quality=args.quality,
        max_side=args.max_side if args.max_side is not None else (DEFAULT_MAX_SIDE if demo else None),
        max_pixels=args.max_pixels,
        skip_existing=args.skip_existing,
        method=args.method,
        vgg=args.vgg or ("vgg19" if args.method == "optimize" else "vgg16"),
        vgg_weights=args.vgg_weights or ("random:0" if demo else "imagenet"),
        metrics=not args.no_metrics,
        metrics_size=args.metrics_size,
        strength=args.strength,
        preserve_color=args.preserve_color,
        optimize_steps=args.optimize_steps,
        optimize_levels=args.optimize_levels,
        optimizer=args.optimizer,
        device=args.device,
        bf16=not args.no_bf16,
        channels_last=not args.no_channels_last,
        address=args.address,
        actors=_actor_range(args.actors)[0],
        max_actors=_actor_range(args.actors)[1],
        cores_per_actor=args.cores_per_actor,
        batch_size=args.batch_size,
        gpus_per_actor=args.gpus_per_actor,
        cpus_per_actor=args.cpus_per_actor,
        torch_threads=args.torch_threads,
        read_batch_size=args.read_batch_size,
        stages=args.stages,
        max_error_rate=args.max_error_rate if args.max_error_rate is not None
        else (DEMO_MAX_ERROR_RATE if demo else DEFAULT_MAX_ERROR_RATE),
        contact_sheet=args.contact_sheet,
        quiet=args.quiet,
        endpoint_url=args.endpoint_url,
        region=args.region,
        profile=args.profile,
        demo=demo,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return parse_with_config(build_parser(), argv)
