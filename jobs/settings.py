"""The batch job's settings: one pydantic model for flags and YAML config, resolved and picklable."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import secrets
from collections.abc import Sequence
from importlib import resources
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator, model_validator

from . import cli_settings
from .cli_settings import option, pairs_to_mapping, parse_selection

DEFAULT_OUTPUT = "./out"
DEFAULT_MAX_SIDE = 512  # for the embedded demo run only: sample photos go up to 3 MP
DEFAULT_MAX_ERROR_RATE = 0.01
# scikit-image's data folder holds one TIFF (multipage_rgb.tif) that Pillow cannot read: the demo shows
# it as an error row, and its budget allows that one file out of ~30.
DEMO_MAX_ERROR_RATE = 0.05
# stylize_core.backends.BACKEND_SPECS, spelled out so the driver validates without importing torch (a
# test keeps the two equal)
BackendSpec = Literal["eager", "compile", "onnxruntime", "openvino", "eager:bf16", "compile:bf16", "openvino:bf16"]
STYLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def demo_checkpoint(slim: bool = False) -> str:
    """Path of a demo style network shipped with the package: the full pytorch/examples-sized one, or
    the slim one (width 0.25, same recipe; see stylize_core/assets/README.md)."""
    return str(resources.files("stylize_core") / "assets" / ("demo_mosaic_slim.pth" if slim else "demo_mosaic.pth"))


def sample_images_dir() -> str:
    """Real photographs (and a few odd files) that ship inside the scikit-image wheel."""
    import skimage.data

    return os.path.dirname(skimage.data.__file__)


def default_run_id() -> str:
    """Timestamped, sortable, unique enough for concurrent submits."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _styles(value: Any) -> Any:
    return pairs_to_mapping(value, "NAME=URI")


_IO, _MODEL, _RAY, _OUTCOME = "input and output", "method and model", "Ray", "outcome"
StyleMap = Annotated[dict[str, str], BeforeValidator(_styles)]


def _mixes(value: Any) -> Any:
    value = pairs_to_mapping(value, "NAME=SPEC") if not isinstance(value, dict) else value
    return {name: parse_selection(spec) for name, spec in value.items()} if isinstance(value, dict) else value


MixMap = Annotated[dict[str, int | str | dict[int | str, float]], BeforeValidator(_mixes)]


