"""``python -m jobs.train``'s settings: one pydantic model for flags and YAML config, frozen once validated."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import fields
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from jobs.common import cli_settings
from jobs.common.cli_settings import option, split_csv
from stylize_core.training import TrainConfig

_DEFAULTS = TrainConfig()


_DATA, _OPT, _NET, _LOSS, _RUN = ("data and outputs", "optimisation",
                                   "network size (recorded in the checkpoint; defaults: pytorch/examples' layout)",
                                   "loss network", "cluster, checkpoints and logging")
_PRED = "style predictor (--task predict; the options above apply too)"
_ENH = "enhancement networks (--task sr2|sr4|denoise|deblock; --blocks, --steps, --lr, --tv-weight apply too)"
Csv = Annotated[tuple[str, ...], BeforeValidator(split_csv)]


class TrainSettings(BaseModel):
    """``python -m jobs.train`` options, from flags and ``--config`` YAML alike."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    content: str = option(..., "content images: prefix, single image or manifest (.csv/.parquet); any URI. Required",
                          group=_DATA, min_length=1)
    style_image: list[str] = option([], "style image URI; repeat it to train one multi-style network (conditional "
                                    "instance norm). Required for --task style", group=_DATA)
    task: Literal["style", "predict", "sr2", "sr4", "denoise", "deblock"] = option(
        "style", "what to train: a style network; predict: a style-predicting network for any style image "
        "(docs/methods/predict.md); or an enhancement network (x2/x4 super-resolution, denoising, JPEG clean-up) on "
        "degradations made on the fly from the content images (docs/enhancement.md)", group=_DATA)
    style_images: str | None = option(None, "--task predict: prefix (or manifest) of the style images to train on, "
                                      "every image there. Required for --task predict", group=_PRED, min_length=1)
    embedding: int = option(64, "--task predict: size of the style embedding (the predictor's bottleneck)",
                            group=_PRED, ge=1, le=4096)
    styles_per_step: int = option(2, "--task predict: style images per step per worker (the batch is shared out "
                                  "among them)", group=_PRED, ge=1)
    output: str = option(..., "output prefix (local path or URI): checkpoints, final models, history. Required",
                         group=_DATA, min_length=1)
    style_name: list[str] | None = option(None, "style name recorded in the checkpoint, once per --style-image in "
                                          "order (default: the image stems)", group=_DATA)
    name: str = option("train", "Ray Train run name under --output (resume key)", group=_DATA,
                       pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

    steps: int = option(_DEFAULTS.steps, "stop after this many optimiser steps", group=_OPT, ge=1)
    epochs: int = option(_DEFAULTS.epochs, "... or this many passes, whichever first", group=_OPT, ge=1)
    image_size: int = option(_DEFAULTS.image_size, "content crop size (px)", group=_OPT, ge=16)
    batch_size: int = option(_DEFAULTS.batch_size, "images per step per worker", group=_OPT, ge=1)
    lr: float = option(_DEFAULTS.lr, "Adam learning rate", group=_OPT, gt=0)
    content_weight: float = option(_DEFAULTS.content_weight, "feature loss weight", group=_OPT, ge=0)
    style_weight: float = option(_DEFAULTS.style_weight, "Gram loss weight", group=_OPT, ge=0)
    tv_weight: float = option(_DEFAULTS.tv_weight, "total variation weight", group=_OPT, ge=0)
    seed: int = option(_DEFAULTS.seed, "model init and shuffling", group=_OPT)
    autocast: Literal["auto", "bf16", "fp16", "none"] = option("auto", "auto: bf16 on GPU", group=_OPT)

    width: float = option(_DEFAULTS.width, "channel multiplier of the 32/64/128 widths: 0.25 is the slim network "
                          "(~12x fewer FLOPs)", group=_NET, gt=0, le=4)
    blocks: int = option(_DEFAULTS.blocks, "residual blocks", group=_NET, ge=0, le=32)
    depthwise: bool = option(False, "depthwise-separable 3x3 convs in the residual blocks (slim: ~1.1x less CPU per "
                             "image)", group=_NET)

    vgg: str = option(_DEFAULTS.vgg, "loss network: vgg16, vgg19 or texture[:SEED]", group=_LOSS,
                      pattern=r"^(vgg16|vgg19|texture(:\d+)?)$")
    vgg_weights: str = option(_DEFAULTS.vgg_weights, "imagenet|PATH|URI|random:SEED", group=_LOSS, min_length=1)
    content_layers: Csv = option(_DEFAULTS.content_layers, "comma-separated (default: the loss network's)", group=_LOSS)
    style_layers: Csv = option(_DEFAULTS.style_layers, "comma-separated (default: the loss network's)", group=_LOSS)
    style_size: int | None = option(None, "long side of the style image (default: as given)", group=_LOSS, ge=16)
    style_scales: Annotated[tuple[float, ...], BeforeValidator(split_csv)] = option(
        (1.0,), "comma-separated; Gram targets averaged", group=_LOSS, min_length=1)

    workers: int = option(1, "data-parallel training workers", group=_RUN, ge=1)
    gpus_per_worker: float | None = option(None, "GPUs per worker (default: 1 if the cluster has GPUs, else 0)",
                                           group=_RUN, ge=0)
    cpus_per_worker: float | None = option(None, "CPUs reserved per worker (default: 1, or less so that one CPU stays "
                                           "free for data loading)", group=_RUN, ge=0)
    address: str | None = option(None, "Ray cluster address (default: RAY_ADDRESS or a local Ray)", group=_RUN)
    checkpoint_every: int = option(_DEFAULTS.checkpoint_every, "steps", group=_RUN, ge=1)
    keep_checkpoints: int = option(2, "Ray Train checkpoints kept", group=_RUN, ge=1)
    max_failures: int = option(0, "automatic restarts from the latest checkpoint", group=_RUN, ge=-1)
    channels: int = option(32, "enhancement networks: trunk channels", group=_ENH, ge=1, le=512)
    unshuffle: int = option(1, "enhancement: 2 runs a restoration trunk on 2x2 pixel-unshuffled input (4x cheaper; "
                            "denoise/deblock only)", group=_ENH, ge=1, le=2)
    patch: int = option(96, "enhancement: clean patch side cut from each content crop per step (a multiple of the "
                        "scale, at most --image-size)", group=_ENH, ge=8)
    pixel_loss: Literal["l1", "charbonnier"] = option("charbonnier", "enhancement: pixel loss", group=_ENH)
    perceptual_weight: float = option(0.0, "enhancement: weight of the loss network's content-feature MSE (VGG "
                                      "relu2_2; 0: off)", group=_ENH, ge=0)
    compound: bool = option(False, "enhancement: the real-world chain (blur, noise, JPEG) on top of the task's "
                            "degradation", group=_ENH)
    log_every: int = option(_DEFAULTS.log_every, "progress line every N steps", group=_RUN, ge=1)
    read_batch_size: int = option(16, "images per Ray Data decode task batch", group=_RUN, ge=1)
    onnx_opset: int = option(17, "ONNX opset of final/style.onnx", group=_RUN, ge=13)

    @model_validator(mode="after")
    def _names_per_image(self) -> TrainSettings:
        if self.task == "predict":
            if not self.style_images or self.style_image:
                raise ValueError("--task predict trains on the style images under --style-images PREFIX (and takes "
                                 "no --style-image)")
        elif self.style_images:
            raise ValueError("--style-images belongs to --task predict")
        if self.task == "style" and not self.style_image:
            raise ValueError("--style-image is required to train a style network (or choose an enhancement --task)")
        if self.task not in ("style", "predict") and self.style_image:
            raise ValueError(f"--task {self.task} trains an enhancement network: it takes no --style-image")
        scale = {"sr2": 2, "sr4": 4}.get(self.task, 1)
        if self.task not in ("style", "predict") and (self.patch % scale or self.patch > self.image_size):
            raise ValueError(f"--patch {self.patch} must be a multiple of the task's scale and at most --image-size")
        if self.style_name and len(self.style_name) != len(self.style_image):
            raise ValueError(f"{len(self.style_name)} --style-name for {len(self.style_image)} --style-image: "
                             "give one per image")
        return self


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; every flag can also be a key (with underscores) in ``--config``."""
    return cli_settings.build_parser(TrainSettings, "python -m jobs.train",
                                     "Train a fast style-transfer network (Johnson et al.) with Ray Train.")


def parse_args(argv: Sequence[str] | None = None) -> TrainSettings:
    """Validated settings from flags and ``--config``; exits 2 with one line when they are invalid."""
    return cli_settings.parse(TrainSettings, argv, build_parser())


def train_config_from_args(args: TrainSettings) -> TrainConfig:
    """The :class:`TrainConfig` recorded in every checkpoint."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    stems = [os.path.splitext(os.path.basename(uri.rstrip("/")))[0] or "style" for uri in args.style_image]
    names = list(args.style_name or stems)
    values["style_name"] = names[0] if len(names) == 1 else "+".join(names)
    values["style_names"] = tuple(names) if len(names) > 1 else ()
    return TrainConfig(**values)


# --- resources: data loading always keeps a CPU -----------------------------------------------------

