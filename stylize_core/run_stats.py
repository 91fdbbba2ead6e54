"""Timing without host syncs, and what the Stylizer's forward passes looked like (for run summaries)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import torch


class DeviceClock:
    """Time marks on the device's stream: CUDA events on CUDA (recorded, read only after the work
    is done, so timing never stalls the host), ``perf_counter`` on CPU (where ops are synchronous)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def wait(self, mark: Any) -> None:
        """Block until the work queued before ``mark`` is done (no-op on CPU)."""
        if self.cuda:
            mark.synchronize()

    def elapsed_ms(self, start: Any, end: Any) -> float:
        """Milliseconds between two marks; on CUDA only after :meth:`wait` on ``end``."""
        if self.cuda:
            return float(start.elapsed_time(end))
        return (end - start) * 1000.0


class ForwardStats:
    """Images per forward pass (a histogram), padding share and, on CUDA, device busy time.

    Utilisation is an estimate: the stream time from the first to the last event of each batch,
    summed, over the wall time from the first call's start to the last call's end. Gaps inside a
    batch where the device waited for the host count as busy, gaps between batches (and between
    calls, e.g. while the caller decodes) do not.
    """

    def __init__(self, device: torch.device) -> None:
        self.device_type = device.type
        self.reset()

    def reset(self) -> None:
        self.per_forward: Counter[int] = Counter()
        self.padded_pixels = 0
        self.pixels = 0
        self.busy_ms = 0.0
        self.first_start: float | None = None
        self.last_end: float | None = None
        self.calls = 0

    def call_started(self) -> None:
        now = time.perf_counter()
        if self.first_start is None:
            self.first_start = now
        self.calls += 1

    def call_ended(self) -> None:
        self.last_end = time.perf_counter()

    def record_forward(self, images: int, image_pixels: int, batch_pixels: int) -> None:
        """One forward pass of ``images`` images: ``image_pixels`` real, ``batch_pixels`` with padding."""
        self.per_forward[images] += 1
        self.pixels += batch_pixels
        self.padded_pixels += batch_pixels - image_pixels

    def record_busy(self, ms: float) -> None:
        self.busy_ms += ms

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary: forward_calls, images, images_per_forward_mean, images_per_forward_hist
        ({"count": passes}), pad_fraction, calls, wall_s, and on CUDA busy_s and utilisation (else None)."""
        forwards = sum(self.per_forward.values())
        images = sum(k * v for k, v in self.per_forward.items())
        wall = (self.last_end - self.first_start) if self.first_start is not None and self.last_end is not None else 0.0
        cuda = self.device_type == "cuda"
        return {
            "device": self.device_type,
            "calls": self.calls,
            "forward_calls": forwards,
            "images": images,
            "images_per_forward_mean": images / forwards if forwards else 0.0,
            "images_per_forward_hist": {str(k): self.per_forward[k] for k in sorted(self.per_forward)},
            "pad_fraction": self.padded_pixels / self.pixels if self.pixels else 0.0,
            "wall_s": wall,
            "busy_s": self.busy_ms / 1000 if cuda else None,
            "utilisation": (self.busy_ms / 1000 / wall if wall > 0 else 0.0) if cuda else None,
        }
