"""The local, Ray-free CLI ``python -m jobs.stylize_image``: random weights, tiny images, CPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import jobs.image.cli as cli
from jobs.image.cli import main, parse_args
from jobs.image.settings import build_parser
from stylize_core.checkpoint import save_style_model
from stylize_core.transformer_net import TransformerNet

REPO = Path(__file__).resolve().parents[2]
# Small VGG inputs keep the random-weight loss network cheap on 2 CPUs.
METRICS = ["--metrics", "--vgg-weights", "random:0", "--metrics-size", "32"]


def _write_image(path: Path, height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth gradients plus noise: a photo-like image that survives lossless round trips exactly.
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), (xx + yy) % 256], axis=-1)
    image = np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)  # (H, W, 3)
    Image.fromarray(image).save(path)
    return image


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stylize_image")
    torch.manual_seed(0)
    style = _write_image(root / "style.png", 24, 24, seed=1)
    checkpoint = root / "tiny.pth"
    save_style_model(TransformerNet(), str(checkpoint), style_image=style, style="tiny")
    a, b = root / "a.png", root / "b.jpg"
    _write_image(a, 20, 28, seed=2)
    _write_image(b, 17, 23, seed=3)  # odd sizes: padded to the network's multiple and cropped back
    return {"root": root, "checkpoint": checkpoint, "style": root / "style.png", "a": a, "b": b}


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size  # (W, H)


def _json_rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_directory_output_with_json_metrics(assets, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [str(assets["a"]), str(assets["b"]), "--checkpoint", str(assets["checkpoint"]), "-o", str(out),
            "--format", "png", "--device", "cpu", "--json", *METRICS]
    assert main(parse_args(argv)) == 0
    rows = _json_rows(capsys.readouterr().out)
    assert [r["input_uri"] for r in rows] == [str(assets["a"]), str(assets["b"])]
    for row, src in zip(rows, (assets["a"], assets["b"])):
        written = out / f"{src.stem}.png"
        assert row["status"] == "ok" and row["output_uri"] == str(written)
        assert _size(written) == _size(src) == (row["width"], row["height"])
        assert row["style"] == "tiny" and row["method"] == "feedforward"
        assert row["loss_model"] == "vgg16/random:0" and len(row["checkpoint_sha256"]) == 64
        for key in ("content_loss", "style_loss", "tv_loss"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), (key, row)
        assert row["content_loss"] > 0  # a random network does change the image
        for key in ("decode_ms", "stylize_ms", "encode_ms"):  # per-image timings (benchmarks/bench_cpu_peers.py)
            assert isinstance(row[key], float) and row[key] > 0, (key, row)


def test_single_file_output_format_from_extension(assets, tmp_path, capsys):
    out = tmp_path / "styled.webp"
    assert main(parse_args([str(assets["b"]), "--checkpoint", str(assets["checkpoint"]), "-o", str(out)])) == 0
    with Image.open(out) as img:
        assert img.format == "WEBP" and img.size == _size(assets["b"])
    assert str(out) in capsys.readouterr().out  # a progress line per image without --json


def test_strength_zero_returns_input_and_max_side_downscales(assets, tmp_path):
    out = tmp_path / "same.png"
    argv = [str(assets["a"]), "--checkpoint", str(assets["checkpoint"]), "-o", str(out), "--strength", "0", "-q"]
    assert main(parse_args(argv)) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(assets["a"])))

    small = tmp_path / "small.png"
    argv = [str(assets["a"]), "--checkpoint", str(assets["checkpoint"]), "-o", str(small), "--max-side", "14", "-q"]
    assert main(parse_args(argv)) == 0
    assert _size(small) == (14, 10)  # 28x20 scaled so the long side is 14


def test_optimize_writes_image_and_metrics(assets, tmp_path, capsys):
    out = tmp_path / "gatys" / "a.png"
    argv = [str(assets["a"]), "--optimize", "--style-image", str(assets["style"]), "-o", str(out),
            "--steps", "3", "--levels", "1", "--vgg", "vgg16", "--device", "cpu", "--json", "--metrics-ratio", *METRICS]
    assert main(parse_args(argv)) == 0
    assert _size(out) == _size(assets["a"])
    (row,) = _json_rows(capsys.readouterr().out)
    assert row["status"] == "ok" and row["method"] == "optimize" and row["style"] == "style"
    assert row["loss_model"] == "vgg16/random:0"
    assert all(math.isfinite(row[k]) for k in ("content_loss", "style_loss", "tv_loss", "style_stat_distance"))
    assert row["style_stat_distance"] > 0 and math.isfinite(row["style_stat_ratio"])  # Gatys: against its style image


def test_optimize_without_style_image_is_a_setup_error(assets, tmp_path, capsys):
    argv = [str(assets["a"]), "--optimize", "-o", str(tmp_path / "x.png"), "--vgg-weights", "random:0"]
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()  # one line, no usage dump or traceback
    assert "--style-image" in line


def test_bad_inputs_fail_alone(assets, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    argv = [str(assets["a"]), str(corrupt), str(missing), str(assets["b"]), "--checkpoint", str(assets["checkpoint"]),
            "-o", str(out), "--json", "--batch-size", "2"]
    assert main(parse_args(argv)) == 1
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.jpg"]
    err_lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(err_lines) == 2
    assert any("corrupt.jpg" in line for line in err_lines) and any("missing.png" in line for line in err_lines)
    rows = {Path(r["input_uri"]).name: r for r in _json_rows(captured.out)}
    assert {n: r["status"] for n, r in rows.items()} == {"a.png": "ok", "corrupt.jpg": "error",
                                                         "missing.png": "error", "b.jpg": "ok"}
    assert rows["missing.png"]["error_type"] == "not_found"
    assert rows["a.png"]["content_loss"] is None  # no --metrics: null, never NaN (invalid JSON)


def test_missing_checkpoint_exits_2(assets, tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    argv = [str(assets["a"]), "--checkpoint", str(missing), "-o", str(tmp_path / "out")]
    assert main(parse_args(argv)) == 2
    assert "nope.pth" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_demo_checkpoint_says_how_to_fix(assets, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "demo_checkpoint", lambda: str(tmp_path / "demo_mosaic.pth"))
    assert main(parse_args([str(assets["a"]), "-o", str(tmp_path / "out")])) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_missing_vgg_weights_exits_2(assets, tmp_path, capsys):
    argv = [str(assets["a"]), "--checkpoint", str(assets["checkpoint"]), "-o", str(tmp_path / "out"),
            "--metrics", "--vgg-weights", str(tmp_path / "no_vgg.pth")]
    assert main(parse_args(argv)) == 2
    assert "no_vgg.pth" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("names", "output", "extra", "message"),
    [
        (["x.png", "sub/x.jpg"], "out", [], "would both be written"),
        (["x.png", "y.png"], "one.png", [], "names one file"),
        (["x.png"], "one.png", ["--format", "jpeg"], "contradicts"),
        (["x.png"], "one.bmp", [], "cannot write"),
        (["x.png"], ".", ["--format", "png"], "overwrite the input"),
    ],
)
def test_output_plan_refusals(assets, tmp_path, capsys, monkeypatch, names, output, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    for name in names:
        Image.open(assets["a"]).save(tmp_path / name)
    argv = [*names, "--checkpoint", str(assets["checkpoint"]), "-o", output, *extra]
    assert main(parse_args(argv)) == 2
    assert message in capsys.readouterr().err


def test_bad_option_values_are_rejected_by_the_parser():
    for argv in (["a.png", "-o", "o", "--strength", "1.5"], ["a.png", "-o", "o", "--quality", "0"], ["a.png"]):
        with pytest.raises(SystemExit) as exc:
            parse_args(argv)
        assert exc.value.code == 2


def test_help_subprocess_documents_every_option_and_never_imports_ray():
    # -X importtime lists every module imported, so one process checks both --help and "no Ray".
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "jobs.stylize_image", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "jobs.common.storage" in imported and "torch" in imported  # the listing is real (-m runs it as __main__)
    assert not [m for m in imported if m == "ray" or m.startswith("ray.")]
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag in proc.stdout, flag
        assert action.help, action.dest


def test_subprocess_stylises_a_file(assets, tmp_path):
    out = tmp_path / "sub" / "a.jpg"
    cmd = [sys.executable, "-m", "jobs.stylize_image", str(assets["a"]), "--checkpoint", str(assets["checkpoint"]),
           "-o", str(out), "--device", "cpu", "--json"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (row,) = _json_rows(proc.stdout)
    assert row["status"] == "ok" and row["output_uri"] == str(out)
    with Image.open(out) as img:
        assert img.format == "JPEG" and img.size == _size(assets["a"])


def test_backend_flag_runs_the_network_on_onnxruntime(assets, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    rows = {}
    for backend in ("eager", "onnxruntime"):
        out = tmp_path / backend / "a.png"
        # the shipped demo network (no --checkpoint): its outputs span the range, so the comparison can fail
        argv = [str(assets["a"]), "-o", str(out), "--json", "--backend", backend, "--device", "cpu"]
        assert main(parse_args(argv)) == 0
        (rows[backend],) = _json_rows(capsys.readouterr().out)
        rows[backend]["pixels"] = np.asarray(Image.open(out), dtype=np.int16)
    assert rows["eager"]["backend"] == f"torch-eager {torch.__version__} fp32 cpu" and rows["onnxruntime"]["backend"].startswith("onnxruntime")
    assert rows["eager"]["pixels"].std() > 20 and np.ptp(rows["eager"]["pixels"]) > 120
    assert np.abs(rows["eager"]["pixels"] - rows["onnxruntime"]["pixels"]).max() <= 2  # README "CPU backends"
