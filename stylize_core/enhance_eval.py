"""Quality of a restoration: PSNR and SSIM on luminance, and the evaluation of an enhancement model.

Both metrics are computed on the luminance Y of ITU-R BT.601 as the super-resolution literature
does (MATLAB's ``rgb2ycbcr``): ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` for R, G, B in
0..255, kept in float (not rounded), data range 255.

* PSNR = ``10 log10(255^2 / MSE)``; identical images give ``inf``.
* SSIM (Wang et al. 2004; NaN in evaluation rows for images under 7 px a side): Gaussian window sigma 1.5 (truncated at 3.5 sigma: 11 x 11), K1 = 0.01,
  K2 = 0.03, population (not sample) covariances, the mean over the pixels at least 5 px from the
  border; this equals ``skimage.metrics.structural_similarity(y1, y2, data_range=255,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.

No border is shaved before either metric (some papers shave ``scale`` pixels; ours are lower then).

:func:`evaluate` degrades clean images the way the checkpoint was trained for
(:meth:`~stylize_core.degrade.Degradation.at_eval`, seeded per input), restores them and scores
output and baseline (Lanczos upscale for super-resolution, the degraded input for restoration)
against the clean image cropped to a multiple of the scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .degrade import Degradation, crop_to_multiple, seed_of, upscale

# The columns --evaluate adds to metrics rows (jobs/common/metrics_schema.py) and CLI --json rows.
EVALUATION_KEYS = ("psnr", "ssim", "baseline_psnr", "baseline_ssim")
_Y = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0
_SIGMA, _TRUNCATE, _K1, _K2, _RANGE = 1.5, 3.5, 0.01, 0.03, 255.0


def luminance(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float64 BT.601 Y in 16..235."""
    return 16.0 + image[..., :3].astype(np.float64) @ _Y


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape}")
    return luminance(a), luminance(b)


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """PSNR (dB) on luminance between two (H, W, 3) uint8 images of one size."""
    x, y = _pair(reference, image)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(_RANGE**2 / mse)


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
    """SSIM on luminance between two (H, W, 3) uint8 images of one size (at least 7 px a side)."""
    x, y = _pair(reference, image)
    if min(x.shape) < 7:
        raise ValueError(f"SSIM needs images of at least 7 x 7 pixels, got {x.shape[1]} x {x.shape[0]}")

    blur = _gaussian_blur
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (_K1 * _RANGE) ** 2, (_K2 * _RANGE) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = _RADIUS
    return float(s[pad:-pad, pad:-pad].mean())


_RADIUS = int(_TRUNCATE * _SIGMA + 0.5)  # the Gaussian window's radius: 5 (11 x 11)
_KERNEL = np.exp(-0.5 * (np.arange(-_RADIUS, _RADIUS + 1) / _SIGMA) ** 2)
_KERNEL /= _KERNEL.sum()


def _gaussian_blur(a: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur of a 2-D array, edges mirrored (d c b a | a b c d), as
    ``scipy.ndimage.gaussian_filter(a, 1.5, truncate=3.5, mode="reflect")``."""
    r = _RADIUS
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        p = np.pad(a, pad, mode="symmetric")
        n = a.shape[axis]
        a = sum(w * (p[k : k + n] if axis == 0 else p[:, k : k + n]) for k, w in enumerate(_KERNEL))
    return a


@dataclass
class Evaluation:
    """One input's scores: the model's output and the baseline, each against the clean image."""

    degraded: np.ndarray  # what the model was given
    baseline: np.ndarray  # Lanczos upscale (SR) or the degraded image itself, at the output's size
    reference: np.ndarray  # the clean image, cropped to a multiple of the scale
    psnr: float = float("nan")
    ssim: float = float("nan")
    baseline_psnr: float = float("nan")
    baseline_ssim: float = float("nan")

    def score(self, output: np.ndarray) -> Evaluation:
        self.psnr, self.ssim = psnr(self.reference, output), _ssim_or_nan(self.reference, output)
        return self


def _ssim_or_nan(reference: np.ndarray, image: np.ndarray) -> float:
    return ssim(reference, image) if min(reference.shape[:2]) >= 7 else float("nan")


def prepare(image: np.ndarray, degradation: Degradation, key: str) -> Evaluation:
    """Degrade a clean image at the degradation's evaluation point (seeded by ``key``) and score the baseline."""
    d = degradation.at_eval()
    reference = crop_to_multiple(image, d.scale)
    degraded = d(reference, seed_of(key))
    baseline = upscale(degraded, d.scale, "lanczos")
    return Evaluation(degraded, baseline, reference, baseline_psnr=psnr(reference, baseline),
                      baseline_ssim=_ssim_or_nan(reference, baseline))


def evaluate(images: Sequence[np.ndarray], degradation: Degradation,
             restore: Callable[[list[np.ndarray]], list[np.ndarray]], keys: Sequence[str] | None = None
             ) -> list[Evaluation]:
    """Degrade, restore (``restore([degraded]) -> [output]``) and score each clean image."""
    keys = list(keys) if keys is not None else [str(i) for i in range(len(images))]
    prepared = [prepare(img, degradation, k) for img, k in zip(images, keys)]
    outputs = restore([p.degraded for p in prepared])
    return [p.score(out) for p, out in zip(prepared, outputs)]
