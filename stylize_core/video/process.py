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
# -> per image (content, style) losses, or (content, style, style_stat_distance, style_stat_ratio)
LossFn = Callable[[list[np.ndarray], list[np.ndarray]], list[tuple[float, ...]]]
SinkFn = Callable[[object, np.ndarray], None]
# (frame key, input frame, output frame) -> the frame to write: a mask composited over the input
CompositeFn = Callable[[object, np.ndarray, np.ndarray], np.ndarray]

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
    stat_out_sum: float = 0.0  # the output's style_stat_distance and style_stat_ratio (NaN: not measured)
    stat_ratio_out_sum: float = 0.0
    ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMINGS, 0.0))
    # Seam material: the first and last kept input/output frames, for the join's seam measure.
    first_in: np.ndarray | None = None
    first_out: np.ndarray | None = None
    last_in: np.ndarray | None = None
    last_out: np.ndarray | None = None
    last_pf: np.ndarray | None = None

    def add(self, other: ClipStats) -> None:
        for name in ("frames", "cuts", "ewarp_out_sum", "ewarp_out_n", "ewarp_pf_sum", "ewarp_pf_n", "loss_n",
                     "content_out_sum", "style_out_sum", "content_pf_sum", "style_pf_sum", "stat_out_sum",
                     "stat_ratio_out_sum"):
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
            "style_stat_distance": self._mean(self.stat_out_sum, self.loss_n),
            "style_stat_ratio": self._mean(self.stat_ratio_out_sum, self.loss_n),
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


_Motion = tuple[np.ndarray | None, np.ndarray | None, bool]  # (backward flow, reliable mask, scene cut)


