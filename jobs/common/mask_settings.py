"""The mask options, declared once for the programs that take them (the local CLI, the batch job and,
through it, the nightly catalog, the video job). See docs/operations/masks.md."""

from __future__ import annotations

from typing import Any, Literal

from jobs.common.cli_settings import option

MaskMode = Literal["alpha", "labels"]


def mask_feather_option(group: str | None = None) -> Any:
    return option(0.0, "soften the mask's edges by a Gaussian blur with sigma PX/3: PX pixels (of the image as "
                  "stylised) from an edge the mask weighs within 0.0014 of black or white. 0: hard edges",
                  metavar="PX", group=group, ge=0, le=1000)


def mask_mode_option(group: str | None = None) -> Any:
    return option("alpha", "alpha: white = styled, black = the input unchanged, grey = a blend (an alpha channel "
                  "wins when it is not fully opaque); labels: a grey or palette image whose value k picks the k-th "
                  "style (0: the input), each style's output holding its own region; --regions puts several styles in one "
                  "output", group=group)
