"""Cutting a clip into segments that run in parallel, each with a warm-up before its start."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class SegmentPlan:
    """Frames ``[start, end)`` (indices in presentation order) are this segment's output; frames
    ``[warm_start, start)`` are stylised only to build the temporal state, then dropped."""

    index: int
    start: int
    end: int
    warm_start: int

    @property
    def frames(self) -> int:
        return self.end - self.start

    @property
    def warmup(self) -> int:
        return self.start - self.warm_start


def plan_segments(frame_pts: list[int], keyframe_pts: list[int], time_base: Fraction,
                  segment_seconds: float, warmup_frames: int) -> list[SegmentPlan]:
    """Segments of about ``segment_seconds`` starting on keyframes (so a segment without warm-up
    decodes from its own first frame); a clip shorter than that, or with a single keyframe, is one
    segment. ``segment_seconds <= 0`` means one segment."""
    n = len(frame_pts)
    starts = [0]
    if segment_seconds > 0:
        step = Fraction(segment_seconds).limit_denominator(1000) / time_base
        for k in keyframe_pts:
            i = bisect.bisect_left(frame_pts, k)
            if i < n and frame_pts[i] == k and i > starts[-1] and k - frame_pts[starts[-1]] >= step:
                starts.append(i)
    ends = starts[1:] + [n]
    return [SegmentPlan(j, s, e, max(0, s - warmup_frames)) for j, (s, e) in enumerate(zip(starts, ends))]
