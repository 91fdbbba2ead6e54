"""What every style-image method (AdaIN, the style predictor) must do in the batch job, checked once
for each: two style images and a blend of them are three styles, each with its own id, measured
against its style image, and the nightly catalog computes the same ids without torch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq

from jobs.batch import driver as stylize
from jobs.catalog.night import style_digests
from stylize_core.image_io import decode_image


def check_two_style_images_and_a_mix(assets: Path, out: Path, method: list[str], run_id: str) -> None:
    """``method``: ``--method NAME`` and its weights' options; ``assets`` holds in/, wave.png, ink.png."""
    argv = ["--input", str(assets / "in"), "--output", str(out), *method,
            "--style-image", f"wave={assets / 'wave.png'}", "--style-image", f"ink={assets / 'ink.png'}",
            "--mix", "both=wave:0.5,ink:0.5", "--alpha", "0.8", "--vgg", "texture", "--vgg-weights", "random:0",
            "--metrics-size", "16", "--metrics-sample", "1", "--run-id", run_id, "--format", "png", "--quiet"]
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
