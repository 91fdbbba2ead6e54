"""Dense optical flow between input frames, its reliability mask, and backward warping.

Conventions: a flow ``F_{a->b}`` is (H, W, 2) float32 in pixels (dx, dy): the pixel at x in frame a
is found at x + F(x) in frame b. ``warp(img_b, F_{a->b})`` samples frame b at x + F(x), which
brings frame b into frame a's geometry.
"""

from __future__ import annotations

import functools

import numpy as np

# Ruder et al. 2016 ("Artistic style transfer for videos"), sec. 3.2: forward-backward and motion
# boundary thresholds. Occluded pixels fail the first, flow edges (where flow is blurred) the second.
FB_REL, FB_ABS = 0.01, 0.5
MB_REL, MB_ABS = 0.01, 0.002


def to_gray(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # (H, W) uint8


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (read-only, cached: every frame of a clip has the same size)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def warp(image: np.ndarray, flow: np.ndarray, interpolation: str = "linear") -> np.ndarray:
    """Sample ``image`` (H, W, C) at x + flow(x); outside the frame reads the nearest edge pixel."""
    import cv2

    h, w = flow.shape[:2]
    xs, ys = _grid(h, w)
    mode = cv2.INTER_CUBIC if interpolation == "cubic" else cv2.INTER_LINEAR
    return cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], mode, borderMode=cv2.BORDER_REPLICATE)


def consistency_mask(fwd: np.ndarray, bwd: np.ndarray, motion_boundaries: bool = True) -> np.ndarray:
    """Reliability of ``fwd`` = F_{a->b} given ``bwd`` = F_{b->a}: (H, W) float32, 1 reliable, 0 not.

    A pixel of a is reliable when following the flow to b and back returns to it (else it is
    occluded in b or the flow is wrong) and, optionally, when it is not on a motion boundary.
    Out-of-frame targets count as unreliable.
    """
    h, w = fwd.shape[:2]
    back = warp(bwd, fwd)  # F_{b->a} at the target of each pixel of a
    total = fwd + back
    ok = (total ** 2).sum(-1) <= FB_REL * ((fwd ** 2).sum(-1) + (back ** 2).sum(-1)) + FB_ABS
    xs, ys = _grid(h, w)
    tx, ty = xs + fwd[..., 0], ys + fwd[..., 1]
    ok &= (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    if motion_boundaries:
        import cv2

        # Central differences (as np.gradient inside the frame), on both flow channels at once.
        gx = cv2.Sobel(fwd, cv2.CV_32F, 1, 0, ksize=1, scale=0.5, borderType=cv2.BORDER_REPLICATE)
        gy = cv2.Sobel(fwd, cv2.CV_32F, 0, 1, ksize=1, scale=0.5, borderType=cv2.BORDER_REPLICATE)
        grad = (gx ** 2).sum(-1) + (gy ** 2).sum(-1)
        ok &= grad <= MB_REL * (fwd ** 2).sum(-1) + MB_ABS
    return ok.astype(np.float32)


class DisFlow:
    """OpenCV's DIS optical flow (Kroeger et al. 2016): no learned weights, real-time on CPU.

    ``max_side``: flow is computed on frames scaled to at most this long side and scaled back
    (DIS cost grows with pixels; the warp does not need sub-pixel detail at 1080p). 0 = full size.
    """

    PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}

    def __init__(self, preset: str = "medium", max_side: int = 960, threads: int = 1) -> None:
        import cv2

        cv2.setNumThreads(threads)
        self.dis = cv2.DISOpticalFlow_create(self.PRESETS[preset])
        self.max_side = max_side

    def _scaled(self, gray: np.ndarray) -> tuple[np.ndarray, float]:
        import cv2

        h, w = gray.shape
        if not self.max_side or max(h, w) <= self.max_side:
            return gray, 1.0
        s = self.max_side / max(h, w)
        return cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), s

    def flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """F_{a->b} for two (H, W) uint8 grey frames: (H, W, 2) float32."""
        import cv2

        sa, s = self._scaled(a)
        sb, _ = self._scaled(b)
        f = self.dis.calc(sa, sb, None)
        if s != 1.0:
            h, w = a.shape
            f = cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) / s
        return f

    def pair(self, prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(F_{t->t-1}, F_{t-1->t}) for grey frames t-1 and t."""
        return self.flow(cur, prev), self.flow(prev, cur)

    def back_and_mask(self, prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(F_{t->t-1}, its reliability mask) at full size, both computed at ``max_side``.

        The mask is as informative at the flow's own resolution and costs a quarter of it at 1080p;
        only the backward flow, which the warp needs, is scaled up. Mask thresholds are therefore in
        pixels of the flow's resolution.
        """
        import cv2

        sp, s = self._scaled(prev)
        sc, _ = self._scaled(cur)
        back, fwd = self.dis.calc(sc, sp, None), self.dis.calc(sp, sc, None)
        mask = consistency_mask(back, fwd)
        if s != 1.0:
            h, w = prev.shape
            back = cv2.resize(back, (w, h), interpolation=cv2.INTER_LINEAR) / s
            mask = (cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.float32)
        return back, mask


class FarnebackFlow:
    """OpenCV's Farneback flow: the measuring flow, independent of the DIS flow the method blends with."""

    def __init__(self, threads: int = 1) -> None:
        import cv2

        cv2.setNumThreads(threads)

    def flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=4, winsize=15, iterations=3,
                                            poly_n=5, poly_sigma=1.1, flags=cv2.OPTFLOW_FARNEBACK_GAUSSIAN)

    def pair(self, prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.flow(cur, prev), self.flow(prev, cur)
