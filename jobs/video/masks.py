"""The video job's masks (``--mask-prefix``): a video's one still mask, or an image sequence's mask per
frame, composited over each kept frame after the temporal blend (the blend's state stays the unmasked
stylisation, so a region's edge does not drag the input into the next frame's warped output).

Read where they are needed, on the worker: a still mask once per segment, a sequence's masks one
frame at a time (a frame's planes are dropped when the next frame's are read), never held for a
whole segment. The pixel rules are the image programs' (:mod:`jobs.common.masks`,
:mod:`stylize_core.masks`); docs/operations/masks.md.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from stylize_core.masks import composite
from stylize_core.video.process import CompositeFn

from jobs.common.masks import MASK_ONE, mask_uri_for, read_mask


def clip_mask_uri(settings, task: dict) -> str:
    """What a metrics row names as the clip's mask: a video's still mask; a sequence's masks as its
    frames' pattern (``shot/f_####.png``: each frame's number in place of the #s); "" for none."""
    return mask_uri_for(settings, task["rel_path"])


class ClipMasks:
    """One clip's mask weights as float planes (S, H, W) in 0..1, S = 1 (alpha) or one per style (labels).

    ``sizes``: for a sequence, each frame's (height, width) in its file (the size its mask must have,
    before ``--max-side``), filled as frames are read; None for a video, whose mask has the video's
    display size."""

    def __init__(self, settings, task: dict, sizes: Mapping[int, tuple[int, int]] | None = None) -> None:
        self.settings, self.task, self.sizes = settings, task, sizes
        self._key: object = None
        self._planes: np.ndarray | None = None

    def planes(self, key: object, shape: tuple[int, int]) -> np.ndarray:
        """The weights for frame ``key`` decoded at (height, width) ``shape``; MaskError when unusable."""
        if self.sizes is None:
            key = None  # a video's one still mask serves every frame
        if self._planes is None or self._key != key or self._planes.shape[1:] != shape:
            if self.sizes is None:
                width, height = self.task["info"].display_size
                rel, size = self.task["rel_path"], (height, width)
            else:
                rel, size = self.task["sequence"].rel_paths[key], self.sizes[key]
            weights = read_mask(mask_uri_for(self.settings, rel), self.settings, size, shape)
            self._planes = weights.astype(np.float32) / MASK_ONE
            self._key = key
        return self._planes

    def composites(self) -> dict[str, CompositeFn]:
        """Per style: the kept frame's output composited over its input with that style's weights."""
        labels = self.settings.mask_mode == "labels"

        def for_style(k: int) -> CompositeFn:
            return lambda key, rgb, out: composite(rgb, out, self.planes(key, rgb.shape[:2])[k if labels else 0])

        return {style: for_style(k) for k, style in enumerate(self.settings.style_names)}
