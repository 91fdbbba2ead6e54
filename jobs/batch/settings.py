"""The batch job's settings: one pydantic model for flags and YAML config, resolved and picklable."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Literal

from pydantic import model_validator

from jobs.common import cli_settings
from jobs.common.cli_settings import option
from jobs.common.run_settings import (DEFAULT_MAX_ERROR_RATE, DEFAULT_MAX_SIDE, DEMO_MAX_ERROR_RATE,
                                      GROUP_IO, GROUP_MODEL, GROUP_RAY, BackendSpec, MixMap, RunSettings, default_run_id, demo_checkpoint,
                                      sample_images_dir)


class JobSettings(RunSettings):
    """The batch job's settings: flags and YAML validated alike; picklable, passed to Ray workers.

    With no ``input``, the embedded demo: scikit-image's sample photos, the demo style network,
    ``random:0`` VGG weights, 512 px max side and a 5 % error budget (unless given).
    """

    input: str | None = option(None, "prefix URI (local path, file://, s3://, any fsspec URI) listed recursively for "
                               "image files, or a manifest (.parquet/.csv with a `uri` column). Default: the demo samples",
                               group=GROUP_IO, min_length=1)
    mixes: MixMap = option({}, "which style of a multi-style checkpoint NAME renders: an index or a style name "
                           "(`--mix warm=3`), or a blend with weights normalised to sum to one (`--mix "
                           "warm=3:0.5,wave:0.5`); a blend is a style of its own (its own model id). In YAML: "
                           "`mix: {warm: {3: 0.5, wave: 0.5}}`. `python -m jobs.styles CHECKPOINT` lists the styles",
                           flag="--mix", metavar="NAME=SPEC", group=GROUP_IO)
    format: Literal["jpeg", "png", "webp"] = option("jpeg", "output format", group=GROUP_IO)
    quality: int = option(90, "JPEG/WebP quality 1-100", group=GROUP_IO, ge=1, le=100)
    skip_existing: bool = option(False, "skip input x style pairs whose output already exists", group=GROUP_IO)
    method: Literal["feedforward", "optimize"] = option(
        "feedforward", "feedforward: the style networks (Johnson et al.); optimize: per-image Gatys optimisation "
        "against --style-image (slow; for small, high-value sets)", group=GROUP_MODEL)
    metrics_sample: float = option(0.25, "fraction of inputs whose losses are measured, chosen by a hash of the input "
                                   "URI (the same inputs on reruns and for every style); the others have null losses "
                                   "and measured=false. `--metrics-size 256 --metrics-sample 1` is the full measure",
                                   group=GROUP_MODEL, ge=0, le=1)
    optimize_steps: int = option(100, "optimize: steps per pyramid level", group=GROUP_MODEL, ge=1)
    optimize_levels: int = option(2, "optimize: coarse-to-fine pyramid levels", group=GROUP_MODEL, ge=1, le=8)
    optimizer: Literal["lbfgs", "adam"] = option("lbfgs", "optimize: optimiser", group=GROUP_MODEL)
    backend: BackendSpec = option(
        "eager", "where CPU actors run the style networks: PyTorch eager, torch.compile, onnxruntime or OpenVINO "
        "(these two need `pip install 'stylize[cpu]'`); NAME:bf16 runs in bfloat16 where the CPU has it. See README "
        "'CPU backends' for measured speeds. GPU actors always run PyTorch", group=GROUP_MODEL)
    read_batch_size: int = option(16, "images per read/decode task batch", group=GROUP_RAY, ge=1)
    max_actor_crashes: int = option(
        2, "times a batch may kill its stylize actor (a sticky CUDA error makes the actor exit so Ray replaces it) "
        "before its images run one at a time; an image that kills it more often becomes a stylize_error row",
        group=GROUP_RAY, ge=0, le=100)
    stages: Literal["auto", "split", "fused"] = option(
        "auto", "split: decode and encode in CPU tasks beside the actor pool; fused: inside the actors. auto: split for "
        "GPU actors, fused for CPU actors, whose cores those tasks would share", group=GROUP_RAY)

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
        self.vgg = self.vgg or ("vgg19" if self.method == "optimize" else "vgg16")
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
