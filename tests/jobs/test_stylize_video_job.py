"""The video job end to end on real local Ray: tiny clips made here, local disk and moto S3."""

from __future__ import annotations

import json
import os

import av
import cv2
import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from media_samples import write_silent_audio  # tests/media_samples.py

from jobs.video import driver as stylize_video
from jobs.common.run_settings import demo_checkpoint
from jobs.common.storage import StorageOptions, get_filesystem
from jobs.video.settings import parse_args
from stylize_core.video import make_clip, pan_frames, probe_video
from stylize_core.video.synthetic import sample_photo

pytestmark = pytest.mark.usefixtures("ray_local")
STYLES = ["--style", f"a={demo_checkpoint()}", "--style", f"b={demo_checkpoint()}"]
FAST = ["--segment-seconds", "0.5", "--warmup-frames", "6", "--vgg-weights", "random:0", "--loss-every", "8",
        "--preset", "ultrafast", "--quiet", "--contact-sheet", "2"]


def _audio(path: str) -> list[bytes]:
    with av.open(path) as c:
        return [bytes(p) for p in c.demux(*c.streams.audio) if p.size]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("videos")
    photo = sample_photo("astronaut")
    (root / "clips").mkdir()
    (root / "broken").mkdir()
    make_clip(str(root / "clips/pan.MP4"), pan_frames(photo, 30, (96, 64), noise=6.0, seed=4), gop=6)
    make_clip(str(root / "clips/vfr.mkv"), pan_frames(photo, 14, (64, 48), seed=5), format="matroska",
              durations=[100, 300, 50, 100, 200, 100, 400] * 2, audio_hz=None, gop=6)
    make_clip(str(root / "clips/rot.mov"), pan_frames(photo, 8, (64, 48), seed=6), rotation=90, format="mov")
    cut = pan_frames(photo, 8, (64, 48), seed=8) + pan_frames(sample_photo("coffee"), 8, (64, 48), seed=9)
    make_clip(str(root / "clips/cut.mp4"), cut, audio_hz=None, gop=8)  # a hard scene cut after frame 8
    (root / "broken/text.mp4").write_text("not a video\n" * 20)
    mkv = root / "whole.mkv.part"
    make_clip(str(mkv), pan_frames(photo, 12, (64, 48)), format="matroska", audio_hz=None)
    (root / "broken/cut.mkv").write_bytes(mkv.read_bytes()[: mkv.stat().st_size * 2 // 3])
    write_silent_audio(str(root / "broken/audio.mp4"), "mp4")
    return str(root)


@pytest.fixture(scope="module")
def first_run(inputs, tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("out"))
    args = ["--input", inputs, "--output", out, "--run-id", "r1", "--max-error-rate", "1", *STYLES, *FAST]
    return out, stylize_video.run(parse_args(args))


def test_one_row_per_video_and_style_with_typed_errors(first_run, inputs):
    out, summary = first_run
    assert summary["rows"] == 14 and summary["counts"] == {"ok": 8, "error": 6}
    files = [f for f in os.listdir(os.path.join(out, "_metrics_video", "run_id=r1"))]
    assert files == ["part-00000.parquet"]
    raw = pq.read_table(os.path.join(out, "_metrics_video", "run_id=r1", files[0]))
    assert "run_id" not in raw.column_names  # only in the hive path
    table = pads.dataset(os.path.join(out, "_metrics_video"), partitioning="hive").to_table().to_pylist()
    assert {r["run_id"] for r in table} == {"r1"}
    keys = [(r["rel_path"], r["style"]) for r in table]
    assert len(keys) == len(set(keys)) == 14
    errors = {r["rel_path"]: r["error_type"] for r in table if r["status"] == "error"}
    assert errors == {"broken/text.mp4": "not_video", "broken/cut.mkv": "truncated", "broken/audio.mp4": "no_video_stream"}
    assert not os.path.exists(os.path.join(out, "a", "broken"))  # nothing under a final name for bad inputs
    for r in table:
        if r["status"] == "ok":
            assert r["ewarp_output"] < r["ewarp_per_frame"]
            assert r["frames"] > 0 and r["stylize_ms"] > 0 and r["flow_ms"] > 0 and r["content_loss"] is not None
            assert r["style_stat_distance"] > 0  # the demo carries its style image
            assert r["style_stat_ratio"] is None  # without --metrics-ratio
    pan = next(r for r in table if r["rel_path"] == "clips/pan.MP4" and r["style"] == "a")
    assert pan["segments"] == 3 and pan["seam_pairs"] == 2 and pan["audio_streams"] == 1
    with open(summary["summary_uri"]) as f:
        assert json.load(f)["rows"] == 14
    assert {r["style"]: r["scene_cuts"] for r in table if r["rel_path"] == "clips/cut.mp4"} == {"a": 1, "b": 1}
    assert all(r["scene_cuts"] == 0 for r in table if r["rel_path"] == "clips/pan.MP4")
    assert cv2.imread(summary["contact_sheet"]).shape[0] > 100


def test_outputs_keep_timestamps_audio_and_rotation(first_run, inputs):
    out, _ = first_run
    for style in ("a", "b"):
        src, dst = os.path.join(inputs, "clips/pan.MP4"), os.path.join(out, style, "clips/pan.MP4")
        a, b = probe_video(src), probe_video(dst)
        assert b.frame_pts == a.frame_pts and b.duration_s == pytest.approx(a.duration_s)
        assert _audio(dst) == _audio(src)
    vfr_in, vfr_out = probe_video(os.path.join(inputs, "clips/vfr.mkv")), probe_video(os.path.join(out, "a/clips/vfr.mkv"))
    assert vfr_out.frame_pts == vfr_in.frame_pts
    rot = probe_video(os.path.join(out, "a/clips/rot.mov"))
    assert rot.rotation == 0 and (rot.width, rot.height) == (48, 64)


def test_rerun_skips_finished_work_and_removes_temp_files(first_run, inputs):
    out, first = first_run
    first_rows = pq.read_table(first["metrics_file"]).to_pylist()
    work = os.path.join(out, "_video_work", "run_id=r1")
    stray = os.path.join(work, ".tmp-leftover")
    open(stray, "wb").close()
    args = ["--input", inputs, "--output", out, "--run-id", "r1", "--max-error-rate", "1", *STYLES, *FAST]
    again = stylize_video.run(parse_args(args))
    assert not os.path.exists(stray) and again["temp_files_removed"] == 1
    assert again["segments_skipped"] == again["segments"] == first["segments"]
    rows = pq.read_table(again["metrics_file"]).to_pylist()
    assert len(rows) == 14
    # Same rows as the first run (kept from its work directory), not a second set of results.
    key = lambda rs: sorted((r["rel_path"], r["style"], r["status"], r["ewarp_output"]) for r in rs)  # noqa: E731
    assert key(rows) == key(first_rows)


def test_interrupted_run_resumes_from_finished_segments(inputs, tmp_path):
    from jobs.common.planning import ActorPlan
    from jobs.video.worker import VideoWorker

    src = os.path.join(inputs, "clips/pan.MP4")
    args = ["--input", src, "--output", str(tmp_path), "--run-id", "r2", "--no-metrics", *FAST]
    settings = parse_args(args)
    plan = ActorPlan(1, 1, 0.0, 1.0, 1, "test: one actor", settings.batch_size)
    worker = VideoWorker(settings, plan)  # as an actor would: probe, then only the first segment
    task = worker.probe({"uri": src, "rel_path": "pan.MP4"})
    assert worker.segment({k: v for k, v in task.items() if k != "plans"} | {"plan": task["plans"][0]})["status"] == "ok"
    summary = stylize_video.run(settings)
    assert summary["segments"] == 3 and summary["segments_skipped"] == 1 and summary["counts"] == {"ok": 1, "error": 0}
    assert probe_video(os.path.join(tmp_path, "demo", "pan.MP4")).frames == 30


def test_image_sequences_come_back_as_numbered_frames_in_their_depth(tmp_path):
    frames = pan_frames(sample_photo("coffee"), 6, (48, 32), seed=7)
    for i, f in enumerate(frames, start=1):
        bgr16 = cv2.cvtColor(f, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
        os.makedirs(tmp_path / "in/shot010", exist_ok=True)
        cv2.imwrite(str(tmp_path / f"in/shot010/frame_{i:04d}.png"), bgr16)
        os.makedirs(tmp_path / "in/shot020", exist_ok=True)
        cv2.imwrite(str(tmp_path / f"in/shot020/f.{i:03d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    args = ["--sequence", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--run-id", "s", "--no-metrics", *FAST]
    summary = stylize_video.run(parse_args(args))
    assert summary["counts"] == {"ok": 2, "error": 0}
    png = sorted(os.listdir(tmp_path / "out/demo/shot010"))
    assert png == [f"frame_{i:04d}.png" for i in range(1, 7)]
    assert cv2.imread(str(tmp_path / "out/demo/shot010/frame_0003.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert sorted(os.listdir(tmp_path / "out/demo/shot020")) == [f"f.{i:03d}.jpg" for i in range(1, 7)]
    rows = pq.read_table(summary["metrics_file"]).to_pylist()
    assert sorted(r["rel_path"] for r in rows) == ["shot010/frame_####.png", "shot020/f.###.jpg"]
    assert all(r["frames"] == 6 and r["kind"] == "sequence" for r in rows)


def test_s3_end_to_end(inputs, s3_bucket, s3_server, tmp_path):
    src = os.path.join(inputs, "clips/pan.MP4")
    fs, _ = get_filesystem(f"s3://{s3_bucket}", StorageOptions(endpoint_url=s3_server))
    fs.put_file(src, f"{s3_bucket}/in/clip.mp4")
    args = ["--input", f"s3://{s3_bucket}/in", "--output", f"s3://{s3_bucket}/out", "--run-id", "s3",
            "--endpoint-url", s3_server, "--no-metrics", *FAST]
    summary = stylize_video.run(parse_args(args))
    assert summary["counts"] == {"ok": 1, "error": 0}
    local = str(tmp_path / "o.mp4")
    fs.get_file(f"{s3_bucket}/out/demo/clip.mp4", local)
    assert probe_video(local).frame_pts == probe_video(src).frame_pts and _audio(local) == _audio(src)
    assert fs.exists(f"{s3_bucket}/out/_metrics_video/run_id=s3/part-00000.parquet")
    assert not [k for k in fs.find(f"{s3_bucket}/out") if k.endswith(".nut")]  # segment videos cleaned up


def test_unusable_input_exits_2_with_one_line(tmp_path, capsys):
    assert stylize_video.cli(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot use input" in err[0]
