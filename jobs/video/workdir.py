"""Where the video job's work files live, and what a finished segment records.

Work files of a run live under ``{output}/_video_work/run_id={run}/{hash of rel path}/``:
``{style}/seg-NNNNN.nut`` (the encoded segment), ``seg-NNNNN.npz`` (its first and last frames, for
the seam measure) and ``seg-NNNNN.json`` (its statistics, written last: a segment is finished when
its JSON exists, so a rerun of the run id skips it).
"""

from __future__ import annotations

import hashlib

from jobs.common.storage import join_uri
from jobs.video.settings import VideoSettings

STAT_FIELDS = ("frames", "cuts", "ewarp_out_sum", "ewarp_out_n", "ewarp_pf_sum", "ewarp_pf_n", "loss_n",
               "content_out_sum", "style_out_sum", "content_pf_sum", "style_pf_sum", "stat_out_sum", "stat_ratio_out_sum")


def work_prefix(settings: VideoSettings, rel_path: str) -> str:
    digest = hashlib.sha1(rel_path.encode()).hexdigest()[:16]  # any rel path (sequences carry '#') -> one safe name
    return join_uri(settings.output, "_video_work", f"run_id={settings.run_id}", digest)


def segment_uris(settings: VideoSettings, rel_path: str, index: int) -> dict[str, str]:
    base = work_prefix(settings, rel_path)
    uris = {"json": join_uri(base, f"seg-{index:05d}.json"), "npz": join_uri(base, f"seg-{index:05d}.npz")}
    uris |= {f"video:{s}": join_uri(base, s, f"seg-{index:05d}.nut") for s in settings.style_names}
    return uris


def stats_to_json(stats) -> dict:
    return {**{k: getattr(stats, k) for k in STAT_FIELDS}, "ms": stats.ms}
