"""Masks through the real programs: the local CLI (in process, and a subprocess for the exit status and
its one line) and the batch job on a local Ray with --mask-prefix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from jobs.image.cli import main, parse_args

REPO = Path(__file__).resolve().parents[2]
H, W = 96, 128


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(int)


def _left_black(h: int = H, w: int = W) -> Image.Image:
    m = np.zeros((h, w), np.uint8)
    m[:, w // 2:] = 255
    return Image.fromarray(m)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("masks_in")
    Image.fromarray(data.astronaut()[40:40 + H, 150:150 + W]).save(root / "face.png")
    Image.fromarray(data.astronaut()[300:300 + H, 100:100 + W]).save(root / "suit.png")
    (root / "sub").mkdir()
    Image.fromarray(data.astronaut()[200:200 + H, 300:300 + W]).save(root / "sub" / "hand.png")
    return root


def _cli(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "jobs.stylize_image", *argv], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)


def test_cli_with_a_mask_keeps_the_black_half(photos, tmp_path):
    _left_black().save(tmp_path / "mask.png")
    args = [str(photos / "face.png"), "--device", "cpu", "-q", "--format", "png"]
    assert main(parse_args([*args, "-o", str(tmp_path / "masked.png"), "--mask", str(tmp_path / "mask.png")])) == 0
    assert main(parse_args([*args, "-o", str(tmp_path / "plain.png")])) == 0
    masked, plain, image = _rgb(tmp_path / "masked.png"), _rgb(tmp_path / "plain.png"), _rgb(photos / "face.png")
    assert np.abs(plain - image).mean() > 20  # the style shows where it is not masked out
    assert np.array_equal(masked[:, : W // 2], image[:, : W // 2])
    assert np.array_equal(masked[:, W // 2:], plain[:, W // 2:])
    px = 8
    assert main(parse_args([*args, "-o", str(tmp_path / "soft.png"), "--mask", str(tmp_path / "mask.png"),
                            "--mask-feather", str(px)])) == 0
    soft = _rgb(tmp_path / "soft.png")
    assert np.abs(soft[:, : W // 2 - px] - image[:, : W // 2 - px]).max() <= 2
    assert np.abs(soft[:, W // 2 + px:] - plain[:, W // 2 + px:]).max() <= 2
    assert np.abs(soft[:, W // 2 - 2: W // 2 + 2] - image[:, W // 2 - 2: W // 2 + 2]).mean() > 3  # blended


def test_cli_bad_masks_exit_2_with_one_line(photos, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    res = _cli(str(photos / "face.png"), "-o", out, "--device", "cpu", "--mask", str(tmp_path / "missing.png"))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines() == [f"python -m jobs.stylize_image: error: mask {tmp_path / 'missing.png'}: "
                                               "not found"]
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    _left_black(H, W + 1).save(tmp_path / "wide.png")
    for name, reason in {"corrupt.png": "not a readable image", "wide.png": "129x96 but the input is 128x96"}.items():
        capsys.readouterr()
        assert main(parse_args([str(photos / "face.png"), "-o", out, "--device", "cpu", "--mask", str(tmp_path / name)])) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and f"mask {tmp_path / name}" in lines[0] and reason in lines[0], lines
    assert not os.path.exists(out)
