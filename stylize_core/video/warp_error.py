"""Temporal warping error (Lai et al. 2018, "Learning Blind Video Temporal Consistency").

E_pair = sum(M * ||O_t - warp(O_{t-1}, F_{t->t-1})||^2) / sum(M), images in [0, 1], the squared
norm taken over RGB per pixel, F and M from the INPUT frames: M is the forward-backward
consistency mask (with motion boundaries). E_warp is the mean over consecutive pairs. The flow is
Farneback's, not the DIS flow the blender uses, so the measure cannot flatter the method.
Frames are measured at ``side`` (long side) to keep the cost small beside stylisation.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .flow import FarnebackFlow, consistency_mask, to_gray, warp


def pair_warp_error(out_prev: np.ndarray, out_cur: np.ndarray, flow_back: np.ndarray, mask: np.ndarray) -> float:
    """One pair's error; ``flow_back`` = F_{t->t-1}, ``mask`` (H, W) in {0, 1}. NaN when nothing is reliable."""
    denom = float(mask.sum())
    if denom <= 0:
        return float("nan")
    prev = out_prev.astype(np.float32) / 255.0
    cur = out_cur.astype(np.float32) / 255.0
    diff = ((cur - warp(prev, flow_back)) ** 2).sum(-1)  # (H, W)
    return float((mask * diff).sum() / denom)


class WarpErrorMeter:
    """Accumulates E_warp for several output sequences of the same input (e.g. the blended output
    and the per-frame stylisation), with one Farneback flow per input pair."""

    def __init__(self, side: int = 320) -> None:
        self.side = side
        self.flow = FarnebackFlow()
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self._flows: dict[object, tuple[np.ndarray, np.ndarray]] = {}

    def _small(self, img: np.ndarray) -> np.ndarray:
        import cv2

        h, w = img.shape[:2]
        if not self.side or max(h, w) <= self.side:
            return img
        s = self.side / max(h, w)
        return cv2.resize(img, (max(2, round(w * s)), max(2, round(h * s))), interpolation=cv2.INTER_AREA)

    def pair(self, in_prev: np.ndarray, in_cur: np.ndarray, outputs: dict[str, tuple[np.ndarray, np.ndarray]],
             key: object = None) -> dict[str, float]:
        """Errors of each named (O_{t-1}, O_t) against the input pair; also added to the totals.
        ``key`` names the input pair, so several styles' outputs reuse one flow computation."""
        if key is not None and key in self._flows:
            back, mask = self._flows[key]
        else:
            back, fwd = self.flow.pair(to_gray(self._small(in_prev)), to_gray(self._small(in_cur)))
            mask = consistency_mask(back, fwd)
            if key is not None:
                if len(self._flows) >= 64:  # keys arrive in order: the oldest are done with
                    self._flows.pop(next(iter(self._flows)))
                self._flows[key] = (back, mask)
        errors = {}
        for name, (o_prev, o_cur) in outputs.items():
            e = pair_warp_error(self._small(o_prev), self._small(o_cur), back, mask)
            errors[name] = e
            if not np.isnan(e):
                self.sums[name] += e
                self.counts[name] += 1
        return errors

    def mean(self, name: str) -> float:
        return self.sums[name] / self.counts[name] if self.counts[name] else float("nan")
