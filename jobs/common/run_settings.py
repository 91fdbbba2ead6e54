"""What every program's settings share: RunSettings (styles, storage, loss network, devices, actor pool,
error budget), its defaults, and the demo's shipped assets."""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, field_validator, model_validator

from jobs.common.cli_settings import option, pairs_to_mapping, parse_bytes, parse_selection
from jobs.common.storage import StorageOptions
from stylize_core.demo_assets import demo_adain as demo_adain_checkpoint  # torch-free
from stylize_core.demo_assets import demo_predictor as demo_predictor_checkpoint
from stylize_core.demo_assets import demo_style_network as demo_checkpoint  # noqa: F401  (the programs import it from here)

DEFAULT_OUTPUT = "./out"
DEFAULT_MAX_SIDE = 512  # for the embedded demo run only: sample photos go up to 3 MP
DEFAULT_MAX_ERROR_RATE = 0.01
# scikit-image's data folder holds one TIFF (multipage_rgb.tif) that Pillow cannot read: the demo shows
# it as an error row, and its budget allows that one file out of ~30.
DEMO_MAX_ERROR_RATE = 0.05
# stylize_core.backends.BACKEND_SPECS, spelled out so the driver validates without importing torch (a
# test keeps the two equal)
BackendSpec = Literal["eager", "compile", "onnxruntime", "openvino", "eager:bf16", "compile:bf16", "openvino:bf16"]
# --encoder alone: pytorch-AdaIN's encoder needs its decoder (exit 2). Without both, the shipped demo is used.
ADAIN_ENCODER_ALONE = ("--encoder needs --decoder: pass pytorch-AdaIN's --encoder vgg_normalised.pth --decoder "
                       "decoder.pth (github.com/naoto0804/pytorch-AdaIN, models/), or neither for the shipped demo model")
ADAIN_TILEABLE = ("--tileable is for style networks (--checkpoint/--style, --method predict): AdaIN's encoder and "
                  "decoder pad by reflection, so their output has seams where copies meet")
STYLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def sample_images_dir() -> str:
    """Real photographs (and a few odd files) that ship inside the scikit-image wheel."""
    import skimage.data

    return os.path.dirname(skimage.data.__file__)


def default_run_id() -> str:
    """Timestamped, sortable, unique enough for concurrent submits."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _styles(value: Any) -> Any:
    return pairs_to_mapping(value, "NAME=URI")


GROUP_IO, GROUP_MODEL, GROUP_RAY, GROUP_OUTCOME = "input and output", "method and model", "Ray", "outcome"
StyleMap = Annotated[dict[str, str], BeforeValidator(_styles)]


def _mixes(value: Any) -> Any:
    value = pairs_to_mapping(value, "NAME=SPEC") if not isinstance(value, dict) else value
    return {name: parse_selection(spec) for name, spec in value.items()} if isinstance(value, dict) else value


MixMap = Annotated[dict[str, int | str | dict[int | str, float]], BeforeValidator(_mixes)]
MemorySize = Annotated[int, BeforeValidator(parse_bytes)]
# stylize_core.tiling.min_tile(), spelled out so settings validate without importing torch (a test keeps them equal)
MIN_TILE_SIDE = 192


def _tile_side(value: Any) -> Any:
    if isinstance(value, int) and 0 < value < MIN_TILE_SIDE:
        raise ValueError(f"a tile side must be 0 (automatic) or at least {MIN_TILE_SIDE} pixels, got {value}")
    return value


TileSide = Annotated[int, AfterValidator(_tile_side)]
# stylize_core.tiling.STATS_MODES less "accumulate" (library only: measured worse than either), plus
# auto (stylize_core.tiled_forward)
TileStats = Literal["auto", "exact", "thumbnail"]


def background_rgb(value: str) -> tuple[int, int, int]:
    """An RGB triple from a colour name or #rrggbb (Pillow's colour names: white, black, #808080, ...)."""
    from PIL import ImageColor  # Pillow only: no torch

    rgb = ImageColor.getrgb(value)
    return (rgb[0], rgb[0], rgb[0]) if len(rgb) < 3 else (rgb[0], rgb[1], rgb[2])


