"""The local CLI's --regions: several styles in one output by a label --mask, written and read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from region_samples import save_two_style_network, two_styles  # tests/region_samples.py
from jobs.image.cli import main, parse_args
from stylize_core.demo_assets import demo_style_network

H, W = 96, 128
CORE = 16


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(int)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("regions_cli")
    out = {"photo": root / "photo.png", "mask": root / "mask.png", "multi": root / "multi.pth"}
    Image.fromarray(data.astronaut()[40:40 + H, 150:150 + W]).save(out["photo"])
    labels = np.zeros((H, W), np.uint8)
    labels[:, 40:84], labels[:, 84:] = 1, 2
    Image.fromarray(labels).save(out["mask"])
    save_two_style_network(str(out["multi"]))
    for name, image in two_styles().items():
        out[name] = root / f"{name}.png"
        Image.fromarray(image).save(out[name])
    return out


def _run(files, tmp_path, name: str, *extra: str) -> np.ndarray:
    out = tmp_path / f"{name}.png"
    assert main(parse_args([str(files["photo"]), "-o", str(out), "--device", "cpu", "-q", *extra])) == 0
    return _rgb(out)


def _check(out: np.ndarray, image: np.ndarray, one: np.ndarray, two: np.ndarray, bound: float = 0.5,
           apart: float = 0.5) -> None:
    """Label 0 the input exactly; each region's core styled, and nearer its own style's output there
    than the input (by ``bound``) and than the other style's output (by ``apart``)."""
    assert np.array_equal(out[:, :40], image[:, :40])
    for cols, own, other in ((slice(40 + CORE, 84 - CORE), one, two), (slice(84 + CORE, W), two, one)):
        near, far, wrong = (np.abs(out[:, cols] - x[:, cols]).mean() for x in (own, image, other))
        assert far > 20 and near < bound * far and near < apart * wrong, (near, far, wrong)


def test_adain_style_images_in_their_regions(files, tmp_path, capsys):
    image = _rgb(files["photo"])
    a = _run(files, tmp_path, "a", "--method", "adain", "--style-image", str(files["a"]))
    b = _run(files, tmp_path, "b", "--method", "adain", "--style-image", str(files["b"]))
    capsys.readouterr()
    out = _run(files, tmp_path, "ab", "--method", "adain", "--regions", f"{files['a']},{files['b']}",
               "--mask", str(files["mask"]), "--mask-mode", "labels", "--json")
    row = json.loads(capsys.readouterr().out)
    assert row["status"] == "ok" and row["style"] == "regions" and len(row["checkpoint_sha256"]) == 64
    _check(out, image, a, b, bound=0.6, apart=0.7)  # measured: near 27.6, input 59.8, other style 50.6


def test_a_multi_style_checkpoint_by_index(files, tmp_path):
    image = _rgb(files["photo"])
    a = _run(files, tmp_path, "a", "--checkpoint", str(files["multi"]), "--mix", "0")
    b = _run(files, tmp_path, "b", "--checkpoint", str(files["multi"]), "--mix", "b")
    out = _run(files, tmp_path, "ab", "--checkpoint", str(files["multi"]), "--regions", "0,b",
               "--mask", str(files["mask"]), "--mask-mode", "labels")
    _check(out, image, a, b)


def test_separate_checkpoints_are_blended(files, tmp_path):
    image = _rgb(files["photo"])
    full = _run(files, tmp_path, "full", "--checkpoint", demo_style_network())
    slim = _run(files, tmp_path, "slim", "--checkpoint", demo_style_network(slim=True))
    out = _run(files, tmp_path, "both", "--regions", f"{demo_style_network()},{demo_style_network(slim=True)}",
               "--mask", str(files["mask"]), "--mask-mode", "labels")
    _check(out, image, full, slim, bound=0.05)  # blended outputs: each core is its network's output


def test_regions_options_are_checked(files, capsys):
    photo = str(files["photo"])
    bad = {"needs --mask MASK --mask-mode labels": ["--regions", "0,1", "--mask", str(files["mask"])],
           "exclude each other": ["--regions", "0,1", "--mix", "0", "--mask", str(files["mask"]), "--mask-mode",
                                  "labels"],
           "not --style-image": ["--method", "adain", "--style-image", str(files["a"]), "--regions",
                                 f"{files['a']},{files['b']}", "--mask", str(files["mask"]), "--mask-mode", "labels"]}
    for message, argv in bad.items():
        capsys.readouterr()
        with pytest.raises(SystemExit):
            parse_args([photo, "-o", "x.png", *argv])
        assert message in capsys.readouterr().err
    # a label beyond the parts: exit 2, one line
    capsys.readouterr()
    assert main(parse_args([photo, "-o", "x.png", "--device", "cpu", "--method", "adain", "--regions", str(files["a"]),
                            "--mask", str(files["mask"]), "--mask-mode", "labels"])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "values up to 2 but there are 1 style" in err[0], err
