"""The video job: ``python -m jobs.stylize_video --input URI --output URI --style NAME=CHECKPOINT_URI``.

Lists the videos (or image sequences), then drives a pool of Ray actors (jobs.video.worker): each
input is probed and planned into keyframe-aligned segments, the segments run in parallel, and a
last call per input joins them with the audio copied. One metrics row per input x style goes to
``{output}/_metrics_video/run_id={run_id}/``; a run summary and a contact strip to
``{output}/_runs_video/``. Exit status: 0 within --max-error-rate, 1 over it, 2 when the job could
not run at all (one line saying what to fix).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jobs.common import actor_pool, ray_runtime
from jobs.common.checkpoints import input_unusable, read_style_blobs, start_style_encoding, stop, style_encodings
from jobs.common.listing import list_images
from jobs.common.outcome import JobError, error_rate, plain_output, run_main
from jobs.common.planning import ActorPlan, plan_actors
from jobs.common.progress import Progress
from jobs.common.storage import join_uri, redact, redact_text, remove_temp_files, write_bytes_atomic
from jobs.video.metrics import write_metrics
from jobs.video.settings import VideoSettings, parse_args


def _log(settings: VideoSettings, msg: str) -> None:
    if not settings.quiet:
        print(f"[stylize_video] {redact_text(msg)}", file=sys.stderr, flush=True)


def list_tasks(settings: VideoSettings) -> list[dict]:
    """One task per video, or per image sequence: ``{uri, rel_path[, sequence, frame_uris]}``."""
    from stylize_core.video.probe import VIDEO_EXTENSIONS
    from stylize_core.video.sequence import SEQUENCE_EXTENSIONS, find_sequences

    opts = settings.storage_options
    try:
        if settings.kind == "video":
            return [{"uri": f.uri, "rel_path": f.rel_path} for f in list_images(settings.input, opts, VIDEO_EXTENSIONS)]
        files = list_images(settings.input, opts, SEQUENCE_EXTENSIONS)
    except (OSError, ValueError) as exc:  # missing, denied, not listable, not videos
        raise input_unusable(settings.input, exc) from None
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


@dataclass
class _Progress:
    """What the driver knows while segments run: probed inputs, segments left, rows joined."""

    tasks: list[dict]
    probed: dict[str, dict] = field(default_factory=dict)
    left: dict[str, int] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    strips: list[np.ndarray] = field(default_factory=list)
    segments: int = 0
    skipped: int = 0
    contacts: int = 0
    progress: Progress = field(default_factory=lambda: Progress("", 0, enabled=False))


def _with_demo_input(settings: VideoSettings) -> VideoSettings:
    """The embedded demo: the job makes its clip, and the settings name where it is."""
    if not settings.demo:
        return settings
    from stylize_core.video.synthetic import demo_clip

    return settings.replace(input=os.path.dirname(demo_clip(os.path.join(tempfile.gettempdir(), "stylize-video-demo",
                                                                          "pan.mp4"))))


def _on_probed(pool, settings: VideoSettings, state: _Progress, result: dict) -> None:
    """A probed input: errors and finished inputs go straight to the join; else its segments start."""
    state.probed[result["uri"]] = result
    if result["status"] != "ok":
        pool.submit("join", result)
        return
    if settings.contact_sheet and state.contacts < settings.contact_sheet and settings.kind == "video":
        result["contact"] = True
        state.contacts += 1
    state.segments += len(result["plans"])
    if result["finished"]:
        state.skipped += len(result["plans"])
        pool.submit("join", result)
        return
    state.left[result["uri"]] = len(result["plans"])
    for seg in result["plans"]:
        pool.submit("segment", {k: v for k, v in result.items() if k != "plans"} | {"plan": seg})


def _on_segment(pool, state: _Progress, result: dict) -> None:
    """A finished segment: the first failure marks its input; the input's last segment starts its join."""
    task = state.probed[result["uri"]]
    state.skipped += int(result["skipped"])
    if result["status"] != "ok" and task["status"] == "ok":
        task.update(status="error", error_type=result["error_type"], error=f"segment {result['index']}: {result['error']}")
    state.left[result["uri"]] -= 1
    if state.left[result["uri"]] == 0:
        pool.submit("join", task)