def _background(value: str) -> str:
    try:
        background_rgb(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a colour: a name (white, black, ...) or #rrggbb") from None
    return value


Background = Annotated[str, AfterValidator(_background)]


# The colour transparent inputs are flattened on in 8-bit formats without alpha (the image job, the local CLI).
def background_option(group: str | None = None) -> Any:
    return option("white", "the colour inputs with an alpha channel are flattened on when the output format has no "
                  "alpha (jpeg): a name or #rrggbb; png, webp and tiff keep the alpha channel (docs/formats.md)",
                  metavar="COLOUR", group=group, min_length=1)


# Tiling options, declared once for every program that stylises (RunSettings, the local CLI).
def tile_option(group: str | None = None) -> Any:
    return option(0, "stylise images with a side above N in overlapping tiles of N x N pixels that share one set "
                  "of normalisation statistics (tests and tuning; rounded down to a multiple of 4, at least "
                  f"{MIN_TILE_SIDE}). Default 0: only images whose activations exceed --max-memory are tiled, with "
                  "the largest tiles that fit", metavar="N", group=group, ge=0)


def max_memory_option(group: str | None = None) -> Any:
    return option(0, "activation memory one forward pass of a feed-forward network may take, in bytes or e.g. "
                  "2GiB; larger images run in tiles (docs/benchmarks_large.md). Default: half the GPU's free "
                  "memory, 512MiB on CPU", metavar="SIZE", group=group, ge=0)


def tile_stats_option(group: str | None = None) -> Any:
    return option("auto", "where tiles' normalisation statistics come from: exact (the whole image's, layer by layer "
                  "over the tiles: the output matches one untiled pass; slow when the tiles' states do not fit "
                  "--max-memory), thumbnail (a downscaled copy: several grey levels off for networks whose "
                  "texture changes with scale) or auto (exact when it costs little, else thumbnail). "
                  "docs/benchmarks_large.md", group=group)


def metrics_ratio_option(group: str | None = None) -> Any:
    return option(False, "also measure style_stat_ratio (the output's statistics distance to the style over the "
                  "input's): the input's loss-network pass then goes on to the style layers, ~1.6x the metrics' "
                  "time (docs/reference/metrics.md)", group=group)


def tileable_option(group: str | None = None) -> Any:
    return option(False, "seamless output that repeats without a seam in both axes (game textures): circular "
                  "padding in the network and wrap-around tiles", group=group)


class RunSettings(BaseModel):
    """What every batch job shares, with the same names and meanings: styles, outputs and storage,
    the loss network, devices, the Ray actor pool and the error budget. Picklable; passed to Ray workers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: str = option(DEFAULT_OUTPUT, "output prefix URI", group=GROUP_IO, min_length=1)
    styles: StyleMap = option({}, "a style network checkpoint (this project's or pytorch/examples' .pth); repeat for "
                              "several styles. In YAML: `style: {name: uri}`. Default: demo=<shipped demo network> "
                              "and demo_slim=<its slim twin>",
                              flag="--style", metavar="NAME=CHECKPOINT_URI", group=GROUP_IO)
    style_images: StyleMap = option({}, "style image for NAME: the target of --method optimize, a style of --method "
                                    "adain, and the style-loss target for checkpoints that do not carry their style "
                                    "image (pytorch/examples files)",
                                    flag="--style-image", metavar="NAME=IMAGE_URI", group=GROUP_IO)
    run_id: str = option("", "run identifier (default: a UTC timestamp); rerunning an id overwrites its results",
                         group=GROUP_IO, pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")
    max_side: int | None = option(None, "downscale inputs whose longer side exceeds this before stylising "
                                  f"(default: none; {DEFAULT_MAX_SIDE} for the embedded demo)", group=GROUP_IO, ge=16)
    max_pixels: int = option(64_000_000, "refuse images with more pixels than this (decompression bombs)", group=GROUP_IO, ge=1)
    endpoint_url: str | None = option(None, "S3 endpoint (default: AWS_ENDPOINT_URL or AWS's own)", group=GROUP_IO)
    region: str | None = option(None, "S3 region (default: from the AWS environment/config)", group=GROUP_IO)
    profile: str | None = option(None, "AWS profile for credentials (default: the standard AWS chain)", group=GROUP_IO)
    method: Literal["feedforward", "optimize", "adain", "predict"] = option(
        "feedforward", "feedforward: the style networks (Johnson et al.); optimize: per-image Gatys optimisation "
        "against --style-image (slow; for small, high-value sets); adain: any --style-image through pytorch-AdaIN's "
        "--encoder/--decoder, or the shipped demo model without them (docs/methods/adain.md); predict: any --style-image "
        "through a style-predicting network, --predictor or the shipped demo (docs/methods/predict.md)", group=GROUP_MODEL)
    encoder: str | None = option(None, "adain: the encoder, pytorch-AdaIN's vgg_normalised.pth (path or URI)",
                                 metavar="URI", group=GROUP_MODEL, min_length=1)
    decoder: str | None = option(None, "adain: the decoder, pytorch-AdaIN's decoder.pth (with --encoder), or this "
                                 "project's one-file AdaIN checkpoint (alone); default: the shipped demo model", metavar="URI", group=GROUP_MODEL,
                                 min_length=1)
    predictor: str | None = option(None, "predict: the style predictor's one-file checkpoint (path or URI); "
                                   "default: the shipped demo model", metavar="URI", group=GROUP_MODEL, min_length=1)
    alpha: float = option(1.0, "adain: style strength in feature space, 0 (the decoded content) .. 1 (full style); "
                          "predict: the same in the style embedding (0: the training photos' mean embedding); "
                          "part of each style's identity", group=GROUP_MODEL, ge=0, le=1)
    mixes: MixMap = option({}, "which style of a multi-style checkpoint NAME renders: an index or a style name "
                           "(`--mix warm=3`), or a blend with weights normalised to sum to one (`--mix "
                           "warm=3:0.5,wave:0.5`); a blend is a style of its own (its own model id). In YAML: "
                           "`mix: {warm: {3: 0.5, wave: 0.5}}`. `python -m jobs.styles CHECKPOINT` lists the styles. "
                           "With --method adain or predict, a new style interpolating --style-image styles: "
                           "`--mix both=wave:0.5,ink:0.5`",
                           flag="--mix", metavar="NAME=SPEC", group=GROUP_IO)
    optimize_steps: int = option(100, "optimize: steps per pyramid level", group=GROUP_MODEL, ge=1)
    optimize_levels: int = option(2, "optimize: coarse-to-fine pyramid levels", group=GROUP_MODEL, ge=1, le=8)
    optimizer: Literal["lbfgs", "adam"] = option("lbfgs", "optimize: optimiser", group=GROUP_MODEL)
    backend: BackendSpec = option(
        "eager", "where CPU actors run the style networks: PyTorch eager, torch.compile, onnxruntime or OpenVINO "
        "(these two need `pip install 'stylize[cpu]'`); NAME:bf16 runs in bfloat16 where the CPU has it. See README "
        "'CPU backends' for measured speeds. GPU actors always run PyTorch", group=GROUP_MODEL)
    vgg: str | None = option(
        None, "loss network for metrics and optimisation: vgg16, vgg19 or texture[:SEED] (random filters, nothing to "
        "download). Default: vgg16 for metrics, vgg19 for optimize; texture for the embedded demo", group=GROUP_MODEL,
        pattern=r"^(vgg16|vgg19|texture(:\d+)?)$")
    vgg_weights: str | None = option(
        None, "loss network weights: torchvision's ImageNet weights from its cache, a state dict path/URI, or "
        "random:SEED (demos and tests). Default: imagenet (random:0 for the embedded demo)",
        metavar="imagenet|PATH|URI|random:SEED", group=GROUP_MODEL, min_length=1)
    metrics: bool = option(True, "skip the content/style/TV loss computation", negate="--no-metrics", group=GROUP_MODEL)
    metrics_size: int = option(256, "short side at which losses are measured (never upscaled: smaller images are "
                               "measured at their own size)", group=GROUP_MODEL, ge=16)
    metrics_ratio: bool = metrics_ratio_option(GROUP_MODEL)
    strength: float = option(1.0, "style strength, 0 (content) .. 1 (full style)", group=GROUP_MODEL, ge=0, le=1)
    preserve_color: bool = option(False, "keep the input's colours (luminance-only transfer)", group=GROUP_MODEL)
    device: str = option("auto", "torch device in the actors: auto (CUDA when present), cpu, cuda, cuda:N",
                         group=GROUP_MODEL, pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    bf16: bool = option(True, "on CUDA, run in float32 instead of bf16 autocast", negate="--no-bf16", group=GROUP_MODEL)
    channels_last: bool = option(True, "keep NCHW contiguous activations (default: channels_last, faster on CUDA and "
                                 "on CPU)", negate="--no-channels-last", group=GROUP_MODEL)
    address: str | None = option(None, "Ray cluster address (default: RAY_ADDRESS, else a local Ray)", group=GROUP_RAY)
    actors: int = option(0, "stylize actor pool: N actors, or MIN:MAX for Ray Data's autoscaling pool (default: one "
                         "per GPU; with --gpus-per-actor and no GPUs in the cluster yet, 1:8 so GPU workers that start "
                         "at zero scale up; on CPU-only clusters one per node, or see --cores-per-actor)",
                         metavar="N|MIN:MAX", group=GROUP_RAY, ge=0)
    max_actors: int = option(0, cli=False)  # the pool's maximum (from --actors MIN:MAX); 0: planned
    cores_per_actor: int = option(0, "CPU-only clusters: one actor per this many cores of each node, each running "
                                  "that many torch threads (default: 0, one actor per node using all its cores)",
                                  group=GROUP_RAY, ge=0)
    batch_size: int | None = option(None, "rows per stylize actor call, the window the Stylizer packs into shape "
                                    "buckets (default: 64 for GPU actors, 8 for CPU actors)", group=GROUP_RAY, ge=1, le=4096)
    gpus_per_actor: float | None = option(None, "GPUs per actor, fractional allowed (default: 1 when the cluster has "
                                          "GPUs, else 0)", group=GROUP_RAY, ge=0)
    cpus_per_actor: float = option(1.0, "CPUs reserved per actor", group=GROUP_RAY, ge=0)
    torch_threads: int = option(0, "intra-op threads per CPU actor (default: the node's cores / actors)", group=GROUP_RAY, ge=0)
    max_error_rate: float | None = option(
        None, f"exit 1 when errors / rows exceed this (default: {DEFAULT_MAX_ERROR_RATE}; {DEMO_MAX_ERROR_RATE} for "
        "the embedded demo)", group=GROUP_OUTCOME, ge=0, le=1)
    contact_sheet: int = option(6, "inputs shown on the contact sheet; 0 for none", group=GROUP_OUTCOME, ge=0, le=100)
    quiet: bool = option(False, "no progress bars", group=GROUP_OUTCOME)
    demo: bool = option(False, cli=False)
    # the styles to render when fewer than all (the nightly catalog's styles of the night); the others
    # stay loaded (adain, predict: for the mixes that need them; label masks and regions: so that label k
    # keeps naming the k-th style and a regions style has its parts), but render no rows
    rendered_styles: list[str] | None = option(None, cli=False)
    tile: TileSide = tile_option(GROUP_MODEL)
    max_memory: MemorySize = max_memory_option(GROUP_MODEL)
    tileable: bool = tileable_option(GROUP_MODEL)
    tile_stats: TileStats = tile_stats_option(GROUP_MODEL)

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
        """Styles of this run: the checkpoints, plus (optimize) styles given only as a style image; for
        adain and predict, the style images and their mixes."""
        if self.styles_are_images:  # style images, and interpolations of them (--mix NEW=A:W,B:W)
            names = list(self.style_images) + [n for n in self.mixes if n not in self.style_images]
            return names if self.rendered_styles is None else [n for n in names if n in self.rendered_styles]
        extra = [n for n in self.style_images if n not in self.styles] if self.method == "optimize" else []
        names = list(self.styles) + extra
        return names if self.rendered_styles is None else [n for n in names if n in self.rendered_styles]

    @property
    def styles_are_images(self) -> bool:
        """adain and predict: styles are style images (and mixes of them), not checkpoints."""
        return self.method in ("adain", "predict")

    def check_style_image_methods(self) -> None:
        """``--method adain``'s and ``--method predict``'s options, or ValueError (one line): weights,
        style images, no --style. Without --encoder/--decoder (--predictor) the shipped demo model is used."""
        if self.method != "adain" and (self.encoder or self.decoder):
            raise ValueError("--encoder/--decoder belong to --method adain")
        if self.method != "predict" and self.predictor:
            raise ValueError("--predictor belongs to --method predict")
        if not self.styles_are_images:
            return
        if self.method == "adain":
            if self.encoder and not self.decoder:
                raise ValueError(ADAIN_ENCODER_ALONE)
            if self.tileable:
                raise ValueError(ADAIN_TILEABLE)
            if not self.decoder:
                self._resolve(decoder=demo_adain_checkpoint())
        elif not self.predictor:
            self._resolve(predictor=demo_predictor_checkpoint())
        if self.styles:
            raise ValueError(f"--method {self.method} takes --style-image NAME=URI, not --style {sorted(self.styles)}")
        if not self.style_images:
            raise ValueError(f"--method {self.method} needs at least one --style-image NAME=URI")
        if clash := set(self.mixes) & set(self.style_images):
            raise ValueError(f"--mix names {sorted(clash)} are --style-image names; a mix is a new style: "
                             "--mix NEW=A:0.5,B:0.5")

    @property
    def storage_options(self) -> StorageOptions:
        """How this run reaches object storage (the one place the S3 flags become options)."""
        return StorageOptions(endpoint_url=self.endpoint_url, region=self.region, profile=self.profile)

    def gatys_options(self) -> dict[str, Any]:
        """``--method optimize``'s options, as :class:`stylize_core.gatys.GatysConfig` takes them."""
        return {"steps": self.optimize_steps, "pyramid_levels": self.optimize_levels, "optimizer": self.optimizer,
                "preserve_color": self.preserve_color}

    def _resolve(self, **values: Any) -> None:
        """Set defaults that depend on other options, once, while validating; the model is frozen after."""
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (not re-validated: for values the caller derived from valid ones)."""
        return self.model_copy(update=changes)
