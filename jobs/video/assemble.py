"""The last step per video: join the segments per style (audio copied), measure the seams, and
build the metrics rows. A video's rows are kept in its work directory, so a rerun of a finished
run id returns them instead of redoing the join."""

from __future__ import annotations

import io
import math
import os
import posixpath
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stylize_core.video.errors import VideoError
from stylize_core.video.join import SEGMENT_EXT, join_segments, output_container
from stylize_core.video.process import ClipStats

from jobs.common.storage import exists, get_file, join_uri, local_path, output_uri, read_bytes, remove
from jobs.video.masks import clip_mask_uri
from jobs.video.workdir import STAT_FIELDS, segment_uris, work_prefix

STRIP_FRAMES = 4
STRIP_H = 96


def _stats(data: dict) -> ClipStats:
    st = ClipStats()
    for k in STAT_FIELDS:
        setattr(st, k, data.get(k, math.nan) if k.startswith("stat_") else data[k])  # work files of before: no stats
    st.ms = dict(data["ms"])
    return st


def _strip(frames_in: list[np.ndarray], frames_out: list[np.ndarray]) -> np.ndarray:
    """Inputs on top, outputs below, each frame scaled to STRIP_H rows: (2*STRIP_H, W, 3) uint8."""
    import cv2

    def row(frames):
        cells = [cv2.resize(f, (max(2, round(f.shape[1] * STRIP_H / f.shape[0])), STRIP_H), interpolation=cv2.INTER_AREA)
                 for f in frames]
        return np.concatenate(cells, axis=1)

    top, bottom = row(frames_in), row(frames_out)
    w = min(top.shape[1], bottom.shape[1])
    return np.concatenate([top[:, :w], bottom[:, :w]], axis=0)


def _sample_video(path: str, picks: set[int], size=None) -> list[np.ndarray]:
    from stylize_core.video.decode import iter_frames, output_size
    from stylize_core.video.probe import probe_video

    info = probe_video(path)
    return [rgb for i, (_, rgb) in enumerate(iter_frames(path, info, size or output_size(info, None))) if i in picks]


def _base_row(worker, task: dict, style: str) -> dict:
    info, seq = task.get("info"), task.get("sequence")
    w, h = info.display_size if info is not None else (-1, -1)
    return {
        "input_uri": task["uri"], "rel_path": task["rel_path"], "kind": worker.settings.kind,
        "input_bytes": task.get("input_bytes", -1), "style": style, "model_sha256": worker.sha256[style],
        "loss_model": worker.loss_model, "status": task.get("status", "ok"), "error_type": task.get("error_type", ""),
        "error": task.get("error", ""), "output_uri": "", "output_bytes": -1, "width": w, "height": h,
        "out_width": -1, "out_height": -1, "rotation": info.rotation if info is not None else 0,
        "frames": info.frames if info is not None else (seq.frames if seq is not None else -1),
        "duration_s": info.duration_s if info is not None else float("nan"),
        "fps": info.fps if info is not None else worker.settings.sequence_fps,
        "audio_streams": len(info.audio_streams) if info is not None else 0,
        "segments": len(task.get("plans") or []), "temporal": worker.settings.temporal, "device": worker.device_name,
        "mask_uri": clip_mask_uri(worker.settings, task),
    }


def error_rows(worker, task: dict, error_type: str, error: str) -> list[dict]:
    return [_base_row(worker, task, s) | {"status": "error", "error_type": error_type, "error": error}
            for s in worker.settings.style_names]


def _seams(worker, task: dict, style: str, npzs: list) -> tuple[float, int]:
    from stylize_core.video.warp_error import WarpErrorMeter

    if not worker.settings.measure_side or len(npzs) < 2:
        return 0.0, 0
    meter = WarpErrorMeter(worker.settings.measure_side)
    for prev, cur in zip(npzs, npzs[1:]):
        meter.pair(prev["last_in"], cur["first_in"], {"seam": (prev[f"last_out:{style}"], cur[f"first_out:{style}"])})
    return meter.sums["seam"], meter.counts["seam"]


def finished_rows(worker, rel_path: str) -> list[dict] | None:
    """The rows of an earlier, completed join of this run id, if every output they name still exists."""
    done_uri = join_uri(work_prefix(worker.settings, rel_path), "rows.json")
    if not exists(done_uri, worker.opts):
        return None
    rows = worker.load_json(done_uri)["rows"]
    ok = all(r["status"] != "ok" or exists(r["output_uri"], worker.opts) for r in rows)
    return rows if ok and {r["style"] for r in rows} == set(worker.settings.style_names) else None


def _quality(total: ClipStats, seam_sum: float, seam_n: int) -> dict:
    """A style's temporal and loss measures over the whole video: E_warp inside the segments and
    across their seams, and over both together."""
    summ = total.summary()
    all_n = total.ewarp_out_n + seam_n
    return dict(
        frames=total.frames, scene_cuts=total.cuts,
        ewarp_output=(total.ewarp_out_sum + seam_sum) / all_n if all_n else math.nan,
        ewarp_inside=summ["ewarp_output"], ewarp_per_frame=summ["ewarp_per_frame"],
        ewarp_seams=seam_sum / seam_n if seam_n else math.nan, seam_pairs=seam_n,
        content_loss=summ["content_loss"], style_loss=summ["style_loss"],
        content_loss_per_frame=summ["content_loss_per_frame"], style_loss_per_frame=summ["style_loss_per_frame"],
        style_stat_distance=summ["style_stat_distance"], style_stat_ratio=summ["style_stat_ratio"],
        **{k: summ[k] for k in summ if k.endswith("_ms")},
    )


