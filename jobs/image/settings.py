"""``python -m jobs.stylize_image``'s settings: one frozen model, from flags and ``--config`` YAML
alike (the run itself: :mod:`jobs.image.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from stylize_core.gatys import INITS, OPTIMIZERS

from jobs.common import cli_settings
from jobs.common.cli_settings import option, parse_selection, split_csv
from jobs.common.mask_settings import MaskMode, mask_feather_option, mask_mode_option
from jobs.common.run_settings import (ADAIN_ENCODER_ALONE, ADAIN_TILEABLE, Background, BackendSpec, MemorySize, TileSide, TileStats,
                                      background_option, demo_adain_checkpoint, max_memory_option, metrics_ratio_option,
                                      tile_option, tile_stats_option, tileable_option)
from jobs.common.run_settings import demo_predictor_checkpoint

PROG = "python -m jobs.stylize_image"

_FF, _METRICS, _GATYS, _STORAGE, _MASK = ("feed-forward (default method)", "metrics and loss network",
                                          "Gatys optimisation (--optimize)", "storage (URIs)", "masks")
_ADAIN = "AdaIN (--method adain)"
_PREDICT = "style prediction (--method predict)"


class ImageSettings(BaseModel):
    """``python -m jobs.stylize_image`` options, from flags and ``--config`` YAML alike."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: list[str] = option(..., "input image files (paths or URIs)", positional=True, metavar="IN", min_length=1)
    output: str = option(..., "with one input and a name ending in .jpg/.jpeg/.png/.webp/.tif/.tiff: the output file (its "
                         "extension picks the format); otherwise a directory receiving {stem}.{ext} per input (two "
                         "inputs with the same stem are refused). Required", short="-o", metavar="OUT", min_length=1)
    format: Literal["jpeg", "png", "webp", "tiff"] | None = option(
        None, "output format (default: from OUT's extension, else jpeg); png and tiff keep 16-bit inputs at 16 bits")
    quality: int = option(90, "JPEG/WebP quality 1-100", ge=1, le=100)
    background: Background = background_option()
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
    tile_stats: TileStats = tile_stats_option(_FF)

    metrics: bool = option(False, "measure content, style and TV loss of each output with the VGG loss network",
                           group=_METRICS)
    vgg: str | None = option(None, "loss network: vgg16, vgg19 or texture[:SEED] (random filters, nothing to "
                             "download) (default: vgg16 for metrics, vgg19 for --optimize)", group=_METRICS,
                             pattern=r"^(vgg16|vgg19|texture(:\d+)?)$")
    vgg_weights: str = option("imagenet", "loss network weights: torchvision's ImageNet weights from its cache, a "
                              "state dict path/URI, or random:SEED (tests and demos only)",
                              metavar="imagenet|PATH|URI|random:SEED", group=_METRICS, min_length=1)
    metrics_size: int = option(256, "short side at which losses are measured", group=_METRICS, ge=16)
    metrics_ratio: bool = metrics_ratio_option(_METRICS)
    style_image: str | None = option(None, "style image: the target of --optimize (required there); for feed-forward "
                                     "metrics, overrides the style image stored in the checkpoint (bare "
                                     "pytorch/examples files have none)", metavar="PATH_OR_URI", group=_METRICS)

    method_name: Literal["feedforward", "optimize", "adain", "predict"] | None = option(
        None, "feedforward (a style network, the default), optimize (as --optimize), adain (any --style-image "
        "through pytorch-AdaIN's --encoder/--decoder, or the shipped demo model without them; docs/methods/adain.md) "
        "or predict (any --style-image through a style-predicting network; docs/methods/predict.md)", flag="--method")
    encoder: str | None = option(None, "adain: pytorch-AdaIN's vgg_normalised.pth (path or URI)",
                                 metavar="PATH_OR_URI", group=_ADAIN, min_length=1)
    decoder: str | None = option(None, "adain: pytorch-AdaIN's decoder.pth (with --encoder), or this project's "
                                 "one-file AdaIN checkpoint (alone); default: the shipped demo model", metavar="PATH_OR_URI", group=_ADAIN, min_length=1)
    alpha: float = option(1.0, "adain: style strength in feature space, 0 (the decoded content) .. 1 (full style); "
                          "predict: the same in the style embedding (0: the training photos' mean embedding)",
                          group=_ADAIN, ge=0, le=1)
    predictor: str | None = option(None, "predict: the style predictor's one-file checkpoint; default: the shipped "
                                   "demo model", metavar="PATH_OR_URI", group=_PREDICT, min_length=1)

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
    regions: Annotated[tuple[str, ...], BeforeValidator(split_csv)] = option(
        (), "several styles in one output by the --mask's labels (--mask-mode labels): label k renders the k-th "
        "part, label 0 the input. Parts: style images with --method adain, predict or optimize (instead of "
        "--style-image); styles of a multi-style --checkpoint by index or name (instead of --mix: `--regions 0,3`), "
        "or single-style checkpoints. AdaIN by per-region statistics, a multi-style network's or the predictor's "
        "styles by spatially varying conditional norm, --optimize by guided Gram losses, others by blending "
        "outputs (docs/operations/masks.md)",
        metavar="A,B,...", group=_MASK)

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

    @property
    def needs_style_image(self) -> bool:
        """Style-image methods take --style-image, or style images as --regions parts."""
        return self.style_image is None and not self.regions

    def _check_regions(self) -> None:
        if not self.regions:
            return
        if self.mask is None or self.mask_mode != "labels":
            raise ValueError("--regions needs --mask MASK --mask-mode labels (label k: the k-th part)")
        if self.mix is not None:
            raise ValueError("--regions and --mix exclude each other: name the styles as --regions parts")
        if self.method != "feedforward" and self.style_image is not None:
            raise ValueError(f"--method {self.method} with --regions takes the style images as its parts, not "
                             "--style-image")

    @model_validator(mode="after")
    def _method_options(self) -> ImageSettings:
        self._check_regions()
        if self.optimize and self.method_name not in (None, "optimize"):
            raise ValueError(f"--optimize contradicts --method {self.method_name}")
        if self.method == "adain":
            if self.encoder and not self.decoder:
                raise ValueError(ADAIN_ENCODER_ALONE)
            if self.tileable:
                raise ValueError(ADAIN_TILEABLE)
            if not self.decoder:  # the shipped demo model (a one-file checkpoint)
                object.__setattr__(self, "decoder", demo_adain_checkpoint())
            if self.needs_style_image:
                raise ValueError("--method adain needs --style-image (the style to transfer)")
            if self.checkpoint is not None or self.mix is not None:
                raise ValueError("--checkpoint and --mix are for style networks; --method adain uses --style-image "
                                 "with --encoder/--decoder")
        elif self.encoder or self.decoder:
            raise ValueError("--encoder/--decoder belong to --method adain")
        if self.method == "predict":
            if not self.predictor:  # the shipped demo model
                object.__setattr__(self, "predictor", demo_predictor_checkpoint())
            if self.needs_style_image:
                raise ValueError("--method predict needs --style-image (the style to transfer)")
            if self.checkpoint is not None or self.mix is not None:
                raise ValueError("--checkpoint and --mix are for style networks; --method predict uses --style-image "
                                 "with --predictor")
        elif self.predictor:
            raise ValueError("--predictor belongs to --method predict")
        if self.method == "optimize" and self.needs_style_image:
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
          f"  {PROG} photo.jpg --method adain --style-image starry.jpg -o styled.jpg   (the shipped demo model)\n"
          f"  {PROG} photo.jpg --method predict --style-image starry.jpg --alpha 0.8 -o styled.jpg")


def build_parser() -> argparse.ArgumentParser:
    """The command line of the local, Ray-free stylisation tool."""
    return cli_settings.build_parser(ImageSettings, PROG, DESCRIPTION, EPILOG)


def parse_args(argv: Sequence[str] | None = None) -> ImageSettings:
    """Validated settings from ``argv`` (default: ``sys.argv[1:]``); exits 2 with one line when invalid."""
    return cli_settings.parse(ImageSettings, argv, build_parser())
