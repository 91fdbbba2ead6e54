"""Degradations made on the fly from clean images: what enhancement networks are trained to undo.

A :class:`Degradation` applies, in this order (each step optional), the first-order chain of
Real-ESRGAN (Wang et al. 2021) reduced to what this project trains:

1. Gaussian blur, sigma drawn from ``blur_sigma`` (pixels of the clean image);
2. downscaling by ``scale`` with Pillow's antialiased ``bicubic`` or ``area`` (box) filter; the
   clean image is first cropped to a multiple of ``scale`` (:func:`crop_to_multiple`), so the
   restored output has exactly the clean image's size;
3. Gaussian noise, sigma drawn from ``noise_sigma`` on the 8-bit scale (added per channel, rounded,
   clipped to 0..255);
4. JPEG at a quality drawn from ``jpeg_quality`` (Pillow, 4:2:0 chroma subsampling).

Ranges are (low, high), drawn uniformly per image from a seeded ``numpy`` generator, so the same
seed gives the same degraded image everywhere. ``compound`` (the "real-world" option) turns on all
four. :meth:`Degradation.at_eval` fixes every range at its evaluation point (``eval_*``, default the
range's middle): what ``--evaluate`` and the benchmarks use.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

Range = tuple[float, float]
DOWNSCALE_MODES = {"bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX}


@dataclass(frozen=True)
class Degradation:
    scale: int = 1
    downscale: str = "bicubic"  # or "area"
    blur_sigma: Range = (0.0, 0.0)
    noise_sigma: Range = (0.0, 0.0)
    jpeg_quality: Range | None = None  # None: no JPEG step
    eval_blur_sigma: float | None = None
    eval_noise_sigma: float | None = None
    eval_jpeg_quality: float | None = None

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"degradation scale must be >= 1, got {self.scale}")
        if self.downscale not in DOWNSCALE_MODES:
            raise ValueError(f"downscale must be one of {sorted(DOWNSCALE_MODES)}, got {self.downscale!r}")
        for name in ("blur_sigma", "noise_sigma", "jpeg_quality"):
            r = getattr(self, name)
            if r is not None and (len(r) != 2 or r[0] > r[1] or r[0] < 0):
                raise ValueError(f"{name} must be a (low, high) range with 0 <= low <= high, got {r}")
        if self.jpeg_quality is not None and not (1 <= self.jpeg_quality[0] and self.jpeg_quality[1] <= 100):
            raise ValueError(f"jpeg_quality must lie within 1..100, got {self.jpeg_quality}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Degradation:
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown degradation keys: {unknown}")
        for k in ("blur_sigma", "noise_sigma", "jpeg_quality"):
            if data.get(k) is not None:
                data[k] = tuple(float(v) for v in data[k])
        return cls(**data)

    def at_eval(self) -> Degradation:
        """Every range fixed at its evaluation point (``eval_*``, else the range's middle)."""

        def point(r: Range | None, fixed: float | None) -> Range | None:
            if r is None:
                return None
            v = (r[0] + r[1]) / 2 if fixed is None else float(fixed)
            return (v, v)

        return replace(self, blur_sigma=point(self.blur_sigma, self.eval_blur_sigma),  # type: ignore[arg-type]
                       noise_sigma=point(self.noise_sigma, self.eval_noise_sigma),  # type: ignore[arg-type]
                       jpeg_quality=point(self.jpeg_quality, self.eval_jpeg_quality))

    def describe(self) -> str:
        parts = []
        if self.blur_sigma[1] > 0:
            parts.append(f"blur {_r(self.blur_sigma)}")
        if self.scale > 1:
            parts.append(f"{self.downscale} x1/{self.scale}")
        if self.noise_sigma[1] > 0:
            parts.append(f"noise sigma {_r(self.noise_sigma)}")
        if self.jpeg_quality is not None:
            parts.append(f"JPEG q{_r(self.jpeg_quality)}")
        return ", ".join(parts) or "none"

    def __call__(self, image: np.ndarray, rng: np.random.Generator | int = 0) -> np.ndarray:
        """The degraded copy of a clean (H, W, 3) uint8 image: (H // scale, W // scale, 3) uint8."""
        rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        img = Image.fromarray(crop_to_multiple(image, self.scale))
        sigma = rng.uniform(*self.blur_sigma)
        if sigma > 0:
            img = img.filter(ImageFilter.GaussianBlur(sigma))
        if self.scale > 1:
            img = img.resize((img.width // self.scale, img.height // self.scale), DOWNSCALE_MODES[self.downscale])
        out = np.asarray(img)
        noise = rng.uniform(*self.noise_sigma)
        if noise > 0:
            out = add_noise(out, noise, rng)
        if self.jpeg_quality is not None:
            out = jpeg(out, int(round(rng.uniform(*self.jpeg_quality))))
        return np.ascontiguousarray(out)


def _r(r: Range) -> str:
    return f"{r[0]:g}" if r[0] == r[1] else f"{r[0]:g}-{r[1]:g}"


def crop_to_multiple(image: np.ndarray, scale: int) -> np.ndarray:
    """The top-left part of ``image`` whose sides are multiples of ``scale``."""
    h, w = image.shape[0] // scale * scale, image.shape[1] // scale * scale
    if h == 0 or w == 0:
        raise ValueError(f"a {image.shape[1]}x{image.shape[0]} image is too small to downscale by {scale}")
    return image[:h, :w]


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator | int = 0) -> np.ndarray:
    """``image`` plus Gaussian noise of ``sigma`` (8-bit scale), rounded and clipped to uint8."""
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` encoded as JPEG at ``quality`` (Pillow, 4:2:0) and decoded again."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def upscale(image: np.ndarray, scale: int, method: str = "lanczos") -> np.ndarray:
    """The classical upscale an SR network is compared with (Pillow's Lanczos by default)."""
    if scale == 1:
        return image
    resample = {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC}[method]
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w * scale, h * scale), resample))


def seed_of(key: str) -> int:
    """A stable per-input seed (the same input degrades the same way on every run and worker)."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


# The four tasks' training degradations (jobs.train --task and the demo checkpoints).
TASK_DEGRADATIONS = {
    "sr2": Degradation(scale=2, downscale="bicubic"),
    "sr4": Degradation(scale=4, downscale="bicubic"),
    "denoise": Degradation(noise_sigma=(5.0, 50.0), eval_noise_sigma=25.0),
    "deblock": Degradation(jpeg_quality=(10.0, 40.0), eval_jpeg_quality=20.0),
}


def task_degradation(task: str, compound: bool = False) -> Degradation:
    """The degradation ``task`` trains against; ``compound``: blur, noise and JPEG on top (real-world)."""
    try:
        d = TASK_DEGRADATIONS[task]
    except KeyError:
        raise ValueError(f"unknown enhancement task {task!r}; choose one of {', '.join(TASK_DEGRADATIONS)}") from None
    if compound:
        d = replace(d, blur_sigma=(0.0, 1.5), eval_blur_sigma=0.8,
                    noise_sigma=d.noise_sigma if d.noise_sigma[1] else (0.0, 10.0),
                    eval_noise_sigma=d.eval_noise_sigma if d.noise_sigma[1] else 5.0,
                    jpeg_quality=d.jpeg_quality or (40.0, 95.0),
                    eval_jpeg_quality=d.eval_jpeg_quality if d.jpeg_quality else 70.0)
    return d
