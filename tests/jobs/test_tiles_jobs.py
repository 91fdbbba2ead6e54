"""Tiled stylisation through the real programs: the local CLI (a subprocess) and the batch job on a local
Ray, with a forced small ``--tile``; the ``tiles`` metrics column and the run summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data

from media_samples import periodic_texture  # tests/media_samples.py

from jobs.batch import driver as stylize
from jobs.image.cli import main, parse_args
from stylize_core.tiling import wrap_ratio

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiles_in")
    Image.fromarray(data.astronaut()[60:358, 90:407]).save(root / "big.png")  # 298 x 317: odd, above --tile
    Image.fromarray(data.astronaut()[100:164, 200:264]).save(root / "small.png")  # one tile
    texture = periodic_texture(150, 203).round().astype(np.uint8).transpose(1, 2, 0)
    Image.fromarray(texture).save(root / "texture.png")
    return root


def _cli(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "jobs.stylize_image", *argv], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(np.float64)


def test_cli_tiles_a_large_image_like_one_pass(photos, tmp_path):
    tiled = _cli(str(photos / "big.png"), "-o", str(tmp_path / "tiled.png"), "--tile", "192", "--json", "--device", "cpu")
    assert tiled.returncode == 0, tiled.stderr
    (row,) = [json.loads(line) for line in tiled.stdout.splitlines() if line.strip()]
    assert row["status"] == "ok" and row["tiles"] == 9 and (row["width"], row["height"]) == (317, 298)
    assert main(parse_args([str(photos / "big.png"), "-o", str(tmp_path / "whole.png"), "--device", "cpu", "-q"])) == 0
    a, b = _read(tmp_path / "tiled.png"), _read(tmp_path / "whole.png")
    assert b.std() > 20  # the demo network's output spans the range
    assert np.abs(a - b).mean() <= 1.5  # the image fits the budget, so its thumbnail is the image itself


def test_cli_tileable_output_repeats_without_a_seam(photos, tmp_path):
    out = tmp_path / "tex.png"
    assert main(parse_args([str(photos / "texture.png"), "-o", str(out), "--tileable", "--device", "cpu", "-q"])) == 0
    plain = tmp_path / "plain.png"
    assert main(parse_args([str(photos / "texture.png"), "-o", str(plain), "--device", "cpu", "-q"])) == 0
    assert _read(out).shape == (150, 203, 3)
    # one column's gradient against the mean of all is noisy on the demo's sharp mosaic: 1.39 measured
    # with --tileable (tests/stylize_core/test_tiling.py: SEAMLESS), far above that without
    assert wrap_ratio(_read(out)) <= 1.6 < 2 * 1.6 < wrap_ratio(_read(plain)), (wrap_ratio(_read(out)), wrap_ratio(_read(plain)))


def test_cli_tiles_adain_like_one_pass_and_refuses_tileable_adain(tmp_path, capsys):
    """--method adain takes --tile (and the activation budget): the tiles share the whole image's
    content statistics, so the output is the one pass's (sides multiples of 8: the same pooling grid)."""
    Image.fromarray(data.astronaut()[40:400, 60:460]).save(tmp_path / "photo.png")  # 400 x 360
    Image.fromarray(data.coffee()[::3, ::3]).save(tmp_path / "style.png")
    base = [str(tmp_path / "photo.png"), "--method", "adain", "--style-image", str(tmp_path / "style.png"), "--json",
            "--device", "cpu"]
    assert main(parse_args([*base, "-o", str(tmp_path / "whole.png")])) == 0
    assert main(parse_args([*base, "-o", str(tmp_path / "tiled.png"), "--tile", "320"])) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["tiles"] for r in rows] == [1, 4]
    whole, tiled, photo = (_read(tmp_path / f"{n}.png") for n in ("whole", "tiled", "photo"))
    assert np.abs(whole - photo).mean() > 20  # the demo styles: the comparison below can fail
    assert np.abs(tiled - whole).max() <= 1
    with pytest.raises(SystemExit) as refused:
        parse_args([*base, "-o", str(tmp_path / "x.png"), "--tileable"])
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tileable is for style networks" in err[0]
    with pytest.raises(SystemExit) as refused:  # the batch job (and through its settings the catalog, video)
        stylize.parse_args(["--method", "adain", "--style-image", f"s={tmp_path / 'style.png'}", "--tileable"])
    assert refused.value.code == 2 and "--tileable is for style networks" in capsys.readouterr().err


def test_cli_refuses_a_tile_below_the_overlap(photos, tmp_path):
    bad = _cli(str(photos / "small.png"), "-o", str(tmp_path / "x.png"), "--tile", "100")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "--tile" in bad.stderr and "192" in bad.stderr
    bad = _cli(str(photos / "small.png"), "-o", str(tmp_path / "x.png"), "--max-memory", "lots")
    assert bad.returncode == 2 and "--max-memory" in bad.stderr


@pytest.mark.usefixtures("ray_local")
def test_batch_job_records_tiles_per_image(photos, tmp_path):
    out = tmp_path / "out"
    summary = stylize.run(stylize.parse_args([
        "--input", str(photos), "--output", str(out), "--style", "demo=" + str(REPO / "stylize_core/assets/demo_mosaic.pth"),
        "--no-metrics", "--quiet", "--run-id", "tiles", "--tile", "192", "--format", "png", "--device", "cpu",
    ]))
    rows = {Path(r["rel_path"]).name: r for r in pq.read_table(str(out / "_metrics" / "run_id=tiles")).to_pylist()}
    assert rows["texture.png"]["status"] == "ok" and rows["texture.png"]["tiles"] == 2  # 203 px wide: two columns
    assert rows["big.png"]["status"] == "ok" and rows["big.png"]["tiles"] == 9
    assert rows["small.png"]["status"] == "ok" and rows["small.png"]["tiles"] == 1
    assert (summary["tiled_rows"], summary["tiles"]) == (2, 11)
    assert _read(out / "demo" / "big.png").shape == (298, 317, 3)
