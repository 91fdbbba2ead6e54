"""The video job: ``python -m jobs.stylize_video --input URI --output URI --style NAME=CHECKPOINT_URI``.

Lists the videos (or image sequences), then drives a pool of Ray actors (jobs.video.worker): each
input is probed and planned into keyframe-aligned segments, the segments run in parallel, and a
last call per input joins them with the audio copied. One metrics row per input x style goes to
``{output}/_metrics_video/run_id={run_id}/``; a run summary and a contact strip to
``{output}/_runs_video/``. Exit status: 0 within --max-error-rate, 1 over it, 2 when the job could
not run at all (one line saying what to fix).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np

from jobs.common import ray_runtime
from jobs.common.checkpoints import read_style_blobs
from jobs.common.listing import list_images
from jobs.common.outcome import JobError, error_rate, run_main
from jobs.common.planning import plan_actors
from jobs.common.storage import join_uri, redact, remove_temp_files, write_bytes_atomic
from jobs.video.metrics import write_metrics
from jobs.video.settings import VideoSettings, parse_args


def _log(settings: VideoSettings, msg: str) -> None:
    if not settings.quiet:
        print(f"[stylize_video] {msg}", file=sys.stderr, flush=True)


def list_tasks(settings: VideoSettings) -> list[dict]:
    """One task per video, or per image sequence: ``{uri, rel_path[, sequence, frame_uris]}``."""
    from stylize_core.video.probe import VIDEO_EXTENSIONS
    from stylize_core.video.sequence import SEQUENCE_EXTENSIONS, find_sequences

    opts = settings.storage_options
    try:
        if settings.kind == "video":
            return [{"uri": f.uri, "rel_path": f.rel_path} for f in list_images(settings.input, opts, VIDEO_EXTENSIONS)]
        files = list_images(settings.input, opts, SEQUENCE_EXTENSIONS)
    except (FileNotFoundError, ValueError) as exc:
        raise JobError(f"input not usable: {redact(str(exc))}") from None
    by_rel = {f.rel_path: f.uri for f in files}
    return [{"uri": join_uri(settings.input, seq.name), "rel_path": seq.name, "sequence": seq,
             "frame_uris": [by_rel[r] for r in seq.rel_paths]} for seq in find_sequences(by_rel)]


def _strip_png(strips: list[np.ndarray]) -> bytes:
    from stylize_core.image_io import encode_image

    width = max(s.shape[1] for s in strips)
    gap = np.full((6, width, 3), 255, np.uint8)
    parts = []
    for s in strips:
        pad = np.full((s.shape[0], width - s.shape[1], 3), 255, np.uint8)
        parts += [np.concatenate([s, pad], axis=1), gap]
    return encode_image(np.concatenate(parts[:-1], axis=0), "png")


def run(settings: VideoSettings) -> dict:
    """Run the job; returns the summary (also written to ``{output}/_runs_video/{run_id}.json``)."""
    from stylize_core.host import malloc_env

    started = time.time()
    opts = settings.storage_options
    if settings.demo:
        from stylize_core.video.synthetic import demo_clip

        settings.input = os.path.dirname(demo_clip(os.path.join(tempfile.gettempdir(), "stylize-video-demo", "pan.mp4")))
    tasks = list_tasks(settings)
    blobs = read_style_blobs(settings)  # fail fast on a missing checkpoint; the actors load their own copies
    ray_runtime.init_ray(settings.address, quiet=settings.quiet, worker_env=malloc_env())
    plan = plan_actors(settings)
    actors, gpus = plan.max_actors, plan.gpus_per_actor
    settings.actors = actors
    work = join_uri(settings.output, "_video_work", f"run_id={settings.run_id}")
    removed = remove_temp_files(work, opts)
    _log(settings, f"run {settings.run_id}: {len(tasks)} {settings.kind}(s) x {len(settings.styles)} style(s), "
         f"{actors} actor(s) -> {settings.output}")
    from jobs.video.worker import VideoWorker

    # Actors read the checkpoints themselves: constructor arguments stay small and inline, so Ray can
    # restart a dead actor without depending on objects in the store.
    pool = ray_runtime.ActorTaskPool(VideoWorker, {"settings": settings}, actors=actors,
                                     num_cpus=settings.cpus_per_actor, num_gpus=gpus, env=malloc_env())
    probed: dict[str, dict] = {}
    left: dict[str, int] = {}
    rows: list[dict] = []
    strips: list[np.ndarray] = []
    segments = skipped = contacts = 0
    try:
        for task in tasks:
            pool.submit("probe", task)
        while pool.has_next():
            result = pool.next_unordered()
            uri = result["uri"]
            if result["op"] == "probe":
                probed[uri] = result
                if result["status"] != "ok":
                    pool.submit("join", result)
                    continue
                if settings.contact_sheet and contacts < settings.contact_sheet and settings.kind == "video":
                    result["contact"] = True
                    contacts += 1
                segments += len(result["plans"])
                if result["finished"]:
                    skipped += len(result["plans"])
                    pool.submit("join", result)
                    continue
                left[uri] = len(result["plans"])
                for plan in result["plans"]:
                    pool.submit("segment", {k: v for k, v in result.items() if k != "plans"} | {"plan": plan})
            elif result["op"] == "segment":
                task = probed[uri]
                skipped += int(result["skipped"])
                if result["status"] != "ok" and task["status"] == "ok":
                    task.update(status="error", error_type=result["error_type"], error=f"segment {result['index']}: {result['error']}")
                left[uri] -= 1
                if left[uri] == 0:
                    pool.submit("join", task)
            else:
                rows += result["rows"]
                strips += [result["strips"][s] for s in settings.style_names if s in result["strips"]]
                if not settings.quiet:
                    _log(settings, f"{len(rows)}/{len(tasks) * len(settings.styles)} rows")
    finally:
        pool.shutdown()
    expected = len(tasks) * len(settings.styles)
    if len(rows) != expected:
        raise JobError(f"accounting mismatch: {expected} input x style pairs but {len(rows)} rows")
    metrics_uri = write_metrics(rows, settings.output, settings.run_id, opts)
    ok = [r for r in rows if r["status"] == "ok"]
    errors = [r for r in rows if r["status"] == "error"]
    by_type: dict[str, int] = {}
    for r in errors:
        by_type[r["error_type"]] = by_type.get(r["error_type"], 0) + 1
    rate = error_rate(Counter(r["status"] for r in rows))  # the one definition every job uses
    wall = time.time() - started

    def mean(key: str) -> float | None:
        vals = [r[key] for r in ok if r.get(key) is not None and not np.isnan(r[key])]
        return round(float(np.mean(vals)), 6) if vals else None

    summary = {
        "run_id": settings.run_id, "input": settings.input, "output": settings.output, "kind": settings.kind,
        "inputs": len(tasks), "styles": {n: {"checkpoint": u, "sha256": hashlib.sha256(blobs[n]).hexdigest()}
                                         for n, u in settings.styles.items()},
        "rows": len(rows), "counts": {"ok": len(ok), "error": len(errors)}, "errors_by_type": by_type,
        "error_rate": rate, "max_error_rate": settings.max_error_rate, "passed": rate <= settings.max_error_rate,
        "segments": segments, "segments_skipped": skipped, "temp_files_removed": removed,
        "frames": int(sum(r["frames"] for r in ok)), "wall_s": round(wall, 3), "actors": actors,
        "ewarp_output": mean("ewarp_output"), "ewarp_per_frame": mean("ewarp_per_frame"),
        "ewarp_seams": mean("ewarp_seams"), "scene_cuts": int(sum(r.get("scene_cuts") or 0 for r in ok)),
        "metrics_file": metrics_uri, "config": redact(settings.to_dict()),
    }
    runs = join_uri(settings.output, "_runs_video")
    if strips:
        summary["contact_sheet"] = join_uri(runs, f"{settings.run_id}_contact.png")
        write_bytes_atomic(summary["contact_sheet"], _strip_png(strips), opts)
    summary["summary_uri"] = join_uri(runs, f"{settings.run_id}.json")
    write_bytes_atomic(summary["summary_uri"], json.dumps(summary, indent=2, sort_keys=True, default=str).encode(), opts)
    return summary


def describe(summary: dict) -> str:
    lines = [f"run {summary['run_id']}: {summary['inputs']} input(s), {summary['rows']} rows, {summary['frames']} frames "
             f"in {summary['wall_s']:.1f}s ({summary['segments']} segments, {summary['segments_skipped']} already done)",
             f"  ok {summary['counts']['ok']}, error {summary['counts']['error']}"
             + (f" ({', '.join(f'{k} {v}' for k, v in sorted(summary['errors_by_type'].items()))})" if summary['errors_by_type'] else ""),
             f"  warping error: output {summary['ewarp_output']}, per-frame {summary['ewarp_per_frame']}, "
             f"seams {summary['ewarp_seams']}; scene cuts {summary['scene_cuts']}",
             f"  error rate {summary['error_rate']:.2%} (limit {summary['max_error_rate']:.2%}): "
             + ("PASS" if summary["passed"] else "FAIL"),
             f"  summary: {summary['summary_uri']}"]
    if "contact_sheet" in summary:
        lines.append(f"  contact strip: {summary['contact_sheet']}")
    return "\n".join(lines)


def main(settings: VideoSettings) -> int:
    """Run, print the outcome; the exit status (0 passed, 1 over the error budget, 2 could not run)."""
    return run_main(lambda: run(settings), describe, "stylize_video")


def cli(argv: Sequence[str] | None = None) -> int:
    return main(parse_args(argv))

