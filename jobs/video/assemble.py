"""The last step per video: join the segments per style (audio copied), measure the seams, and
build the metrics rows. A video's rows are kept in its work directory, so a rerun of a finished
run id returns them instead of redoing the join."""

from __future__ import annotations

import io
import math
import os
import posixpath
import time

import numpy as np

from stylize_core.video.errors import VideoError
from stylize_core.video.process import ClipStats

from jobs.common.storage import exists, get_file, join_uri, local_path, output_uri, read_bytes, remove
from jobs.video.workdir import STAT_FIELDS, segment_uris, work_prefix

STRIP_FRAMES = 4
STRIP_H = 96


def _stats(data: dict) -> ClipStats:
    st = ClipStats()
    for k in STAT_FIELDS:
        setattr(st, k, data[k])
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


def join_video(worker, task: dict) -> dict:
    """Rows (one per style) and contact strips for one probed, fully segmented video."""
    from stylize_core.video.join import SEGMENT_EXT, join_segments, output_container

    s, opts = worker.settings, worker.opts
    done_uri = join_uri(work_prefix(s, task["rel_path"]), "rows.json")
    rows, strips = [], {}
    if task.get("status", "ok") != "ok":  # probe or a segment failed: the reason becomes the rows
        return {"op": "join", "uri": task["uri"], "rows": error_rows(worker, task, task["error_type"], task["error"]),
                "strips": {}}
    written: list[str] = []
    try:
        kept = finished_rows(worker, task["rel_path"])
        if kept is not None:
            return {"op": "join", "uri": task["uri"], "rows": kept, "strips": {}}
        plans = task["plans"]
        segs = [segment_uris(s, task["rel_path"], p.index) for p in plans]
        seg_json = [worker.load_json(u["json"]) for u in segs]
        npzs = [dict(np.load(io.BytesIO(read_bytes(u["npz"], opts)))) for u in segs]
        rows = []
        for style in s.style_names:
            started = time.perf_counter()
            total = ClipStats()
            for data in seg_json:
                total.add(_stats(data["styles"][style]))
            seam_sum, seam_n = _seams(worker, task, style, npzs)
            row = _base_row(worker, task, style)
            if s.kind == "sequence":
                out_uri = output_uri(s.output, style, task["sequence"].rel_paths[0], posixpath.splitext(task["sequence"].rel_paths[0])[1])
                out_bytes, first = -1, npzs[0][f"first_out:{style}"]
            else:
                out_rel, muxer = output_container(task["rel_path"], s.codec)
                out_uri = output_uri(s.output, style, out_rel, posixpath.splitext(out_rel)[1])
                local = []
                for i, u in enumerate(segs):
                    path = local_path(u[f"video:{style}"])
                    if path is None:
                        path = os.path.join(worker.tmp, f"join-{i:05d}{SEGMENT_EXT}")
                        get_file(u[f"video:{style}"], path, opts)
                    local.append(path)
                tmp_out = os.path.join(worker.tmp, f"out-{style}{posixpath.splitext(out_rel)[1]}")
                try:
                    join_segments(local, worker.local_input(task["uri"]), tmp_out, muxer, task["info"])
                    out_bytes = os.path.getsize(tmp_out)
                    worker.put(tmp_out, out_uri)
                    written.append(out_uri)
                    if task.get("contact"):
                        n = task["info"].frames
                        picks = {round(k * (n - 1) / (STRIP_FRAMES - 1)) for k in range(STRIP_FRAMES)}
                        strips[style] = _strip(_sample_video(worker.local_input(task["uri"]), picks),
                                               _sample_video(tmp_out, picks))
                finally:
                    for p in [tmp_out] + [p for p in local if p.startswith(worker.tmp)]:
                        if os.path.exists(p):
                            os.unlink(p)
                first = npzs[0][f"first_out:{style}"]
            summ = total.summary()
            inside = summ["ewarp_output"]
            all_n = total.ewarp_out_n + seam_n
            row.update(
                output_uri=out_uri, output_bytes=out_bytes, out_width=int(first.shape[1]), out_height=int(first.shape[0]),
                frames=total.frames, scene_cuts=total.cuts,
                ewarp_output=(total.ewarp_out_sum + seam_sum) / all_n if all_n else math.nan,
                ewarp_inside=inside, ewarp_per_frame=summ["ewarp_per_frame"],
                ewarp_seams=seam_sum / seam_n if seam_n else math.nan, seam_pairs=seam_n,
                content_loss=summ["content_loss"], style_loss=summ["style_loss"],
                content_loss_per_frame=summ["content_loss_per_frame"], style_loss_per_frame=summ["style_loss_per_frame"],
                **{k: summ[k] for k in summ if k.endswith("_ms")},
                join_ms=(time.perf_counter() - started) * 1000,
                segment_wall_s=sum(d["wall_s"] for d in seg_json),
            )
            rows.append(row)
        worker.store_json(done_uri, {"rows": rows})
        if s.kind == "video":  # the joined files hold everything the segment videos did
            for u in segs:
                for style in s.style_names:
                    remove(u[f"video:{style}"], opts)
    except Exception as exc:
        for uri in written:  # no style of a failed video is left under its final name
            remove(uri, opts)
        etype = exc.error_type if isinstance(exc, VideoError) else "join_error"
        rows, strips = error_rows(worker, task, etype, f"{type(exc).__name__}: {exc}"), {}
    return {"op": "join", "uri": task["uri"], "rows": rows, "strips": strips}
