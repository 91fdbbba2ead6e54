"""``jobs.train --task``: every task's options to its exported files, a resumed trainer, one Ray Train run, refusals."""

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


def _check_export(out, task: str, steps: int, onnx_max_abs_diff: float, compound: bool = False) -> None:
    """What a finished run leaves: the loss history (CSV + PNG), the checkpoint (task, degradation,
    config, steps) and an ONNX export that matches it."""
    assert onnx_max_abs_diff < 0.05
    rows = list(csv.DictReader((out / "loss_history.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1)) and np.isfinite(float(rows[-1]["total"]))
    assert (out / "loss_history.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "final" / "enhance.onnx").stat().st_size > 0
    sm = load_style_model(str(out / "final" / "enhance.pth"))
    assert sm.enhance.task == task and sm.enhance.degradation == task_degradation(task, compound)
    assert sm.metadata["training_config"]["patch"] == 16 and sm.metadata["steps"] == steps
    x = torch.rand(1, 3, 9, 11) * 255
    with torch.no_grad():
        assert sm.model(x).shape == (1, 3, 9 * sm.enhance.scale, 11 * sm.enhance.scale)


@pytest.mark.parametrize("task,extra", [("denoise", ("--unshuffle", "2", "--tv-weight", "0.01")),
                                        ("deblock", ("--pixel-loss", "l1", "--compound")),
                                        ("sr2", ())])
def test_each_task_trains_and_exports_from_its_options(content, tmp_path, task, extra) -> None:
    """The Ray Train worker loop's step and the driver's export, without Ray Train: every task's
    options reach the trainer (losses, degradation, network) and the exported files."""
    from jobs.train.enhance import enhance_config, export_final
    from stylize_core.enhance_training import EnhanceTrainer

    config = enhance_config(train_settings.parse_args(_argv(content, tmp_path / "unused", task, 1, *extra)))
    trainer = EnhanceTrainer(config)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(content.iterdir())]
    degraded, clean = trainer.batch(images, np.random.default_rng(0))
    assert degraded.shape[0] == clean.shape[0] == 2 and degraded.shape[-1] * config.scale == clean.shape[-1] == 16
    record = trainer.step(degraded, clean)
    assert ("tv" in record) == ("--tv-weight" in extra) and np.isfinite(record["total"])
    out = tmp_path / "out"
    exported = export_final(trainer.state_dict(), str(out), None, extra={"content_images": len(images)})
    _check_export(out, task, 1, exported["onnx_max_abs_diff"], "--compound" in extra)
    cfg = load_style_model(str(out / "final" / "enhance.pth")).metadata["training_config"]
    assert cfg["pixel_loss"] == ("l1" if "l1" in extra else "charbonnier")
    assert cfg["tv_weight"] == (0.01 if "--tv-weight" in extra else 0.0)


def test_a_resumed_trainer_takes_the_steps_an_uninterrupted_one_takes(content, tmp_path) -> None:
    """What a rerun restores from a checkpoint (jobs.train.worker.restore_checkpoint, the same for every
    task and run on Ray Train by tests/jobs/test_train_job.py's crash and rerun) is the whole trainer:
    one that stops after step 1 and is loaded from its state dict ends step 3 where an uninterrupted
    one does, history included."""
    from jobs.train.enhance import enhance_config
    from stylize_core.enhance_training import EnhanceTrainer

    config = enhance_config(train_settings.parse_args(_argv(content, tmp_path / "unused", "sr2", 3)))
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(content.iterdir())]
    rng = np.random.default_rng(0)
    batches = [EnhanceTrainer(config).batch(images, rng) for _ in range(3)]
    whole = EnhanceTrainer(config)
    for degraded, clean in batches:
        whole.step(degraded, clean)
    first = EnhanceTrainer(config)
    first.step(*batches[0])
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)  # as a checkpoint holds it
    resumed = EnhanceTrainer(config)
    resumed.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert resumed.step_count == 1
    for degraded, clean in batches[1:]:
        resumed.step(degraded, clean)
    assert [r["step"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history[-1]["total"] == pytest.approx(whole.history[-1]["total"], rel=1e-5)
    for key, value in whole.raw_net.state_dict().items():
        torch.testing.assert_close(resumed.raw_net.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_ray_train_run_exports_and_reports_a_bad_file(ray_local: None, content, tmp_path) -> None:
    """The Ray Train path, the same for every task (each task's options: above, without Ray), with
    the perceptual loss on the texture network and an undecodable file among the content images."""
    (content / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    out = tmp_path / "out"
    perceptual = ("--perceptual-weight", "0.1", "--vgg", "texture:0")
    assert program.main(train_settings.parse_args(_argv(content, out, "sr4", 3, *perceptual))) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["task"] == "sr4" and summary["loss_model"] == "texture/random:0"
    assert summary["steps"] == 3 and summary["resumed_from_step"] == 0 and summary["steps_this_run"] == 3
    assert summary["content_images"] == 5 and summary["skipped_files"] == 1
    assert summary["skipped"][0]["uri"].endswith("broken.png")
    assert {p.name for p in (out / "train").glob("checkpoint_*")} >= {"checkpoint_00000003"}
    _check_export(out, "sr4", 3, summary["onnx_max_abs_diff"])
    rows = list(csv.DictReader((out / "loss_history.csv").open()))
    assert all(float(r["perceptual"]) > 0 for r in rows)


def test_refusals_in_one_line(content, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        train_settings.parse_args(["--content", str(content), "--output", str(tmp_path), "--task", "sr4", "--patch", "18"])
    assert info.value.code == 2 and "multiple of the task's scale" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_settings.parse_args(["--content", str(content), "--output", str(tmp_path), "--task", "sr2", "--style-image", "s"])
    assert "takes no --style-image" in capsys.readouterr().err
    assert program.main(train_settings.parse_args(_argv(content, tmp_path / "o", "sr2", 1, "--unshuffle", "2"))) == 2
    assert "unshuffle" in capsys.readouterr().err
