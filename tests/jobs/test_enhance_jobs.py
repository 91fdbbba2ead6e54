"""Enhancement checkpoints through the programs: the batch job (local Ray) and the local CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stylize_core"))
from test_enhance import photo, tiny_checkpoint  # noqa: E402  (tests/stylize_core/test_enhance.py)

from jobs.batch import driver as stylize  # noqa: E402
from jobs.image.cli import main, parse_args  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("enhance_ckpt")
    return {task: tiny_checkpoint(root / f"{task}.pth", task, seed=i)
            for i, task in enumerate(("sr2", "sr4", "denoise"))}


def _inputs(root: Path) -> dict[str, np.ndarray]:
    images = {"odd.png": photo(17, 33), "square.png": photo(40, 40, 1), "big.png": photo(130, 120, 2)}
    root.mkdir()
    for name, img in images.items():
        Image.fromarray(img).save(root / name)
    (root / "broken.jpg").write_bytes(b"not an image")
    return images


@pytest.mark.usefixtures("ray_local")
def test_batch_job_super_resolves_and_restores_with_output_pixel_guard(tmp_path, models):
    images = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    # x4 of the 130x120 input is 249,600 pixels, over the limit; everything else fits
    code = stylize.cli(["--input", str(tmp_path / "in"), "--output", str(out), "--style", f"up4={models['sr4']}",
                        "--style", f"clean={models['denoise']}", "--max-pixels", "200000", "--no-metrics", "--quiet",
                        "--run-id", "e", "--format", "png", "--max-error-rate", "1"])
    assert code == 0
    rows = pq.read_table(str(out / "_metrics" / "run_id=e")).to_pylist()
    assert len(rows) == 8  # every input once per style, errors included
    by = {(Path(r["input_uri"]).name, r["style"]): r for r in rows}
    assert by[("big.png", "up4")]["status"] == "error" and by[("big.png", "up4")]["error_type"] == "too_large"
    assert "more than the limit of 200000" in by[("big.png", "up4")]["error"]
    assert by[("broken.jpg", "clean")]["status"] == "error"
    for name, img in images.items():
        h, w = img.shape[:2]
        clean = by[(name, "clean")]
        assert clean["status"] == "ok" and (clean["out_height"], clean["out_width"]) == (h, w)
        assert "scale=1" in clean["arch"]
        if name != "big.png":
            up = by[(name, "up4")]
            assert up["status"] == "ok" and (up["out_height"], up["out_width"]) == (4 * h, 4 * w)
            written = np.asarray(Image.open(out / "up4" / name))
            assert written.shape == (4 * h, 4 * w, 3) and written.std() > 20
            assert up["model_sha256"] and "scale=4" in up["arch"]


@pytest.mark.usefixtures("ray_local")
def test_optimize_method_with_an_enhancement_checkpoint_exits_2(tmp_path, models, capsys):
    _inputs(tmp_path / "in")
    code = stylize.cli(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--method", "optimize",
                        "--style", f"up={models['sr2']}", "--vgg-weights", "random:0", "--quiet", "--run-id", "o"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("enhancement network" in line and "--method optimize" in line for line in err)
    assert "Traceback" not in "\n".join(err)


def test_cli_super_resolves_and_refuses_outputs_over_the_pixel_limit(tmp_path, models, capsys):
    img = photo(17, 33)
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(photo(60, 60, 1)).save(tmp_path / "b.png")
    code = main(parse_args([str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--checkpoint", models["sr2"],
                            "-o", str(tmp_path / "out"), "--format", "png", "--json", "--max-pixels", "10000"]))
    assert code == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    ok, refused = sorted(rows, key=lambda r: r["status"], reverse=True)
    assert ok["status"] == "ok" and (ok["height"], ok["width"]) == (34, 66) and ok["style"] == "sr2"
    assert np.asarray(Image.open(tmp_path / "out" / "a.png")).shape == (34, 66, 3)
    assert refused["status"] == "error" and refused["error_type"] == "too_large"


def _y(image: np.ndarray) -> np.ndarray:
    """BT.601 luminance, written out here so the test does not lean on the code under test."""
    rgb = image.astype(np.float64)
    return 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255


def _independent_scores(reference: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = _y(reference), _y(image)
    return (peak_signal_noise_ratio(a, b, data_range=255),
            structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


@pytest.mark.usefixtures("ray_local")
def test_batch_job_evaluate_rows_match_scikit_image(tmp_path, models):
    from stylize_core.degrade import seed_of, task_degradation

    images = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    code = stylize.cli(["--input", str(tmp_path / "in"), "--output", str(out), "--style", f"up2={models['sr2']}",
                        "--style", f"clean={models['denoise']}", "--evaluate", "--no-metrics", "--quiet",
                        "--run-id", "v", "--format", "png", "--max-error-rate", "1"])
    assert code == 0
    rows = pq.read_table(str(out / "_metrics" / "run_id=v")).to_pylist()
    by = {(Path(r["input_uri"]).name, r["style"]): r for r in rows}
    for name, img in images.items():
        uri = by[(name, "up2")]["input_uri"]
        for style, task, scale in (("up2", "sr2", 2), ("clean", "denoise", 1)):
            row = by[(name, style)]
            reference = img[: img.shape[0] // scale * scale, : img.shape[1] // scale * scale]
            written = np.asarray(Image.open(out / style / name).convert("RGB"))
            assert written.shape == reference.shape  # the restoration of the degraded copy
            assert (row["psnr"], row["ssim"]) == pytest.approx(_independent_scores(reference, written), abs=1e-6)
            degraded = task_degradation(task).at_eval()(reference, seed_of(uri))
            baseline = (np.asarray(Image.fromarray(degraded).resize(reference.shape[1::-1], Image.Resampling.LANCZOS))
                        if scale > 1 else degraded)
            expected = _independent_scores(reference, baseline)
            assert (row["baseline_psnr"], row["baseline_ssim"]) == pytest.approx(expected, abs=1e-6)
    assert by[("broken.jpg", "up2")]["psnr"] is None


def test_cli_evaluate_reports_scores(tmp_path, models, capsys):
    img = photo(40, 36)
    Image.fromarray(img).save(tmp_path / "a.png")
    code = main(parse_args([str(tmp_path / "a.png"), "--checkpoint", models["sr2"], "-o", str(tmp_path / "o.png"),
                            "--json", "--evaluate"]))
    assert code == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    written = np.asarray(Image.open(tmp_path / "o.png").convert("RGB"))
    assert written.shape == (40, 36, 3) and (row["height"], row["width"]) == (40, 36)
    assert (row["psnr"], row["ssim"]) == pytest.approx(_independent_scores(img, written), abs=1e-6)
    assert 15 < row["baseline_psnr"] < 60 and 0 < row["baseline_ssim"] <= 1


@pytest.mark.usefixtures("ray_local")
def test_video_job_runs_restoration_and_refuses_super_resolution(tmp_path, models, capsys):
    from jobs.video import driver as stylize_video
    from stylize_core.video import make_clip, pan_frames, probe_video
    from stylize_core.video.synthetic import sample_photo

    (tmp_path / "in").mkdir()
    make_clip(str(tmp_path / "in" / "pan.mp4"), pan_frames(sample_photo("astronaut"), 8, (64, 48), seed=1), gop=4,
              audio_hz=None)
    fast = ["--segment-seconds", "0.5", "--warmup-frames", "2", "--no-metrics", "--preset", "ultrafast", "--quiet",
            "--max-error-rate", "1"]
    out = tmp_path / "out"
    assert stylize_video.cli(["--input", str(tmp_path / "in"), "--output", str(out), "--style",
                              f"clean={models['denoise']}", "--run-id", "v", *fast]) == 0
    info = probe_video(str(out / "clean" / "pan.mp4"))
    assert (info.width, info.height) == (64, 48)
    capsys.readouterr()
    assert stylize_video.cli(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "o2"), "--style",
                              f"up={models['sr2']}", "--run-id", "w", *fast]) == 2
    err = capsys.readouterr().err
    assert "super-resolution network" in err and "Traceback" not in err


@pytest.mark.usefixtures("ray_local")
def test_catalog_nights_render_each_input_once_per_enhancement_model(tmp_path, models):
    import hashlib

    import yaml

    from jobs.catalog import night as catalog

    images = _inputs(tmp_path / "cat")
    out = tmp_path / "out"
    cfg = tmp_path / "nightly.yaml"
    cfg.write_text(yaml.safe_dump({"source": str(tmp_path / "cat"), "output": str(out), "styles": {"up": models["sr2"]},
                                   "no_metrics": True, "quiet": True, "contact_sheet": 0, "max_error_rate": 1.0}))
    sha = hashlib.sha256(open(models["sr2"], "rb").read()).hexdigest()

    def rows(run_id: str) -> list[dict]:
        return pq.read_table(str(out / "_metrics" / f"run_id={run_id}")).to_pylist()

    assert catalog.cli(["--config", str(cfg), "--run-id", "n1"]) == 0
    ok = {Path(r["input_uri"]).name: r for r in rows("n1") if r["status"] == "ok"}
    assert set(ok) == set(images)
    for name, img in images.items():
        assert ok[name]["model_sha256"] == sha  # the ledger identity: the checkpoint's sha256, as for styles
        assert (ok[name]["out_height"], ok[name]["out_width"]) == (2 * img.shape[0], 2 * img.shape[1])
    assert catalog.cli(["--config", str(cfg), "--run-id", "n2"]) == 0  # nothing changed: nothing re-rendered
    second = rows("n2") if (out / "_metrics" / "run_id=n2").exists() else []
    assert not [r for r in second if r["status"] == "ok"]
