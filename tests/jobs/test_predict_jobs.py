"""Style prediction through the programs: the local CLI and the batch job on local Ray (random
weights with the output rescaled to span the grey range, tiny images)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from style_image_checks import (  # tests/jobs/style_image_checks.py
    check_two_style_images_and_a_mix, check_video_on_a_tiny_sequence, write_style_image_assets)

from jobs.batch import driver as stylize
from jobs.common.run_settings import demo_predictor_checkpoint
from jobs.image.cli import main, parse_args
from stylize_core.image_io import decode_image
from stylize_core.predictor import PredictorConfig, StylePredictorModel
from stylize_core.predictor_checkpoint import predictor_checkpoint_bytes
from stylize_core.transformer_net import NetConfig


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A random slim predictor whose output spans the grey range, two style images and two inputs,
    one of a size that is not a multiple of 4."""
    root = tmp_path_factory.mktemp("predict_jobs")
    torch.manual_seed(0)
    model = StylePredictorModel(PredictorConfig(NetConfig(width=0.25), embedding=8, style_size=32))
    with torch.no_grad():
        model.transformer.deconv3.conv2d.weight.mul_(200.0)
        model.transformer.deconv3.conv2d.bias.fill_(128.0)
    (root / "predictor.pth").write_bytes(predictor_checkpoint_bytes(model))
    return write_style_image_assets(root)


def test_cli_writes_the_output(assets, tmp_path, capsys):
    out = tmp_path / "styled.png"
    argv = [str(assets / "in" / "b.png"), "--method", "predict", "--predictor", str(assets / "predictor.pth"),
            "--style-image", str(assets / "wave.png"), "--alpha", "0.7", "--json", "-o", str(out)]
    assert main(parse_args(argv)) == 0
    styled = decode_image(out.read_bytes())
    assert styled.shape == (21, 30, 3)  # not a multiple of 4: padded and cropped back
    source = decode_image((assets / "in" / "b.png").read_bytes())
    assert styled.astype(float).std() > 10 and np.abs(styled.astype(float) - source).mean() > 10
    row = json.loads(capsys.readouterr().out)
    assert row["status"] == "ok" and row["method"] == "predict" and row["style"] == "wave"
    assert len(row["checkpoint_sha256"]) == 64  # the style's id: image, predictor, alpha


@pytest.mark.parametrize("predictor, expect", [("missing.pth", "not found"), ("corrupt.pth", "not a PyTorch checkpoint")])
def test_cli_bad_predictor_exits_2_with_one_line(assets, tmp_path, capsys, predictor, expect):
    (tmp_path / "corrupt.pth").write_bytes(b"this is no checkpoint")
    argv = [str(assets / "in" / "a.png"), "--method", "predict", "--predictor", str(tmp_path / predictor),
            "--style-image", str(assets / "wave.png"), "-o", str(tmp_path / "o.png")]
    assert main(parse_args(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert predictor in err and expect in err and "style predictor" in err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("extra, expect", [
    (["--predictor", "x.pth"], "--predictor belongs to --method predict"),
    (["--method", "predict"], "--method predict needs --style-image"),
])
def test_cli_option_errors_exit_2(assets, tmp_path, capsys, extra, expect):
    with pytest.raises(SystemExit) as info:
        parse_args([str(assets / "in" / "a.png"), *extra, "-o", str(tmp_path / "o.png")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err


def test_batch_settings_without_predictor_use_the_shipped_demo(assets, tmp_path):
    settings = stylize.parse_args(["--input", str(assets / "in"), "--output", str(tmp_path), "--method", "predict",
                                   "--style-image", f"wave={assets / 'wave.png'}"])
    assert settings.predictor == demo_predictor_checkpoint() and settings.styles == {}
    assert settings.style_names == ["wave"]


@pytest.mark.usefixtures("ray_local")
def test_batch_job_two_style_images_and_a_mix(assets, tmp_path):
    method = ["--method", "predict", "--predictor", str(assets / "predictor.pth")]
    check_two_style_images_and_a_mix(assets, tmp_path / "out", method, "predict")


@pytest.mark.usefixtures("ray_local")
def test_batch_job_missing_style_image_exits_2_with_one_line(assets, tmp_path, capsys):
    missing = tmp_path / "gone.png"
    argv = ["--input", str(assets / "in"), "--output", str(tmp_path / "out"), "--method", "predict",
            "--predictor", str(assets / "predictor.pth"), "--style-image", f"gone={missing}", "--no-metrics",
            "--run-id", "gone", "--quiet"]
    assert stylize.main(stylize.parse_args(argv)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and str(missing) in err[0] and "not found" in err[0] and "Traceback" not in err[0]


@pytest.mark.usefixtures("ray_local")
def test_video_job_runs_style_prediction_on_a_tiny_sequence(assets, tmp_path):
    method = ["--method", "predict", "--predictor", str(assets / "predictor.pth")]
    encodings = check_video_on_a_tiny_sequence(assets, tmp_path, method, min_spread=40)
    assert encodings["style_images"]["wave"]["arrays"] == {"embedding": [8]}


def test_video_settings_take_style_images_and_the_demo_predictor(assets, tmp_path):
    from jobs.video.driver import _styles
    from jobs.video.settings import parse_args as video_args

    settings = video_args(["--input", str(assets / "in"), "--output", str(tmp_path), "--method", "predict",
                           "--style-image", f"wave={assets / 'wave.png'}", "--style-image", f"ink={assets / 'ink.png'}",
                           "--mix", "both=wave:1,ink:1"])
    assert settings.predictor == demo_predictor_checkpoint() and settings.styles == {}
    assert settings.style_names == ["wave", "ink", "both"]
    assert _styles(settings, {})["both"]["predictor"] == demo_predictor_checkpoint()
    with pytest.raises(SystemExit):
        video_args(["--input", str(assets / "in"), "--output", str(tmp_path), "--predictor", "x.pth"])


def test_cli_without_predictor_uses_the_shipped_demo(assets, tmp_path, capsys):
    out = tmp_path / "o.png"
    settings = parse_args([str(assets / "in" / "a.png"), "--method", "predict", "--style-image",
                           str(assets / "wave.png"), "--json", "-o", str(out)])
    assert settings.predictor == demo_predictor_checkpoint()
    assert main(settings) == 0
    assert decode_image(out.read_bytes()).shape == (24, 32, 3)
    row = json.loads(capsys.readouterr().out)
    assert row["status"] == "ok" and row["method"] == "predict"