class _ClipRun:
    """What the steps of :func:`stylize_clip` share: the styles' stats and blenders, the flow and cut
    detectors, the meter, and the previous input frame."""

    def __init__(self, stylize: Mapping[str, StylizeFn], sinks: Mapping[str, SinkFn], *, warmup: int, temporal: str,
                 weight: float, flow: DisFlow | None, cuts: SceneCutDetector | None, meter_side: int | None,
                 losses: Mapping[str, LossFn] | None, loss_every: int,
                 composite: Mapping[str, CompositeFn] | None = None) -> None:
        self.stylize, self.sinks, self.warmup, self.temporal = stylize, sinks, warmup, temporal
        self.composite = composite or {}
        self.losses, self.loss_every = losses, loss_every
        self.styles = list(stylize)
        self.stats = {s: ClipStats() for s in self.styles}
        self.blenders = {s: TemporalBlender(weight) for s in self.styles}
        self.flow = flow or DisFlow()
        self.cuts = cuts or SceneCutDetector()
        self.meter = WarpErrorMeter(meter_side) if meter_side is not None else None
        self.prev: tuple[np.ndarray, np.ndarray] | None = None  # the previous input frame: (grey, histogram)

    def motion(self, batch: list[tuple[object, np.ndarray]]) -> list[_Motion]:
        """Flow and cut detection for each frame against its predecessor (shared by every style)."""
        motion = []
        for _, rgb in batch:
            gray = to_gray(rgb)
            hist = SceneCutDetector.histogram(gray)
            back = mask = None
            cut = False
            if self.prev is not None:
                if self.temporal == "flow":
                    back, mask = self.flow.back_and_mask(self.prev[0], gray)
                cut = self.cuts.is_cut(self.prev[1], hist, mask)
            motion.append((back, mask, cut))
            self.prev = (gray, hist)
        return motion

    def style_batch(self, s: str, batch: list[tuple[object, np.ndarray]], motion: list[_Motion], first: int) -> None:
        """Stylise a batch with style ``s``, then blend, sink and measure its frames in order;
        ``first`` is the clip index of the batch's first frame."""
        st = self.stats[s]
        images = [rgb for _, rgb in batch]
        t0 = time.perf_counter()
        stylised = self.stylize[s](images)
        st.ms["stylize"] += (time.perf_counter() - t0) * 1000
        if len(stylised) != len(images):
            raise RuntimeError(f"style {s!r}: {len(images)} frames in, {len(stylised)} out")
        for j, ((key, rgb), per_frame, (back, mask, cut)) in enumerate(zip(batch, stylised, motion)):
            i = first + j
            t0 = time.perf_counter()
            if self.temporal == "none" or cut:
                self.blenders[s].reset()
            out = self.blenders[s].step(per_frame, back, mask) if self.temporal == "flow" else per_frame
            st.ms["blend"] += (time.perf_counter() - t0) * 1000
            if i >= self.warmup:  # warm-up frames only build the blender's state
                self.keep(s, i, key, rgb, out, per_frame, cut)

    def keep(self, s: str, i: int, key: object, rgb: np.ndarray, out: np.ndarray, per_frame: np.ndarray,
             cut: bool) -> None:
        """A kept frame: sink it (composited over its input where a mask says so), measure it, and
        remember it as seam material. What is measured and remembered is the blended stylisation
        before the mask, as the image programs measure a masked input's network output."""
        st = self.stats[s]
        kept = i - self.warmup
        st.frames += 1
        st.cuts += int(cut)
        written = out
        if s in self.composite:
            t0 = time.perf_counter()
            written = self.composite[s](key, rgb, out)
            st.ms["blend"] += (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        self.sinks[s](key, written)
        st.ms["encode"] += (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        self.measure(s, i, kept, rgb, out, per_frame)
        st.ms["measure"] += (time.perf_counter() - t0) * 1000
        if st.first_in is None:
            st.first_in, st.first_out = rgb, out
        st.last_in, st.last_out, st.last_pf = rgb, out, per_frame

    def measure(self, s: str, i: int, kept: int, rgb: np.ndarray, out: np.ndarray, per_frame: np.ndarray) -> None:
        """E_warp against the previous kept frame, and the losses on every ``loss_every``-th kept frame."""
        st = self.stats[s]
        if self.meter is not None and st.last_in is not None and kept > 0:
            e = self.meter.pair(st.last_in, rgb, {"out": (st.last_out, out), "pf": (st.last_pf, per_frame)}, key=i)
            for name, attr in (("out", "ewarp_out"), ("pf", "ewarp_pf")):
                if not math.isnan(e[name]):
                    setattr(st, f"{attr}_sum", getattr(st, f"{attr}_sum") + e[name])
                    setattr(st, f"{attr}_n", getattr(st, f"{attr}_n") + 1)
        if self.losses and s in self.losses and kept % self.loss_every == 0:
            got_out, got_pf = self.losses[s]([rgb, rgb], [out, per_frame])
            (c_out, s_out), (c_pf, s_pf) = got_out[:2], got_pf[:2]
            d_out, r_out = got_out[2:4] if len(got_out) >= 4 else (math.nan, math.nan)
            st.stat_out_sum += d_out
            st.stat_ratio_out_sum += r_out
            st.loss_n += 1
            st.content_out_sum += c_out
            st.style_out_sum += s_out
            st.content_pf_sum += c_pf
            st.style_pf_sum += s_pf

    def share(self, stage: str, ms: float) -> None:
        """Work done once for every style, split so the sums over styles stay true."""
        for s in self.styles:
            self.stats[s].ms[stage] += ms / len(self.styles)


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
    composite: Mapping[str, CompositeFn] | None = None,
) -> dict[str, ClipStats]:
    """Stylise a clip with every style; returns per-style :class:`ClipStats` of the kept frames.

    ``frames`` yields ``(key, (H, W, 3) uint8)`` in order; the first ``warmup`` frames only build the
    temporal state (not sunk, not measured). ``temporal="none"`` writes the per-frame stylisation.
    E_warp is measured (Farneback, see :mod:`.warp_error`) on pairs of kept frames for the output and
    the per-frame stylisation; ``meter_side=None`` skips it. ``losses`` (optional) measure content and
    style loss every ``loss_every``-th kept frame, for both. ``composite`` (optional, per style) makes
    the frame each sink gets from its key, input and output (a mask over the input), after the
    temporal blend; the blend's state, the measures and the seam frames stay the unmasked output.
    """
    if temporal not in ("flow", "none"):
        raise ValueError(f"temporal must be 'flow' or 'none', got {temporal!r}")
    run = _ClipRun(stylize, sinks, warmup=warmup, temporal=temporal, weight=weight, flow=flow, cuts=cuts,
                   meter_side=meter_side, losses=losses, loss_every=loss_every, composite=composite)
    decode_ms = [0.0]
    source = _timed(frames, decode_ms)
    n = 0
    # range first: zip stops on it before taking a frame the batch has no room for
    while batch := [item for _, item in zip(range(batch_size), source)]:
        t0 = time.perf_counter()
        motion = run.motion(batch)
        flow_ms = (time.perf_counter() - t0) * 1000
        for s in run.styles:
            run.style_batch(s, batch, motion, n)
        n += len(batch)
        run.share("flow", flow_ms)
    run.share("decode", decode_ms[0])
    for s in run.styles:
        run.stats[s].last_pf = None  # only needed between frames; the join's seams use first/last in/out
    return run.stats
