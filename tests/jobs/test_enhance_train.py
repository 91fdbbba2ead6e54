"""``jobs.train --task``: one Ray Train step per enhancement task, exports, resume, refusals."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from jobs.train import settings as train_settings
from jobs.train import program
from stylize_core.checkpoint import load_style_model
from stylize_core.degrade import task_degradation


def _png(seed: int, shape: tuple[int, int] = (40, 48)) -> bytes:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    rng = np.random.default_rng(seed)
    img = np.stack([(xx * (3 + c) + yy * (5 - c) + rng.integers(0, 255)) % 256 for c in range(3)], -1)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def content(tmp_path):
    root = tmp_path / "content"
    root.mkdir()
    for i in range(4):
        (root / f"img{i}.png").write_bytes(_png(i))
    return root


def _argv(content, out, task: str, steps: int, *extra: str) -> list[str]:
    return ["--content", str(content), "--output", str(out), "--task", task, "--steps", str(steps),
            "--batch-size", "2", "--workers", "1", "--image-size", "32", "--patch", "16", "--channels", "4",
            "--blocks", "1", "--log-every", "1", "--checkpoint-every", "1", *extra]


@pytest.mark.parametrize("task,extra", [("sr2", ()), ("sr4", ("--perceptual-weight", "0.1", "--vgg", "texture:0")),
                                        ("denoise", ("--unshuffle", "2", "--tv-weight", "0.01")),
                                        ("deblock", ("--pixel-loss", "l1", "--compound"))])
def test_one_step_per_task_on_ray_train(ray_local: None, content, tmp_path, task, extra) -> None:
    out = tmp_path / "out"
    assert program.main(train_settings.parse_args(_argv(content, out, task, 1, *extra))) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["task"] == task and summary["steps"] == 1 and summary["onnx_max_abs_diff"] < 0.05
    rows = list(csv.DictReader((out / "loss_history.csv").open()))
    assert [int(r["step"]) for r in rows] == [1] and np.isfinite(float(rows[0]["total"]))
    if "--perceptual-weight" in extra:
        assert float(rows[0]["perceptual"]) > 0 and summary["loss_model"] == "texture/random:0"
    assert (out / "loss_history.png").read_bytes().startswith(b"\x89PNG")
    sm = load_style_model(str(out / "final" / "enhance.pth"))
    assert sm.enhance.task == task and sm.enhance.degradation == task_degradation(task, "--compound" in extra)
    assert sm.metadata["training_config"]["patch"] == 16 and sm.metadata["steps"] == 1
    x = torch.rand(1, 3, 9, 11) * 255
    with torch.no_grad():
        assert sm.model(x).shape == (1, 3, 9 * sm.enhance.scale, 11 * sm.enhance.scale)


def test_rerun_resumes_from_the_checkpoint(ray_local: None, content, tmp_path) -> None:
    out = tmp_path / "out"
    assert program.main(train_settings.parse_args(_argv(content, out, "sr2", 1))) == 0
    assert program.main(train_settings.parse_args(_argv(content, out, "sr2", 3))) == 0  # raise --steps: trains further
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["resumed_from_step"] == 1 and summary["steps_this_run"] == 2
    rows = list(csv.DictReader((out / "loss_history.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]


def test_refusals_in_one_line(content, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        train_settings.parse_args(["--content", str(content), "--output", str(tmp_path), "--task", "sr4", "--patch", "18"])
    assert info.value.code == 2 and "multiple of the task's scale" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_settings.parse_args(["--content", str(content), "--output", str(tmp_path), "--task", "sr2", "--style-image", "s"])
    assert "takes no --style-image" in capsys.readouterr().err
    assert program.main(train_settings.parse_args(_argv(content, tmp_path / "o", "sr2", 1, "--unshuffle", "2"))) == 2
    assert "unshuffle" in capsys.readouterr().err
