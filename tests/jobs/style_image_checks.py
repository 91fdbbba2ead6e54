"""What every style-image method (AdaIN, the style predictor) must do in the batch job, checked once
for each: two style images and a blend of them are three styles, each with its own id, measured
against its style image, and the nightly catalog computes the same ids without torch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from jobs.batch import driver as stylize
from jobs.catalog.night import style_digests
from stylize_core.image_io import decode_image


def write_image(path: Path, height: int, width: int, seed: int) -> None:
    """A random RGB PNG: the inputs and style images of the AdaIN and predictor job tests."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def write_style_image_assets(root: Path) -> Path:
    """Under ``root``: in/a.png and in/b.png (21 x 30: not a multiple of 4 or 8), wave.png and ink.png."""
    (root / "in").mkdir()
    write_image(root / "in" / "a.png", 24, 32, 1)
    write_image(root / "in" / "b.png", 21, 30, 2)
    write_image(root / "wave.png", 32, 32, 3)
    write_image(root / "ink.png", 24, 24, 4)
    return root


def check_two_style_images_and_a_mix(assets: Path, out: Path, method: list[str], run_id: str) -> None:
    """``method``: ``--method NAME`` and its weights' options; ``assets`` holds in/, wave.png, ink.png."""
    argv = ["--input", str(assets / "in"), "--output", str(out), *method,
            "--style-image", f"wave={assets / 'wave.png'}", "--style-image", f"ink={assets / 'ink.png'}",
            "--mix", "both=wave:0.5,ink:0.5", "--alpha", "0.8", "--vgg", "texture", "--vgg-weights", "random:0",
            "--metrics-size", "16", "--metrics-ratio", "--metrics-sample", "1", "--run-id", run_id, "--format", "png", "--quiet"]
    settings = stylize.parse_args(argv)
    assert stylize.main(settings) == 0
    rows = pq.read_table(str(out / "_metrics" / f"run_id={run_id}")).to_pylist()
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    assert sorted({r["style"] for r in rows}) == ["both", "ink", "wave"]
    ids = {r["style"]: r["model_sha256"] for r in rows}
    assert len(set(ids.values())) == 3  # each style image, and the mix, is a style of its own
    assert all(r["style_loss"] is not None for r in rows)  # measured against the style image (or the mix)
    # and against its feature statistics (the mix's: the same mix of the styles' means and stds)
    assert all(r["style_stat_distance"] > 0 and r["style_stat_ratio"] > 0 for r in rows)
    # each style its own target (random weights may render both inputs alike: per style, not per row)
    assert len({round(r["style_stat_distance"], 6) for r in rows}) >= 3
    assert decode_image((out / "both" / "b.png").read_bytes()).shape == (21, 30, 3)
    # the nightly ledger computes the same ids without torch, and alpha changes every one of them
    assert style_digests(settings, settings.storage_options) == ids
    other = style_digests(settings.replace(alpha=0.5), settings.storage_options)
    assert not set(other.values()) & set(ids.values())
    # the style images were read and encoded once for the run (one task), and the summary records it
    encodings = json.loads((out / "_runs" / f"{run_id}.json").read_text())["style_encodings"]
    assert encodings["method"] == method[1] and encodings["passes"] == 2 and encodings["loss_model"]
    assert {name: e["sha256"] for name, e in encodings["style_images"].items()} == {
        name: hashlib.sha256((assets / f"{name}.png").read_bytes()).hexdigest() for name in ("wave", "ink")}
    assert all(e["gram_layers"] for e in encodings["style_images"].values())  # the metrics' targets too


def check_video_on_a_tiny_sequence(assets: Path, tmp_path: Path, method: list[str], min_spread: int = 0) -> dict:
    """``method`` (``--method NAME`` and its weights) over a 4-frame sequence of odd size with the style
    image ``assets/wave.png``, through the video job on Ray; returns the summary's ``style_encodings``,
    checked to be one encoder pass for the run. ``min_spread``: the grey levels a frame must span
    (weights scaled to span the range; random ones give near-constant frames)."""
    import cv2

    from jobs.video import driver as stylize_video
    from jobs.video.settings import parse_args as video_args
    from stylize_core.video import pan_frames
    from stylize_core.video.synthetic import sample_photo

    (tmp_path / "in" / "shot").mkdir(parents=True)
    for i, frame in enumerate(pan_frames(sample_photo("coffee"), 4, (36, 28), seed=7), start=1):  # not multiples of 8
        cv2.imwrite(str(tmp_path / "in" / "shot" / f"f.{i:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    summary = stylize_video.run(video_args([
        "--sequence", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--run-id", "v", "--no-metrics",
        *method, "--style-image", f"wave={assets / 'wave.png'}", "--segment-seconds", "0.5", "--warmup-frames", "2",
        "--preset", "ultrafast", "--quiet", "--contact-sheet", "0"]))
    assert summary["counts"] == {"ok": 1, "error": 0}
    written = sorted(p.name for p in (tmp_path / "out" / "wave" / "shot").iterdir())
    assert written == [f"f.{i:03d}.png" for i in range(1, 5)]
    frame = cv2.imread(str(tmp_path / "out" / "wave" / "shot" / "f.002.png"))
    assert frame.shape == (28, 36, 3) and np.ptp(frame) >= min_spread
    (row,) = pq.read_table(summary["metrics_file"]).to_pylist()
    assert row["style"] == "wave" and row["status"] == "ok" and len(row["model_sha256"]) == 64
    encodings = summary["style_encodings"]  # made once by the run's encoding task, for every worker
    assert encodings["method"] == method[1] and encodings["passes"] == 1 and encodings["loss_model"] == ""
    return encodings