def _on_joined(settings: VideoSettings, state: _Progress, result: dict) -> None:
    state.rows += result["rows"]
    state.strips += [result["strips"][s] for s in settings.style_names if s in result["strips"]]
    state.progress.update(len(state.rows), sum(r["status"] == "error" for r in state.rows))


def _stop_lost(settings: VideoSettings, state: _Progress, exc: Exception) -> None:
    """An actor Ray could not bring back: write the rows joined so far, stop with one line. A rerun of
    the run id replaces those metrics and skips the segments already finished under ``_video_work``."""
    expected = len(state.tasks) * len(settings.style_names)
    if state.rows:
        write_metrics(state.rows, settings.output, settings.run_id, settings.storage_options)
    raise JobError(f"a video actor was lost for good after {len(state.rows)} of {expected} rows ({redact(str(exc))}); "
                   f"rerun with --run-id {settings.run_id} to complete the run") from exc


def _drive(settings: VideoSettings, plan: ActorPlan, tasks: list[dict], encodings: Any = None) -> _Progress:
    """Probe every input, run its segments, join them: each result starts the next step of its input."""
    from stylize_core.host import malloc_env

    from jobs.video.worker import SETUP_ERROR, VideoWorker

    state = _Progress(tasks, progress=Progress("[stylize_video]", len(tasks) * len(settings.style_names),
                                               rate_unit="rows/s", enabled=not settings.quiet))
    # Actors read the checkpoints themselves: constructor arguments stay small. The style encodings
    # (adain, predict) are one object in the store, owned by this process, so a restarted actor gets them too.
    kwargs = {"settings": settings, "plan": plan, "encodings": encodings}
    pool = actor_pool.ActorTaskPool(VideoWorker, kwargs, actors=plan.max_actors,
                                     num_cpus=plan.cpus_per_actor, num_gpus=plan.gpus_per_actor, env=malloc_env())
    try:
        for task in tasks:
            pool.submit("probe", task)
        while pool.has_next():
            try:
                result = pool.next_unordered()
            except actor_pool.ActorLostError as exc:
                _stop_lost(settings, state, exc)
            if result["op"] == "probe" and result["error_type"] == SETUP_ERROR:
                raise stop(result["error"])  # the workers cannot build their stylizer: nothing can run
            if result["op"] == "probe":
                _on_probed(pool, settings, state, result)
            elif result["op"] == "segment":
                _on_segment(pool, state, result)
            else:
                _on_joined(settings, state, result)
        state.progress.close()
    finally:
        pool.shutdown()
    expected = len(tasks) * len(settings.style_names)
    if len(state.rows) != expected:
        raise JobError(f"accounting mismatch: {expected} input x style pairs but {len(state.rows)} rows")
    return state


def run(settings: VideoSettings) -> dict:
    """Run the job; returns the summary (also written to ``{output}/_runs_video/{run_id}.json``)."""
    from stylize_core.host import malloc_env

    started = time.time()
    settings = _with_demo_input(settings)
    plain_output(settings.output)
    tasks = list_tasks(settings)
    blobs = read_style_blobs(settings)  # fail fast on a missing checkpoint; the actors load their own copies
    ray_runtime.init_ray(settings.address, quiet=settings.quiet, worker_env=malloc_env())
    encoded = start_style_encoding(settings)
    plan = plan_actors(settings)
    encodings = style_encodings(encoded)
    removed = remove_temp_files(join_uri(settings.output, "_video_work", f"run_id={settings.run_id}"),
                                settings.storage_options)
    _log(settings, f"run {settings.run_id}: {len(tasks)} {settings.kind}(s) x {len(settings.style_names)} style(s), "
         f"{plan.max_actors} actor(s) -> {settings.output}")
    state = _drive(settings, plan, tasks, ray_runtime.put(encodings) if encodings is not None else None)
    metrics_uri = write_metrics(state.rows, settings.output, settings.run_id, settings.storage_options)
    summary = _summary(settings, plan, state, blobs, time.time() - started)
    summary |= {"temp_files_removed": removed, "metrics_file": metrics_uri,
                "style_encodings": encodings.summary() if encodings is not None else None}
    return _write_summary(settings, summary, state.strips)


