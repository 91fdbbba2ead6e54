"""Video and frame sequences: decode/encode (PyAV), optical flow (OpenCV DIS), temporal blending,
warping error, segment planning and the per-segment processing loop.

Ray-free like the rest of ``stylize_core``. PyAV and OpenCV are imported lazily by the modules that
need them, and the names below load on first use (PEP 562), so ``import stylize_core`` and
``import stylize_core.video`` stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    ".errors": ["VideoError"],
    ".probe": ["VideoInfo", "probe_video", "VIDEO_EXTENSIONS"],
    ".decode": ["iter_frames", "output_size"],
    ".encode": ["SegmentWriter", "EncodeOptions"],
    ".join": ["join_segments", "output_container"],
    ".flow": ["DisFlow", "FarnebackFlow", "consistency_mask", "warp"],
    ".temporal": ["SceneCutDetector", "TemporalBlender"],
    ".warp_error": ["WarpErrorMeter", "pair_warp_error"],
    ".segments": ["SegmentPlan", "plan_segments"],
    ".process": ["ClipStats", "stylize_clip"],
    ".sequence": ["FrameSequence", "find_sequences", "read_sequence_frame", "write_sequence_frame"],
    ".synthetic": ["make_clip", "pan_frames"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'stylize_core.video' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
