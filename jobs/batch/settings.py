"""The batch job's settings: one pydantic model for flags and YAML config, resolved and picklable."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, model_validator

from jobs.common import cli_settings
from jobs.common.cli_settings import option, pairs_to_mapping, split_csv
from jobs.common.mask_settings import MaskMode, mask_feather_option, mask_mode_option
from jobs.common.run_settings import (DEFAULT_MAX_ERROR_RATE, Background, background_option, DEFAULT_MAX_SIDE, DEMO_MAX_ERROR_RATE,
                                      GROUP_IO, GROUP_MODEL, GROUP_RAY, MIN_TILE_SIDE, STYLE_NAME, RunSettings, default_run_id,
                                      demo_checkpoint, sample_images_dir)


def _regions(value: Any) -> Any:
    value = pairs_to_mapping(value, "NAME=A,B") if not isinstance(value, dict) else value
    return {name: list(split_csv(parts)) for name, parts in value.items()} if isinstance(value, dict) else value


RegionMap = Annotated[dict[str, list[str]], BeforeValidator(_regions)]


class JobSettings(RunSettings):
    """The batch job's settings: flags and YAML validated alike; picklable, passed to Ray workers.

    With no ``input``, the embedded demo: scikit-image's sample photos, both demo style networks,
    ``random:0`` VGG weights, 512 px max side and a 5 % error budget (unless given).
    """

    input: str | None = option(None, "prefix URI (local path, file://, s3://, any fsspec URI) listed recursively for "
                               "image files, or a manifest (.parquet/.csv with a `uri` column). Default: the demo samples",
                               group=GROUP_IO, min_length=1)
    format: Literal["jpeg", "png", "webp", "tiff"] = option(
        "jpeg", "output format; png and tiff keep 16-bit inputs at 16 bits (docs/formats.md)", group=GROUP_IO)
    quality: int = option(90, "JPEG/WebP quality 1-100", group=GROUP_IO, ge=1, le=100)
    background: Background = background_option(GROUP_IO)
    skip_existing: bool = option(False, "skip input x style pairs whose output already exists", group=GROUP_IO)
    metrics_sample: float = option(0.25, "fraction of inputs whose losses are measured, chosen by a hash of the input "
                                   "URI (the same inputs on reruns and for every style); the others have null losses "
                                   "and measured=false. `--metrics-size 256 --metrics-sample 1` is the full measure",
                                   group=GROUP_MODEL, ge=0, le=1)
    evaluate: bool = option(False, "enhancement networks: degrade each input as the network was trained for, restore "
                            "that, write the restoration and its psnr/ssim (luminance) and the baseline's (Lanczos "
                            "upscale or the degraded input) into the metrics rows", group=GROUP_MODEL)
    mask_prefix: str | None = option(
        None, "masks for the inputs: the mask of input a/b.jpg is {URI}/a/b.png (its relative path with a .png "
        "suffix); a manifest's `mask_uri` column, where given, wins. A missing, unreadable or wrong-sized mask makes "
        "that input's rows mask_error rows (docs/operations/masks.md)", metavar="URI", group=GROUP_IO, min_length=1)
    mask_feather: float = mask_feather_option(GROUP_IO)
    mask_mode: MaskMode = mask_mode_option(GROUP_IO)
    regions: RegionMap = option(
        {}, "a style holding several of this run's styles in one image: label k of each input's label mask "
        "(--mask-mode labels, with --mask-prefix or a manifest's mask_uri) renders the k-th style named, label 0 "
        "the input (`--regions both=sky,sea`; parts are --style, --style-image or --mix names). Its own output "
        "folder and model id (from its parts'); AdaIN by per-region statistics, a multi-style checkpoint's "
        "selections and predicted styles by spatially varying conditional norm, --method optimize by guided Gram "
        "losses, other styles by blending their outputs (docs/operations/masks.md). An input without a usable label mask: a mask_error row",
        flag="--regions", metavar="NAME=A,B", group=GROUP_IO)
    read_batch_size: int = option(16, "images per read/decode task batch", group=GROUP_RAY, ge=1)
    max_actor_crashes: int = option(
        2, "times a batch may kill its stylize actor (a sticky CUDA error makes the actor exit so Ray replaces it) "
        "before its images run one at a time; an image that kills it more often becomes a stylize_error row",
        group=GROUP_RAY, ge=0, le=100)
    stall_timeout: float = option(
        1800, "seconds without a new row, once rows are flowing, after which the run writes the rows it has and "
        "stops (exit 2; rerunning the same --run-id completes it) instead of waiting forever, as a fixed pool that no "
        "longer fits the cluster after a lost node does. Posters (--split-pixels): a tile or decode call with no answer "
        "for that long restarts its actor, which runs it again (within --max-actor-crashes). 0: wait forever",
        group=GROUP_RAY, ge=0)
    stages: Literal["auto", "split", "fused"] = option(
        "auto", "split: decode and encode in CPU tasks beside the actor pool; fused: inside the actors. auto: split for "
        "GPU actors, fused for CPU actors, whose cores those tasks would share", group=GROUP_RAY)
    split_pixels: int = option(
        0, "images above N pixels (as decoded) run as posters: their tiles spread over a pool of actors, the "
        "statistics computed once, one writer joining them (docs/operations/posters.md). 0: off, every image runs "
        f"in one actor call, which already tiles it within --max-memory; at least {MIN_TILE_SIDE ** 2} "
        f"({MIN_TILE_SIDE} x {MIN_TILE_SIDE}, the smallest tile). --max-pixels still refuses larger files",
        metavar="N", group=GROUP_RAY, ge=0)

    @property
    def label_styles(self) -> list[str]:
        """The styles a label mask's values name in each style's own folder (label k: the k-th), the
        regions styles excluded: all of them, rendered tonight or not (``rendered_styles``)."""
        if self.rendered_styles is None:
            return super().style_names
        return self.model_copy(update={"rendered_styles": None}).label_styles

    @property
    def _rendered_labels(self) -> list[str]:
        return super().style_names

    @property
    def style_names(self) -> list[str]:
        """Every style of the run (one output folder and one row per input each): the styles, then the
        regions styles (those rendered, for a nightly catalog's subset)."""
        regions = [n for n in self.regions if self.rendered_styles is None or n in self.rendered_styles]
        return self._rendered_labels + regions

    @property
    def label_count(self) -> int:
        """The largest label a mask may hold: the number of styles, or of a regions style's parts."""
        return max([len(self.label_styles), *(len(p) for p in self.regions.values())])

    def _check_regions(self) -> None:
        if not self.regions:
            return
        if self.mask_mode != "labels":
            raise ValueError("--regions needs --mask-mode labels (label k of each input's mask: the k-th style named)")
        known = set(self.style_images) | set(self.mixes) if self.styles_are_images else set(self.label_styles)
        for name, parts in self.regions.items():
            if not STYLE_NAME.match(name):
                raise ValueError(f"--regions name {name!r} must match {STYLE_NAME.pattern}")
            if name in known:
                raise ValueError(f"--regions {name}: the name is a style of the run; a regions style is a new style: "
                                 "--regions NEW=A,B")
            if not parts or set(parts) - known:
                raise ValueError(f"--regions {name}: {sorted(set(parts) - known) or 'no parts'} name no style of the "
                                 f"run ({', '.join(sorted(known))})")

    @model_validator(mode="after")
    def _check_split(self) -> JobSettings:
        if not self.split_pixels:
            return self
        if self.split_pixels < MIN_TILE_SIDE ** 2:
            raise ValueError(f"--split-pixels {self.split_pixels} is below one tile of {MIN_TILE_SIDE} x "
                             f"{MIN_TILE_SIDE} ({MIN_TILE_SIDE ** 2}); 0 turns posters off")
        if self.method != "feedforward" or self.evaluate:
            what = "--evaluate" if self.evaluate else f"--method {self.method}"
            raise ValueError(f"--split-pixels does not combine with {what}: posters run the style networks' tiles "
                             "with shared statistics")
        return self

    @model_validator(mode="after")
    def _fill_defaults(self) -> JobSettings:
        """Defaults that depend on other options (the demo, the method)."""
        demo = self.input is None
        self.check_style_image_methods()
        styles = self.styles
        if not styles and not ((self.method == "optimize" or self.styles_are_images) and self.style_images):
            # both demo networks, so the contact sheet shows the full and the slim one side by side
            styles = {"demo": demo_checkpoint(), "demo_slim": demo_checkpoint(slim=True)}
        if not self.styles_are_images and set(self.mixes) - set(styles):
            raise ValueError(f"--mix names {sorted(set(self.mixes) - set(styles))} match no --style")
        if self.method == "feedforward" and set(self.style_images) - set(styles):
            raise ValueError(f"--style-image names {sorted(set(self.style_images) - set(styles))} match no --style")
        self._resolve(
            demo=demo,
            input=sample_images_dir() if demo else self.input,
            styles=styles,
            run_id=self.run_id or default_run_id(),
            max_side=DEFAULT_MAX_SIDE if self.max_side is None and demo else self.max_side,
            vgg=self.vgg or ("texture" if demo else "vgg19" if self.method == "optimize" else "vgg16"),
            vgg_weights=self.vgg_weights or ("random:0" if demo else "imagenet"),
            max_error_rate=(DEMO_MAX_ERROR_RATE if demo else DEFAULT_MAX_ERROR_RATE)
            if self.max_error_rate is None else self.max_error_rate,
            max_actors=max(self.max_actors, self.actors),
        )
        self._check_regions()
        return self


DESCRIPTION = (
    "Stylise every image under an input URI with one or more styles on a Ray cluster, writing images to "
    "{output}/{style}/{relative path} and per-image metrics as Parquet to {output}/_metrics/run_id={run_id}/. "
    "With no --input, runs the embedded demo: the sample photographs shipped with scikit-image, both demo style "
    "networks (full-size and slim), local Ray, output ./out.\n\nexit status: 0 error rate within --max-error-rate; 1 above it; 2 the "
    "job could not run (one line on stderr says why)."
)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m jobs.stylize`` command line (flag names are a contract: keep them stable)."""
    return cli_settings.build_parser(JobSettings, "python -m jobs.stylize", DESCRIPTION)


def parse_args(argv: Sequence[str] | None = None) -> JobSettings:
    """Validated settings from flags and ``--config``; exits 2 with one line when they are invalid."""
    return cli_settings.parse(JobSettings, argv, build_parser())
