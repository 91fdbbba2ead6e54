"""Temporal blending of stylised frames along the input's optical flow, and scene-cut detection."""

from __future__ import annotations

import numpy as np

from .flow import warp

DEFAULT_WEIGHT = 0.8


class SceneCutDetector:
    """A cut between two frames: their grey-level histograms differ by more than ``hist_threshold``
    (L1 distance of normalised 64-bin histograms, 0..2), or less than ``min_reliable`` of the
    pixels have a consistent flow (the next shot looks alike but nothing maps onto it)."""

    def __init__(self, hist_threshold: float = 0.6, min_reliable: float = 0.25) -> None:
        self.hist_threshold = hist_threshold
        self.min_reliable = min_reliable

    @staticmethod
    def histogram(gray: np.ndarray) -> np.ndarray:
        h = np.bincount((gray >> 2).ravel(), minlength=64).astype(np.float64)
        return h / max(1.0, h.sum())

    def is_cut(self, hist_prev: np.ndarray, hist_cur: np.ndarray, mask: np.ndarray | None) -> bool:
        if float(np.abs(hist_prev - hist_cur).sum()) > self.hist_threshold:
            return True
        return mask is not None and float(mask.mean()) < self.min_reliable


class TemporalBlender:
    """output_t = a * warp(output_{t-1}, F_{t->t-1}) + (1 - a) * stylised_t, a = weight * mask.

    Where the flow is reliable the previous output carries over, so textures move with the content
    instead of being redrawn each frame; occluded and newly visible pixels (mask 0) take the
    stylised frame as is. ``weight < 1`` lets every frame's own stylisation keep flowing in, so
    errors and resampling blur decay instead of piling up. The state is float, kept unrounded.
    """

    def __init__(self, weight: float = DEFAULT_WEIGHT) -> None:
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"temporal weight must be within [0, 1), got {weight}")
        self.weight = weight
        self.state: np.ndarray | None = None  # (H, W, 3) float32, 0..255

    def reset(self) -> None:
        self.state = None

    def step(self, stylised: np.ndarray, flow_back: np.ndarray | None, mask: np.ndarray | None) -> np.ndarray:
        """Blend one frame; ``flow_back`` = F_{t->t-1} on the input, ``mask`` its reliability (H, W).
        Returns (H, W, 3) uint8."""
        cur = stylised.astype(np.float32)
        if self.state is None or flow_back is None or mask is None:
            self.state = cur
        else:
            a = (self.weight * mask)[..., None]  # (H, W, 1)
            self.state = a * warp(self.state, flow_back) + (1.0 - a) * cur
        return np.clip(self.state + 0.5, 0, 255).astype(np.uint8)
