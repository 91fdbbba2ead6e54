"""Settings of ``python -m jobs.stylize_video``: the image job's storage, Ray, actor, config and
error-budget options with the same names and meanings, plus the video options."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from .config import parse_with_config
from .settings import DEFAULT_MAX_ERROR_RATE, DEFAULT_OUTPUT, _fraction, _name_uri, default_run_id, demo_checkpoint

DEMO_MAX_SIDE = 256  # the embedded demo clip is made at this size anyway


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m jobs.stylize_video`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m jobs.stylize_video",
        description="Stylise videos (or numbered image sequences) with temporally stable style transfer on "
        "Ray: segments run on an actor pool, are joined per video with the input's audio copied, and written "
        "to {output}/{style}/{relative path}; one metrics row per video x style as Parquet under "
        "{output}/_metrics_video/run_id={run_id}/. With no --input/--sequence: an embedded demo clip made "
        "from scikit-image's sample photos, the demo style network, local Ray, output ./out.",
    )
    io_ = p.add_argument_group("input and output")
    src = io_.add_mutually_exclusive_group()
    src.add_argument("--input", help="prefix URI listed recursively for videos (.mp4 .mov .mkv .webm .avi .m4v, any "
                     "case), one video, or a manifest (.parquet/.csv with a `uri` column)")
    src.add_argument("--sequence", help="prefix URI of numbered image files (PNG 8/16-bit, JPEG); each directory's "
                     "numbered set (frame_0001.png ...) is one clip, written back as numbered frames")
    io_.add_argument("--output", default=DEFAULT_OUTPUT, help="output prefix URI (default: %(default)s)")
    io_.add_argument("--style", action="append", metavar="NAME=CHECKPOINT_URI",
                     help="a style network checkpoint; repeat for several. Default: demo=<shipped demo checkpoint>")
    io_.add_argument("--style-image", action="append", metavar="NAME=IMAGE_URI", default=[],
                     help="style-loss target for checkpoints that do not carry their style image")
    io_.add_argument("--run-id", help="run identifier (default: a UTC timestamp); rerunning an id resumes it: "
                     "finished segments and videos are kept, not redone")
    io_.add_argument("--max-side", type=int, default=None,
                     help=f"downscale frames whose longer side exceeds this (sizes stay even) (default: none; "
                     f"{DEMO_MAX_SIDE} for the demo)")
    io_.add_argument("--max-pixels", type=int, default=4096 * 2304,
                     help="refuse videos whose frames have more pixels than this (default: %(default)s, 4K UHD)")
    io_.add_argument("--max-duration", type=float, default=4 * 3600.0,
                     help="refuse videos longer than this many seconds (default: %(default)s)")
    io_.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL or AWS's own)")
    io_.add_argument("--region", help="S3 region (default: from the AWS environment/config)")
    io_.add_argument("--profile", help="AWS profile for credentials (default: the standard AWS chain)")

    v = p.add_argument_group("video")
    v.add_argument("--temporal", choices=["flow", "none"], default="flow",
                   help="flow: blend each stylised frame with the previous output warped along the input's optical "
                   "flow where it is reliable; none: per-frame stylisation (default: %(default)s)")
    v.add_argument("--temporal-weight", type=float, default=0.8,
                   help="share of the warped previous output where the flow is reliable, in [0, 1) (default: %(default)s)")
    v.add_argument("--segment-seconds", type=float, default=10.0,
                   help="segment length for parallel processing, cut at keyframes; 0: one segment per video "
                   "(default: %(default)s)")
    v.add_argument("--warmup-frames", type=int, default=12,
                   help="frames before each segment stylised for the temporal state, then dropped (default: %(default)s)")
    v.add_argument("--sequence-fps", type=float, default=24.0,
                   help="frame rate assumed for image sequences (segment length only) (default: %(default)s)")
    v.add_argument("--codec", choices=["h264", "hevc", "vp9"], default="h264", help="output codec (default: %(default)s)")
    v.add_argument("--crf", type=int, default=18, help="constant rate factor, lower is better (default: %(default)s)")
    v.add_argument("--preset", default="medium", help="x264/x265 speed preset (default: %(default)s)")
    v.add_argument("--flow-preset", choices=["ultrafast", "fast", "medium"], default="medium",
                   help="OpenCV DIS preset (default: %(default)s)")
    v.add_argument("--flow-side", type=int, default=960,
                   help="flow is computed at most at this long side and scaled up (default: %(default)s; 0 full size)")
    v.add_argument("--measure-side", type=int, default=320,
                   help="long side at which the warping error is measured; 0 turns the measure off (default: %(default)s)")

    m = p.add_argument_group("method and model")
    m.add_argument("--vgg", choices=["vgg16", "vgg19"], default="vgg16", help="loss network for metrics")
    m.add_argument("--vgg-weights", default=None, metavar="imagenet|PATH|URI|random:SEED",
                   help="loss network weights (default: imagenet; random:0 for the demo)")
    m.add_argument("--no-metrics", action="store_true", help="skip the content/style loss measurement")
    m.add_argument("--metrics-size", type=int, default=256, help="short side at which losses are measured (default: %(default)s)")
    m.add_argument("--loss-every", type=int, default=10, help="measure losses on every Nth frame (default: %(default)s)")
    m.add_argument("--strength", type=_fraction, default=1.0, help="style strength, 0 (content) .. 1 (full style)")
    m.add_argument("--preserve-color", action="store_true", help="keep the input's colours")
    m.add_argument("--device", default="auto", help="torch device in the actors: auto, cpu, cuda")
    m.add_argument("--no-bf16", action="store_true", help="on CUDA, run in float32 instead of bf16 autocast")
    m.add_argument("--no-channels-last", action="store_true", help="keep NCHW contiguous activations")

    r = p.add_argument_group("Ray")
    r.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    r.add_argument("--actors", type=int, default=0, help="segment actor pool size (default: one per GPU, else 1)")
    r.add_argument("--batch-size", type=int, default=8, help="frames per stylize batch (default: %(default)s)")
    r.add_argument("--gpus-per-actor", type=float, default=None, help="GPUs per actor (default: 1 with GPUs, else 0)")
    r.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs reserved per actor (default: %(default)s)")
    r.add_argument("--torch-threads", type=int, default=0, help="intra-op threads per CPU actor (default: cores / actors)")

    o = p.add_argument_group("outcome")
    o.add_argument("--max-error-rate", type=_fraction, default=DEFAULT_MAX_ERROR_RATE,
                   help="exit 1 when errors / rows exceed this (default: %(default)s)")
    o.add_argument("--contact-sheet", type=int, default=3, help="videos shown on the contact strip; 0 for none")
    o.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--config", metavar="FILE", help="YAML file with the same keys (underscores); flags override it")
    return p


@dataclass
class VideoSettings:
    """Resolved settings, as passed to Ray actors (picklable, no secrets)."""

    input: str
    output: str
    styles: dict[str, str]
    style_images: dict[str, str] = field(default_factory=dict)
    kind: str = "video"  # video | sequence
    run_id: str = ""
    max_side: int | None = None
    max_pixels: int = 4096 * 2304
    max_duration: float = 4 * 3600.0
    temporal: str = "flow"
    temporal_weight: float = 0.8
    segment_seconds: float = 10.0
    warmup_frames: int = 12
    sequence_fps: float = 24.0
    codec: str = "h264"
    crf: int = 18
    preset: str = "medium"
    flow_preset: str = "medium"
    flow_side: int = 960
    measure_side: int = 320
    vgg: str = "vgg16"
    vgg_weights: str = "imagenet"
    metrics: bool = True
    metrics_size: int = 256
    loss_every: int = 10
    strength: float = 1.0
    preserve_color: bool = False
    device: str = "auto"
    bf16: bool = True
    channels_last: bool = True
    address: str | None = None
    actors: int = 0
    batch_size: int = 8
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    torch_threads: int = 0
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    contact_sheet: int = 3
    quiet: bool = False
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    demo: bool = False

    @property
    def style_names(self) -> list[str]:
        return list(self.styles)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve(args: argparse.Namespace) -> VideoSettings:
    """Parsed flags -> settings; ``input`` is left empty for the demo (the job makes the clip)."""
    demo = args.input is None and args.sequence is None
    styles = dict(_name_uri(s) for s in (args.style or [])) or {"demo": demo_checkpoint()}
    style_images = dict(_name_uri(s) for s in (args.style_image or []))
    if set(style_images) - set(styles):
        raise SystemExit(f"--style-image names {sorted(set(style_images) - set(styles))} match no --style")
    if not 0.0 <= args.temporal_weight < 1.0:
        raise SystemExit(f"--temporal-weight must be within [0, 1), got {args.temporal_weight}")
    for flag, value in (("--crf", args.crf), ("--batch-size", args.batch_size), ("--loss-every", args.loss_every)):
        if value < (0 if flag == "--crf" else 1):
            raise SystemExit(f"{flag} must be positive, got {value}")
    if args.warmup_frames < 0 or args.segment_seconds < 0:
        raise SystemExit("--warmup-frames and --segment-seconds must not be negative")
    return VideoSettings(
        input=args.sequence or args.input or "", output=args.output, styles=styles, style_images=style_images,
        kind="sequence" if args.sequence else "video", run_id=args.run_id or default_run_id(),
        max_side=args.max_side if args.max_side is not None else (DEMO_MAX_SIDE if demo else None),
        max_pixels=args.max_pixels, max_duration=args.max_duration, temporal=args.temporal,
        temporal_weight=args.temporal_weight, segment_seconds=args.segment_seconds, warmup_frames=args.warmup_frames,
        sequence_fps=args.sequence_fps, codec=args.codec, crf=args.crf, preset=args.preset,
        flow_preset=args.flow_preset, flow_side=args.flow_side, measure_side=args.measure_side, vgg=args.vgg,
        vgg_weights=args.vgg_weights or ("random:0" if demo else "imagenet"), metrics=not args.no_metrics,
        metrics_size=args.metrics_size, loss_every=args.loss_every, strength=args.strength,
        preserve_color=args.preserve_color, device=args.device, bf16=not args.no_bf16,
        channels_last=not args.no_channels_last, address=args.address, actors=args.actors,
        batch_size=args.batch_size, gpus_per_actor=args.gpus_per_actor, cpus_per_actor=args.cpus_per_actor,
        torch_threads=args.torch_threads, max_error_rate=args.max_error_rate, contact_sheet=args.contact_sheet,
        quiet=args.quiet, endpoint_url=args.endpoint_url, region=args.region, profile=args.profile, demo=demo,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return parse_with_config(build_parser(), argv)