@dataclass
class _VideoJoin:
    """One video's segments (work-file URIs, statistics, seam frames) and what its join has written."""

    worker: Any
    task: dict
    segs: list[dict[str, str]]
    seg_json: list[dict]
    npzs: list[dict[str, np.ndarray]]
    written: list[str]  # final outputs: the caller removes them again if the video fails
    strips: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def load(cls, worker, task: dict, written: list[str]) -> _VideoJoin:
        segs = [segment_uris(worker.settings, task["rel_path"], p.index) for p in task["plans"]]
        seg_json = [worker.load_json(u["json"]) for u in segs]
        npzs = [dict(np.load(io.BytesIO(read_bytes(u["npz"], worker.opts)))) for u in segs]
        return cls(worker, task, segs, seg_json, npzs, written)

    def row(self, style: str) -> dict:
        """The style's metrics row; for a video, its output is joined and written first."""
        started = time.perf_counter()
        total = ClipStats()
        for data in self.seg_json:
            total.add(_stats(data["styles"][style]))
        seam_sum, seam_n = _seams(self.worker, self.task, style, self.npzs)
        row = _base_row(self.worker, self.task, style)
        out_uri, out_bytes = self.output(style)
        first = self.npzs[0][f"first_out:{style}"]
        row.update(
            output_uri=out_uri, output_bytes=out_bytes, out_width=int(first.shape[1]), out_height=int(first.shape[0]),
            **_quality(total, seam_sum, seam_n),
            join_ms=(time.perf_counter() - started) * 1000,
            segment_wall_s=sum(d["wall_s"] for d in self.seg_json),
        )
        return row

    def output(self, style: str) -> tuple[str, int]:
        """(output URI, bytes or -1). A sequence's segments wrote its frames already: its row names the first."""
        s = self.worker.settings
        if s.kind == "sequence":
            first_rel = self.task["sequence"].rel_paths[0]
            return output_uri(s.output, style, first_rel, posixpath.splitext(first_rel)[1]), -1
        return self.join(style)

    def join(self, style: str) -> tuple[str, int]:
        """Concatenate the style's segment videos with the input's audio and write the result under its
        final name (and its contact strip when the task asks for one)."""
        worker, task = self.worker, self.task
        out_rel, muxer = output_container(task["rel_path"], worker.settings.codec)
        out_uri = output_uri(worker.settings.output, style, out_rel, posixpath.splitext(out_rel)[1])
        local = self.local_segments(style)
        tmp_out = os.path.join(worker.tmp, f"out-{style}{posixpath.splitext(out_rel)[1]}")
        try:
            join_segments(local, worker.local_input(task["uri"]), tmp_out, muxer, task["info"])
            out_bytes = os.path.getsize(tmp_out)
            worker.put(tmp_out, out_uri)
            self.written.append(out_uri)
            if task.get("contact"):
                self.strips[style] = self.contact_strip(tmp_out)
        finally:
            for p in [tmp_out] + [p for p in local if p.startswith(worker.tmp)]:
                if os.path.exists(p):
                    os.unlink(p)
        return out_uri, out_bytes

    def local_segments(self, style: str) -> list[str]:
        """The style's segment videos as local paths; remote ones are copied into the worker's temp dir."""
        local = []
        for i, u in enumerate(self.segs):
            path = local_path(u[f"video:{style}"])
            if path is None:
                path = os.path.join(self.worker.tmp, f"join-{i:05d}{SEGMENT_EXT}")
                get_file(u[f"video:{style}"], path, self.worker.opts)
            local.append(path)
        return local

    def contact_strip(self, joined: str) -> np.ndarray:
        n = self.task["info"].frames
        picks = {round(k * (n - 1) / (STRIP_FRAMES - 1)) for k in range(STRIP_FRAMES)}
        return _strip(_sample_video(self.worker.local_input(self.task["uri"]), picks), _sample_video(joined, picks))

    def remove_segment_videos(self) -> None:
        for u in self.segs:
            for style in self.worker.settings.style_names:
                remove(u[f"video:{style}"], self.worker.opts)


def _joined(task: dict, rows: list[dict], strips: dict[str, np.ndarray] | None = None) -> dict:
    return {"op": "join", "uri": task["uri"], "rows": rows, "strips": strips or {}}


def join_video(worker, task: dict) -> dict:
    """Rows (one per style) and contact strips for one probed, fully segmented video."""
    s, opts = worker.settings, worker.opts
    done_uri = join_uri(work_prefix(s, task["rel_path"]), "rows.json")
    if task.get("status", "ok") != "ok":  # probe or a segment failed: the reason becomes the rows
        return _joined(task, error_rows(worker, task, task["error_type"], task["error"]))
    written: list[str] = []
    try:
        kept = finished_rows(worker, task["rel_path"])
        if kept is not None:
            return _joined(task, kept)
        video = _VideoJoin.load(worker, task, written)
        rows = [video.row(style) for style in s.style_names]
        worker.store_json(done_uri, {"rows": rows})
        if s.kind == "video":  # the joined files hold everything the segment videos did
            video.remove_segment_videos()
        return _joined(task, rows, video.strips)
    except Exception as exc:
        for uri in written:  # no style of a failed video is left under its final name
            remove(uri, opts)
        etype = exc.error_type if isinstance(exc, VideoError) else "join_error"
        return _joined(task, error_rows(worker, task, etype, f"{type(exc).__name__}: {exc}"))
