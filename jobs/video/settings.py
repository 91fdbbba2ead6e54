"""Settings of ``python -m jobs.stylize_video``: the image job's storage, Ray, actor, config and
error-budget options with the same names and meanings (:class:`jobs.common.run_settings.RunSettings`), plus the
video options; flags and YAML validated alike."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Literal

from pydantic import model_validator

from jobs.common import cli_settings
from jobs.common.cli_settings import option
from jobs.common.mask_settings import MaskMode, mask_feather_option, mask_mode_option
from jobs.common.run_settings import DEFAULT_MAX_ERROR_RATE, GROUP_IO, RunSettings, default_run_id, demo_checkpoint

DEMO_MAX_SIDE = 256  # the embedded demo clip is made at this size anyway
_VIDEO = "video"


class VideoSettings(RunSettings):
    """The video job's settings. With no ``input``/``sequence``: the embedded demo clip (the job makes
    it), the demo style network, ``random:0`` VGG weights."""

    input: str | None = option(None, "prefix URI listed recursively for videos (.mp4 .mov .mkv .webm .avi .m4v, any "
                               "case), one video, or a manifest (.parquet/.csv with a `uri` column)", group=GROUP_IO,
                               min_length=1)
    sequence: str | None = option(None, "prefix URI of numbered image files (PNG 8/16-bit, JPEG); each directory's "
                                  "numbered set (frame_0001.png ...) is one clip, written back as numbered frames",
                                  group=GROUP_IO, min_length=1)
    kind: Literal["video", "sequence"] = option("video", cli=False)
    max_side: int | None = option(None, "downscale frames whose longer side exceeds this (sizes stay even) (default: "
                                  f"none; {DEMO_MAX_SIDE} for the demo)", group=GROUP_IO, ge=16)
    max_pixels: int = option(4096 * 2304, "refuse videos whose frames have more pixels than this (4K UHD)", group=GROUP_IO,
                             ge=1)
    max_duration: float = option(4 * 3600.0, "refuse videos longer than this many seconds", group=GROUP_IO, gt=0)
    batch_size: int = option(8, "frames per stylize batch", group="Ray", ge=1, le=4096)
    contact_sheet: int = option(3, "videos shown on the contact strip; 0 for none", group="outcome", ge=0, le=100)

    temporal: Literal["flow", "none"] = option(
        "flow", "flow: blend each stylised frame with the previous output warped along the input's optical flow where "
        "it is reliable; none: per-frame stylisation", group=_VIDEO)
    temporal_weight: float = option(0.8, "share of the warped previous output where the flow is reliable, in [0, 1)",
                                    group=_VIDEO, ge=0, lt=1)
    segment_seconds: float = option(10.0, "segment length for parallel processing, cut at keyframes; 0: one segment "
                                    "per video", group=_VIDEO, ge=0)
    # 24: the state left from before a segment's start weighs 0.8^24 < 1 % (docs/benchmarks.md, "Video": seams, measured).
    warmup_frames: int = option(24, "frames before each segment stylised for the temporal state, then dropped",
                                group=_VIDEO, ge=0)
    sequence_fps: float = option(24.0, "frame rate assumed for image sequences (segment length only)", group=_VIDEO,
                                 gt=0)
    codec: Literal["h264", "hevc", "vp9"] = option("h264", "output codec", group=_VIDEO)
    crf: int = option(18, "constant rate factor, lower is better", group=_VIDEO, ge=0, le=63)
    preset: str = option("medium", "x264/x265 speed preset", group=_VIDEO, min_length=1)
    flow_preset: Literal["ultrafast", "fast", "medium"] = option("medium", "OpenCV DIS preset", group=_VIDEO)
    flow_side: int = option(960, "flow is computed at most at this long side and scaled up (0: full size)",
                            group=_VIDEO, ge=0)
    measure_side: int = option(320, "long side at which the warping error is measured; 0 turns the measure off",
                               group=_VIDEO, ge=0)
    loss_every: int = option(10, "measure losses on every Nth frame", group=_VIDEO, ge=1)
    mask_prefix: str | None = option(
        None, "masks for the inputs: video a/b.mp4 takes the still mask {URI}/a/b.png for every frame (a fixed "
        "region: a logo, a caption band, a locked-off shot's background); an image sequence's frame a/f_0001.png "
        "takes {URI}/a/f_0001.png, frame by frame (a matte exported as numbered frames). Applied after the temporal "
        "blend. A missing, unreadable or wrong-sized mask makes that input's rows mask_error rows "
        "(docs/operations/masks.md)", metavar="URI", group=_VIDEO, min_length=1)
    mask_feather: float = mask_feather_option(_VIDEO)
    mask_mode: MaskMode = mask_mode_option(_VIDEO)

    @property
    def label_count(self) -> int:
        """The largest label a mask may hold: label k is the k-th style."""
        return len(self.style_names)

    @model_validator(mode="after")
    def _fill_defaults(self) -> VideoSettings:
        if self.input is not None and self.sequence is not None:
            raise ValueError("--input and --sequence exclude each other: give one")
        if self.method == "optimize":
            raise ValueError(f"--method {self.method} is not available for video: per-frame optimisation would take "
                             "minutes a frame; use style networks (--method feedforward), --method adain or --method predict")
        self.check_style_image_methods()
        adain = self.styles_are_images  # adain, predict: styles are style images (and mixes), not checkpoints
        styles = self.styles or ({} if adain else {"demo": demo_checkpoint()})
        if not adain and set(self.style_images) - set(styles):
            raise ValueError(f"--style-image names {sorted(set(self.style_images) - set(styles))} match no --style")
        if not adain and set(self.mixes) - set(styles):
            raise ValueError(f"--mix names {sorted(set(self.mixes) - set(styles))} match no --style")
        demo = self.input is None and self.sequence is None
        self._resolve(
            demo=demo,
            kind="sequence" if self.sequence else "video",
            input=self.sequence or self.input or "",  # the demo's clip is made by the job
            sequence=None,
            styles=styles,
            run_id=self.run_id or default_run_id(),
            max_side=DEMO_MAX_SIDE if self.max_side is None and demo else self.max_side,
            vgg=self.vgg or ("texture" if demo else "vgg16"),
            vgg_weights=self.vgg_weights or ("random:0" if demo else "imagenet"),
            max_error_rate=DEFAULT_MAX_ERROR_RATE if self.max_error_rate is None else self.max_error_rate,
            max_actors=max(self.max_actors, self.actors),
        )
        return self


DESCRIPTION = (
    "Stylise videos (or numbered image sequences) with temporally stable style transfer on Ray: segments run on an "
    "actor pool, are joined per video with the input's audio copied, and written to {output}/{style}/{relative "
    "path}; one metrics row per video x style as Parquet under {output}/_metrics_video/run_id={run_id}/. With no "
    "--input/--sequence: an embedded demo clip made from scikit-image's sample photos, the demo style network, "
    "local Ray, output ./out.\n\nexit status: 0 error rate within --max-error-rate; 1 above it; 2 the job could not "
    "run (one line on stderr says why)."
)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m jobs.stylize_video`` command line."""
    return cli_settings.build_parser(VideoSettings, "python -m jobs.stylize_video", DESCRIPTION)


def parse_args(argv: Sequence[str] | None = None) -> VideoSettings:
    """Validated settings from flags and ``--config``; exits 2 with one line when they are invalid."""
    return cli_settings.parse(VideoSettings, argv, build_parser())
