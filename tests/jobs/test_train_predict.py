"""``jobs.train --task predict``: option checks, and one small real Ray Train run that exports a
predictor the stylizer loads (1 CPU worker, 32 px crops, random VGG)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from jobs.train import program
from jobs.train import settings as train_settings
from stylize_core.builder import StylizerSpec
from stylize_core.predictor_checkpoint import predictor_from_bytes
from stylize_core.registry import build_stylizer

FAST = ["--image-size", "32", "--vgg-weights", "random:0", "--style-layers", "relu1_2,relu2_2", "--log-every", "1",
        "--width", "0.25", "--embedding", "8", "--style-size", "32", "--batch-size", "2"]


def _png(seed: int, shape: tuple[int, int] = (40, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("argv, expect", [
    (["--task", "predict"], "--style-images PREFIX"),
    (["--task", "predict", "--style-images", "s/", "--style-image", "x.png"], "takes no --style-image"),
    (["--style-image", "x.png", "--style-images", "s/"], "--style-images belongs to --task predict"),
])
def test_option_errors_exit_2_in_one_line(argv, expect, capsys):
    with pytest.raises(SystemExit) as info:
        train_settings.parse_args(["--content", "c/", "--output", "o/", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err


def test_unreadable_style_image_exits_2_before_training(tmp_path, capsys):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.png").write_bytes(_png(1))
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "bad.png").write_bytes(b"not an image")
    argv = ["--task", "predict", "--content", str(tmp_path / "c"), "--style-images", str(tmp_path / "s"),
            "--output", str(tmp_path / "o"), *FAST]
    assert program.main(train_settings.parse_args(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.png" in err[0] and "not a usable image" in err[0]
    assert not (tmp_path / "o").exists()


def test_trains_and_exports_a_loadable_predictor(ray_local: None, tmp_path) -> None:
    """One Ray Train run of the predictor's worker loop. A rerun resumes through the code every task
    shares (restore_checkpoint, run_fields), which tests/jobs/test_train_job.py crashes and reruns;
    the predictor's own state dict round trip is tests/stylize_core/test_predictor.py's."""
    content, styles, out = tmp_path / "content", tmp_path / "styles", tmp_path / "out"
    content.mkdir(), styles.mkdir()
    for i in range(4):
        (content / f"img{i}.png").write_bytes(_png(i))
    for i in range(3):
        (styles / f"s{i}.png").write_bytes(_png(50 + i, (48, 48)))
    argv = ["--task", "predict", "--content", str(content), "--style-images", str(styles), "--output", str(out),
            "--epochs", "100", "--checkpoint-every", "1", "--steps", "3", *FAST]
    assert program.main(train_settings.parse_args(argv)) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["resumed_from_step"] == 0 and summary["steps_this_run"] == 3
    assert summary["style_images"] == 3 and summary["loss_model"] == "vgg16/random:0"
    assert (out / "train" / "checkpoint_00000003").is_dir()
    rows = list(csv.DictReader((out / "loss_history.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3] and all(np.isfinite(float(r["total"])) for r in rows)
    loaded = predictor_from_bytes((out / "final" / "predictor.pth").read_bytes())
    recipe = json.loads(loaded.metadata["training"])
    assert recipe["steps_done"] == 3 and sorted(recipe["style_names"]) == ["s0", "s1", "s2"]
    assert loaded.model.config.embedding == 8 and loaded.model.content_embedding.abs().sum() > 0
    spec = StylizerSpec(styles={}, style_images={"s0": str(styles / "s0.png")}, method="predict",
                        predictor=str(out / "final" / "predictor.pth"), metrics=False, device="cpu")
    built = build_stylizer(spec, lambda uri: open(uri, "rb").read())
    assert built.stylizer.stylize([np.zeros((20, 24, 3), np.uint8)], "s0")[0].image.shape == (20, 24, 3)