def _styles(settings: VideoSettings, blobs: dict[str, bytes]) -> dict[str, dict]:
    """The run's styles as the summary records them: checkpoints with their sha256; for AdaIN, the style
    image or mix of each (their ids, with the encoder, decoder and alpha, are the rows' model_sha256); for
    style prediction the same with the predictor checkpoint."""
    if settings.method == "adain":
        return {n: {"style_image": settings.style_images.get(n), "mix": settings.mixes.get(n),
                    "encoder": settings.encoder, "decoder": settings.decoder, "alpha": settings.alpha}
                for n in settings.style_names}
    if settings.method == "predict":
        return {n: {"style_image": settings.style_images.get(n), "mix": settings.mixes.get(n),
                    "predictor": settings.predictor, "alpha": settings.alpha}
                for n in settings.style_names}
    return {n: {"checkpoint": u, "sha256": hashlib.sha256(blobs[n]).hexdigest()} for n, u in settings.styles.items()}


def _summary(settings: VideoSettings, plan: ActorPlan, state: _Progress, blobs: dict[str, bytes], wall: float) -> dict:
    rows = state.rows
    ok = [r for r in rows if r["status"] == "ok"]
    errors = [r for r in rows if r["status"] == "error"]
    rate = error_rate(Counter(r["status"] for r in rows))  # the one definition every job uses

    def mean(key: str) -> float | None:
        vals = [r[key] for r in ok if r.get(key) is not None and not np.isnan(r[key])]
        return round(float(np.mean(vals)), 6) if vals else None

    return {
        "run_id": settings.run_id, "input": settings.input, "output": settings.output, "kind": settings.kind,
        "inputs": len(state.tasks), "styles": _styles(settings, blobs),
        "rows": len(rows), "counts": {"ok": len(ok), "error": len(errors)},
        "errors_by_type": dict(Counter(r["error_type"] for r in errors)),
        "error_rate": rate, "max_error_rate": settings.max_error_rate, "passed": rate <= settings.max_error_rate,
        "segments": state.segments, "segments_skipped": state.skipped,
        "frames": int(sum(r["frames"] for r in ok)), "wall_s": round(wall, 3), "actors": plan.max_actors,
        "actor_pool": dataclasses.asdict(plan),
        "ewarp_output": mean("ewarp_output"), "ewarp_per_frame": mean("ewarp_per_frame"),
        "ewarp_seams": mean("ewarp_seams"), "scene_cuts": int(sum(r.get("scene_cuts") or 0 for r in ok)),
        "config": redact(settings.to_dict()),
    }


def _write_summary(settings: VideoSettings, summary: dict, strips: list[np.ndarray]) -> dict:
    runs = join_uri(settings.output, "_runs_video")
    if strips:
        summary["contact_sheet"] = join_uri(runs, f"{settings.run_id}_contact.png")
        write_bytes_atomic(summary["contact_sheet"], _strip_png(strips), settings.storage_options)
    summary["summary_uri"] = join_uri(runs, f"{settings.run_id}.json")
    summary = redact(summary, keys=False)  # input, checkpoints: presigned URLs are common
    write_bytes_atomic(summary["summary_uri"], json.dumps(summary, indent=2, sort_keys=True, default=str).encode(),
                       settings.storage_options)
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