class RunSettings(BaseModel):
    """What every batch job shares, with the same names and meanings: styles, outputs and storage,
    the loss network, devices, the Ray actor pool and the error budget. Picklable; passed to Ray workers."""

    model_config = ConfigDict(extra="forbid")

    output: str = option(DEFAULT_OUTPUT, "output prefix URI", group=_IO, min_length=1)
    styles: StyleMap = option({}, "a style network checkpoint (this project's or pytorch/examples' .pth); repeat for "
                              "several styles. In YAML: `style: {name: uri}`. Default: demo=<shipped demo checkpoint>",
                              flag="--style", metavar="NAME=CHECKPOINT_URI", group=_IO)
    style_images: StyleMap = option({}, "style image for NAME: the target of --method optimize, and the style-loss "
                                    "target for checkpoints that do not carry their style image (pytorch/examples files)",
                                    flag="--style-image", metavar="NAME=IMAGE_URI", group=_IO)
    run_id: str = option("", "run identifier (default: a UTC timestamp); rerunning an id overwrites its results",
                         group=_IO, pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")
    max_side: int | None = option(None, "downscale inputs whose longer side exceeds this before stylising "
                                  f"(default: none; {DEFAULT_MAX_SIDE} for the embedded demo)", group=_IO, ge=16)
    max_pixels: int = option(64_000_000, "refuse images with more pixels than this (decompression bombs)", group=_IO, ge=1)
    endpoint_url: str | None = option(None, "S3 endpoint (default: AWS_ENDPOINT_URL or AWS's own)", group=_IO)
    region: str | None = option(None, "S3 region (default: from the AWS environment/config)", group=_IO)
    profile: str | None = option(None, "AWS profile for credentials (default: the standard AWS chain)", group=_IO)
    vgg: str | None = option(
        None, "loss network for metrics and optimisation: vgg16, vgg19 or texture[:SEED] (random filters, nothing to "
        "download). Default: vgg16 for metrics, vgg19 for optimize; texture for the embedded demo", group=_MODEL,
        pattern=r"^(vgg16|vgg19|texture(:\d+)?)$")
    vgg_weights: str | None = option(
        None, "loss network weights: torchvision's ImageNet weights from its cache, a state dict path/URI, or "
        "random:SEED (demos and tests). Default: imagenet (random:0 for the embedded demo)",
        metavar="imagenet|PATH|URI|random:SEED", group=_MODEL, min_length=1)
    metrics: bool = option(True, "skip the content/style/TV loss computation", negate="--no-metrics", group=_MODEL)
    metrics_size: int = option(256, "short side at which losses are measured (never upscaled: smaller images are "
                               "measured at their own size)", group=_MODEL, ge=16)
    strength: float = option(1.0, "style strength, 0 (content) .. 1 (full style)", group=_MODEL, ge=0, le=1)
    preserve_color: bool = option(False, "keep the input's colours (luminance-only transfer)", group=_MODEL)
    device: str = option("auto", "torch device in the actors: auto (CUDA when present), cpu, cuda, cuda:N",
                         group=_MODEL, pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    bf16: bool = option(True, "on CUDA, run in float32 instead of bf16 autocast", negate="--no-bf16", group=_MODEL)
    channels_last: bool = option(True, "keep NCHW contiguous activations (default: channels_last, faster on CUDA and "
                                 "on CPU)", negate="--no-channels-last", group=_MODEL)
    address: str | None = option(None, "Ray cluster address (default: RAY_ADDRESS, else a local Ray)", group=_RAY)
    actors: int = option(0, "stylize actor pool: N actors, or MIN:MAX for Ray Data's autoscaling pool (default: one "
                         "per GPU; with --gpus-per-actor and no GPUs in the cluster yet, 1:8 so GPU workers that start "
                         "at zero scale up; on CPU-only clusters one per node, or see --cores-per-actor)",
                         metavar="N|MIN:MAX", group=_RAY, ge=0)
    max_actors: int = option(0, cli=False)  # the pool's maximum (from --actors MIN:MAX); 0: planned
    cores_per_actor: int = option(0, "CPU-only clusters: one actor per this many cores of each node, each running "
                                  "that many torch threads (default: 0, one actor per node using all its cores)",
                                  group=_RAY, ge=0)
    batch_size: int | None = option(None, "rows per stylize actor call, the window the Stylizer packs into shape "
                                    "buckets (default: 64 for GPU actors, 8 for CPU actors)", group=_RAY, ge=1, le=4096)
    gpus_per_actor: float | None = option(None, "GPUs per actor, fractional allowed (default: 1 when the cluster has "
                                          "GPUs, else 0)", group=_RAY, ge=0)
    cpus_per_actor: float = option(1.0, "CPUs reserved per actor", group=_RAY, ge=0)
    torch_threads: int = option(0, "intra-op threads per CPU actor (default: the node's cores / actors)", group=_RAY, ge=0)
    max_error_rate: float | None = option(
        None, f"exit 1 when errors / rows exceed this (default: {DEFAULT_MAX_ERROR_RATE}; {DEMO_MAX_ERROR_RATE} for "
        "the embedded demo)", group=_OUTCOME, ge=0, le=1)
    contact_sheet: int = option(6, "inputs shown on the contact sheet; 0 for none", group=_OUTCOME, ge=0, le=100)
    quiet: bool = option(False, "no progress bars", group=_OUTCOME)
    demo: bool = option(False, cli=False)

    @field_validator("styles", "style_images")
    @classmethod
    def _style_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, uri in value.items():
            if not STYLE_NAME.match(name):
                raise ValueError(f"style name {name!r} must match {STYLE_NAME.pattern}")
            if not uri:
                raise ValueError(f"style {name!r} has an empty URI")
        return value

    @model_validator(mode="before")
    @classmethod
    def _actor_range(cls, data: Any) -> Any:
        """``--actors MIN:MAX`` -> actors=MIN, max_actors=MAX (an autoscaling pool)."""
        if isinstance(data, dict) and isinstance(data.get("actors"), str) and ":" in data["actors"]:
            lo, _, hi = data["actors"].partition(":")
            try:
                low, high = int(lo), int(hi)
            except ValueError:
                raise ValueError(f"--actors expects N or MIN:MAX, got {data['actors']!r}") from None
            if not 1 <= low <= high:
                raise ValueError(f"--actors MIN:MAX needs 1 <= MIN <= MAX, got {data['actors']!r}")
            data = {**data, "actors": low, "max_actors": high}
        return data

    @property
    def style_names(self) -> list[str]:
        return list(self.styles)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (not re-validated: for values the caller derived from valid ones)."""
        return self.model_copy(update=changes)


class JobSettings(RunSettings):
    """The batch job's settings: flags and YAML validated alike; picklable, passed to Ray workers.

    With no ``input``, the embedded demo: scikit-image's sample photos, the demo style network,
    ``random:0`` VGG weights, 512 px max side and a 5 % error budget (unless given).
    """

    input: str | None = option(None, "prefix URI (local path, file://, s3://, any fsspec URI) listed recursively for "
                               "image files, or a manifest (.parquet/.csv with a `uri` column). Default: the demo samples",
                               group=_IO, min_length=1)
    mixes: MixMap = option({}, "which style of a multi-style checkpoint NAME renders: an index or a style name "
                           "(`--mix warm=3`), or a blend with weights normalised to sum to one (`--mix "
                           "warm=3:0.5,wave:0.5`); a blend is a style of its own (its own model id). In YAML: "
                           "`mix: {warm: {3: 0.5, wave: 0.5}}`. `python -m jobs.styles CHECKPOINT` lists the styles",
                           flag="--mix", metavar="NAME=SPEC", group=_IO)
    format: Literal["jpeg", "png", "webp"] = option("jpeg", "output format", group=_IO)
    quality: int = option(90, "JPEG/WebP quality 1-100", group=_IO, ge=1, le=100)
    skip_existing: bool = option(False, "skip input x style pairs whose output already exists", group=_IO)
    method: Literal["feedforward", "optimize"] = option(
        "feedforward", "feedforward: the style networks (Johnson et al.); optimize: per-image Gatys optimisation "
        "against --style-image (slow; for small, high-value sets)", group=_MODEL)
    metrics_sample: float = option(0.25, "fraction of inputs whose losses are measured, chosen by a hash of the input "
                                   "URI (the same inputs on reruns and for every style); the others have null losses "
                                   "and measured=false. `--metrics-size 256 --metrics-sample 1` is the full measure",
                                   group=_MODEL, ge=0, le=1)
    optimize_steps: int = option(100, "optimize: steps per pyramid level", group=_MODEL, ge=1)
    optimize_levels: int = option(2, "optimize: coarse-to-fine pyramid levels", group=_MODEL, ge=1, le=8)
    optimizer: Literal["lbfgs", "adam"] = option("lbfgs", "optimize: optimiser", group=_MODEL)
    backend: BackendSpec = option(
        "eager", "where CPU actors run the style networks: PyTorch eager, torch.compile, onnxruntime or OpenVINO "
        "(these two need `pip install 'stylize[cpu]'`); NAME:bf16 runs in bfloat16 where the CPU has it. See README "
        "'CPU backends' for measured speeds. GPU actors always run PyTorch", group=_MODEL)
    read_batch_size: int = option(16, "images per read/decode task batch", group=_RAY, ge=1)
    max_actor_crashes: int = option(
        2, "times a batch may kill its stylize actor (a sticky CUDA error makes the actor exit so Ray replaces it) "
        "before its images run one at a time; an image that kills it more often becomes a stylize_error row",
        group=_RAY, ge=0, le=100)
    stages: Literal["auto", "split", "fused"] = option(
        "auto", "split: decode and encode in CPU tasks beside the actor pool; fused: inside the actors. auto: split for "
        "GPU actors, fused for CPU actors, whose cores those tasks would share", group=_RAY)

    @model_validator(mode="after")
    def _fill_defaults(self) -> JobSettings:
        """Defaults that depend on other options (the demo, the method)."""
        self.demo = self.input is None
        if self.demo:
            self.input = sample_images_dir()
        if not self.styles and not (self.method == "optimize" and self.style_images):
            # both demo networks, so the contact sheet shows the full and the slim one side by side
            self.styles = {"demo": demo_checkpoint(), "demo_slim": demo_checkpoint(slim=True)}
        if set(self.mixes) - set(self.styles):
            raise ValueError(f"--mix names {sorted(set(self.mixes) - set(self.styles))} match no --style")
        if self.method == "feedforward" and set(self.style_images) - set(self.styles):
            raise ValueError(f"--style-image names {sorted(set(self.style_images) - set(self.styles))} match no --style")
        self.run_id = self.run_id or default_run_id()
        if self.max_side is None and self.demo:
            self.max_side = DEFAULT_MAX_SIDE
        self.vgg = self.vgg or ("texture" if self.demo else "vgg19" if self.method == "optimize" else "vgg16")
        self.vgg_weights = self.vgg_weights or ("random:0" if self.demo else "imagenet")
        if self.max_error_rate is None:
            self.max_error_rate = DEMO_MAX_ERROR_RATE if self.demo else DEFAULT_MAX_ERROR_RATE
        self.max_actors = max(self.max_actors, self.actors)
        return self

    @property
    def style_names(self) -> list[str]:
        """Styles of this run: the checkpoints, plus (optimize) styles given only as a style image."""
        extra = [n for n in self.style_images if n not in self.styles] if self.method == "optimize" else []
        return list(self.styles) + extra


DESCRIPTION = (
    "Stylise every image under an input URI with one or more styles on a Ray cluster, writing images to "
    "{output}/{style}/{relative path} and per-image metrics as Parquet to {output}/_metrics/run_id={run_id}/. "
    "With no --input, runs the embedded demo: the sample photographs shipped with scikit-image, the demo style "
    "network, local Ray, output ./out.\n\nexit status: 0 error rate within --max-error-rate; 1 above it; 2 the "
    "job could not run (one line on stderr says why)."
)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m jobs.stylize`` command line (flag names are a contract: keep them stable)."""
    return cli_settings.build_parser(JobSettings, "python -m jobs.stylize", DESCRIPTION)


def parse_args(argv: Sequence[str] | None = None) -> JobSettings:
    """Validated settings from flags and ``--config``; exits 2 with one line when they are invalid."""
    return cli_settings.parse(JobSettings, argv, build_parser())
