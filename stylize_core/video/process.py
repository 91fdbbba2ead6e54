"""The per-segment loop: input frames -> flow -> stylise (batched) -> blend -> sink, measured.

Independent of where frames come from (a video range, an image sequence) and go to (an encoder,
image files), and of what stylises them: ``stylize`` maps a list of (H, W, 3) uint8 frames to as
many stylised frames, e.g. ``lambda frames: [r.image for r in stylizer.stylize(frames, style)]``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .flow import DisFlow, to_gray
from .temporal import DEFAULT_WEIGHT, SceneCutDetector, TemporalBlender
from .warp_error import WarpErrorMeter

StylizeFn = Callable[[list[np.ndarray]], list[np.ndarray]]
LossFn = Callable[[list[np.ndarray], list[np.ndarray]], list[tuple[float, float]]]  # -> (content, style) each
SinkFn = Callable[[object, np.ndarray], None]

TIMINGS = ("decode", "flow", "stylize", "blend", "encode", "measure")


@dataclass
class ClipStats:
    """One style's totals over the kept frames of a clip or segment (sums, so segments add up)."""

    frames: int = 0
    cuts: int = 0
    ewarp_out_sum: float = 0.0
    ewarp_out_n: int = 0
    ewarp_pf_sum: float = 0.0  # the per-frame (un-blended) stylisation
    ewarp_pf_n: int = 0
    loss_n: int = 0
    content_out_sum: float = 0.0
    style_out_sum: float = 0.0
    content_pf_sum: float = 0.0
    style_pf_sum: float = 0.0
    ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMINGS, 0.0))
    # Seam material: the first and last kept input/output frames, for the join's seam measure.
    first_in: np.ndarray | None = None
    first_out: np.ndarray | None = None
    last_in: np.ndarray | None = None
    last_out: np.ndarray | None = None
    last_pf: np.ndarray | None = None

    def add(self, other: ClipStats) -> None:
        for name in ("frames", "cuts", "ewarp_out_sum", "ewarp_out_n", "ewarp_pf_sum", "ewarp_pf_n", "loss_n",
                     "content_out_sum", "style_out_sum", "content_pf_sum", "style_pf_sum"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for k, v in other.ms.items():
            self.ms[k] = self.ms.get(k, 0.0) + v

    @staticmethod
    def _mean(s: float, n: int) -> float:
        return s / n if n else float("nan")

    @property
    def ewarp_out(self) -> float:
        return self._mean(self.ewarp_out_sum, self.ewarp_out_n)

    @property
    def ewarp_per_frame(self) -> float:
        return self._mean(self.ewarp_pf_sum, self.ewarp_pf_n)

    def summary(self) -> dict[str, float]:
        """Means, and milliseconds per kept frame for each stage."""
        per = max(1, self.frames)
        return {
            "frames": self.frames, "scene_cuts": self.cuts, "ewarp_output": self.ewarp_out,
            "ewarp_per_frame": self.ewarp_per_frame,
            "content_loss": self._mean(self.content_out_sum, self.loss_n),
            "style_loss": self._mean(self.style_out_sum, self.loss_n),
            "content_loss_per_frame": self._mean(self.content_pf_sum, self.loss_n),
            "style_loss_per_frame": self._mean(self.style_pf_sum, self.loss_n),
            **{f"{k}_ms": v / per for k, v in self.ms.items()},
        }


def _timed(frames: Iterable, ms: list[float]):
    it = iter(frames)
    while True:
        t = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        ms[0] += (time.perf_counter() - t) * 1000
        yield item


def stylize_clip(
    frames: Iterable[tuple[object, np.ndarray]],
    stylize: Mapping[str, StylizeFn],
    sinks: Mapping[str, SinkFn],
    *,
    warmup: int = 0,
    temporal: str = "flow",
    weight: float = DEFAULT_WEIGHT,
    batch_size: int = 8,
    flow: DisFlow | None = None,
    cuts: SceneCutDetector | None = None,
    meter_side: int | None = 320,
    losses: Mapping[str, LossFn] | None = None,
    loss_every: int = 10,
) -> dict[str, ClipStats]:
    """Stylise a clip with every style; returns per-style :class:`ClipStats` of the kept frames.

    ``frames`` yields ``(key, (H, W, 3) uint8)`` in order; the first ``warmup`` frames only build the
    temporal state (not sunk, not measured). ``temporal="none"`` writes the per-frame stylisation.
    E_warp is measured (Farneback, see :mod:`.warp_error`) on pairs of kept frames for the output and
    the per-frame stylisation; ``meter_side=None`` skips it. ``losses`` (optional) measure content and
    style loss every ``loss_every``-th kept frame, for both.
    """
    if temporal not in ("flow", "none"):
        raise ValueError(f"temporal must be 'flow' or 'none', got {temporal!r}")
    styles = list(stylize)
    stats = {s: ClipStats() for s in styles}
    blenders = {s: TemporalBlender(weight) for s in styles}
    flow = flow or DisFlow()
    cuts = cuts or SceneCutDetector()
    meter = WarpErrorMeter(meter_side) if meter_side is not None else None
    decode_ms = [0.0]
    prev: dict | None = None  # the previous frame: input, grey, histogram, and per style (out, per-frame)
    n = 0
    source = _timed(frames, decode_ms)
    while True:
        batch = [item for _, item in zip(range(batch_size), source)]
        if not batch:
            break
        # Flow and cut detection for each frame against its predecessor (shared by every style).
        t0 = time.perf_counter()
        motion = []
        for key, rgb in batch:
            gray = to_gray(rgb)
            hist = SceneCutDetector.histogram(gray)
            back = mask = None
            cut = False
            if prev is not None:
                if temporal == "flow":
                    back, mask = flow.back_and_mask(prev["gray"], gray)
                cut = cuts.is_cut(prev["hist"], hist, mask)
            motion.append((back, mask, cut))
            prev_in = {"gray": gray, "hist": hist}
            prev = prev_in if prev is None else prev | prev_in
        flow_ms = (time.perf_counter() - t0) * 1000
        images = [rgb for _, rgb in batch]
        for s in styles:
            st = stats[s]
            t0 = time.perf_counter()
            stylised = stylize[s](images)
            st.ms["stylize"] += (time.perf_counter() - t0) * 1000
            if len(stylised) != len(images):
                raise RuntimeError(f"style {s!r}: {len(images)} frames in, {len(stylised)} out")
            for j, ((key, rgb), per_frame, (back, mask, cut)) in enumerate(zip(batch, stylised, motion)):
                i = n + j
                t0 = time.perf_counter()
                if temporal == "none" or cut:
                    blenders[s].reset()
                out = blenders[s].step(per_frame, back, mask) if temporal == "flow" else per_frame
                st.ms["blend"] += (time.perf_counter() - t0) * 1000
                if i < warmup:
                    continue
                kept = i - warmup
                st.frames += 1
                st.cuts += int(cut)
                t0 = time.perf_counter()
                sinks[s](key, out)
                st.ms["encode"] += (time.perf_counter() - t0) * 1000
                t0 = time.perf_counter()
                last = st.last_in is not None and kept > 0
                if meter is not None and last:
                    e = meter.pair(st.last_in, rgb, {"out": (st.last_out, out), "pf": (st.last_pf, per_frame)}, key=i)
                    for name, attr in (("out", "ewarp_out"), ("pf", "ewarp_pf")):
                        if not math.isnan(e[name]):
                            setattr(st, f"{attr}_sum", getattr(st, f"{attr}_sum") + e[name])
                            setattr(st, f"{attr}_n", getattr(st, f"{attr}_n") + 1)
                if losses and s in losses and kept % loss_every == 0:
                    (c_out, s_out), (c_pf, s_pf) = losses[s]([rgb, rgb], [out, per_frame])
                    st.loss_n += 1
                    st.content_out_sum += c_out
                    st.style_out_sum += s_out
                    st.content_pf_sum += c_pf
                    st.style_pf_sum += s_pf
                st.ms["measure"] += (time.perf_counter() - t0) * 1000
                if st.first_in is None:
                    st.first_in, st.first_out = rgb, out
                st.last_in, st.last_out, st.last_pf = rgb, out, per_frame
        n += len(batch)
        for s in styles:
            stats[s].ms["flow"] += flow_ms / len(styles)  # shared work, split so the sums stay true
    for s in styles:
        stats[s].ms["decode"] += decode_ms[0] / len(styles)
        stats[s].last_pf = None
    return stats
