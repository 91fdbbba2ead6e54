"""AdaIN through the programs: the local CLI and the batch job on local Ray (random weights, tiny images)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from style_image_checks import (  # tests/jobs/style_image_checks.py
    check_two_style_images_and_a_mix, check_video_on_a_tiny_sequence, write_image, write_style_image_assets)

from jobs.batch import driver as stylize
from jobs.common.run_settings import demo_adain_checkpoint
from jobs.image.cli import main, parse_args
from stylize_core import adain
from stylize_core.image_io import decode_image


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """pytorch-AdaIN-layout files with random weights (the encoder truncated to vgg[:31]), two style
    images and two inputs, one of a size that is not a multiple of 8."""
    root = tmp_path_factory.mktemp("adain_jobs")
    torch.manual_seed(0)
    torch.save(adain.encoder().state_dict(), root / "vgg_normalised.pth")
    torch.save(adain.decoder().state_dict(), root / "decoder.pth")
    return write_style_image_assets(root)


def test_cli_writes_the_output(assets, tmp_path, capsys):
    out = tmp_path / "styled.png"
    argv = [str(assets / "in" / "b.png"), "--method", "adain", "--encoder", str(assets / "vgg_normalised.pth"),
            "--decoder", str(assets / "decoder.pth"), "--style-image", str(assets / "wave.png"), "--alpha", "0.7",
            "--preserve-color", "--json", "-o", str(out)]
    assert main(parse_args(argv)) == 0
    assert decode_image(out.read_bytes()).shape == (21, 30, 3)  # not a multiple of 8: cropped back
    row = json.loads(capsys.readouterr().out)
    assert row["status"] == "ok" and row["method"] == "adain" and row["style"] == "wave"
    assert len(row["checkpoint_sha256"]) == 64  # the style's id: image, encoder + decoder, alpha


def test_cli_mask_composes_with_adain(assets, tmp_path):
    """Masks wrap whatever a method outputs: the black half is the input, the white half AdaIN's output."""
    base = [str(assets / "in" / "a.png"), "--method", "adain", "--encoder", str(assets / "vgg_normalised.pth"),
            "--decoder", str(assets / "decoder.pth"), "--style-image", str(assets / "wave.png"), "--quiet"]
    mask = np.zeros((24, 32), np.uint8)
    mask[:, 16:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(parse_args([*base, "-o", str(tmp_path / "plain.png")])) == 0
    assert main(parse_args([*base, "--mask", str(tmp_path / "mask.png"), "-o", str(tmp_path / "masked.png")])) == 0
    source = decode_image((assets / "in" / "a.png").read_bytes()).astype(int)
    plain = decode_image((tmp_path / "plain.png").read_bytes()).astype(int)
    masked = decode_image((tmp_path / "masked.png").read_bytes()).astype(int)
    assert np.abs(plain - source)[:, 16:].mean() > 10  # AdaIN changed the image: the checks below can fail
    assert np.array_equal(masked[:, :16], source[:, :16]) and np.array_equal(masked[:, 16:], plain[:, 16:])


@pytest.mark.parametrize("encoder, expect", [("missing.pth", "not found"), ("corrupt.pth", "not a PyTorch checkpoint")])
def test_cli_bad_encoder_exits_2_with_one_line(assets, tmp_path, capsys, encoder, expect):
    (tmp_path / "corrupt.pth").write_bytes(b"this is no checkpoint")
    argv = [str(assets / "in" / "a.png"), "--method", "adain", "--encoder", str(tmp_path / encoder),
            "--decoder", str(assets / "decoder.pth"), "--style-image", str(assets / "wave.png"),
            "-o", str(tmp_path / "o.png")]
    assert main(parse_args(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert encoder in err and expect in err and "vgg_normalised.pth" in err
    assert not (tmp_path / "o.png").exists()


def test_cli_without_weights_uses_the_shipped_demo(assets, tmp_path, capsys):
    out = tmp_path / "o.png"
    settings = parse_args([str(assets / "in" / "a.png"), "--method", "adain", "--style-image",
                           str(assets / "wave.png"), "--json", "-o", str(out)])
    assert settings.decoder == demo_adain_checkpoint() and settings.encoder is None
    assert main(settings) == 0
    assert decode_image(out.read_bytes()).shape == (24, 32, 3)
    row = json.loads(capsys.readouterr().out)
    assert row["status"] == "ok" and row["method"] == "adain"


def test_cli_encoder_without_decoder_exits_2_naming_both_files(assets, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args([str(assets / "in" / "a.png"), "--method", "adain", "--encoder", str(assets / "vgg_normalised.pth"),
                    "--style-image", str(assets / "wave.png"), "-o", str(tmp_path / "o.png")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vgg_normalised.pth" in err and "decoder.pth" in err


def test_batch_settings_without_weights_use_the_shipped_demo(assets, tmp_path):
    settings = stylize.parse_args(["--input", str(assets / "in"), "--output", str(tmp_path), "--method", "adain",
                                   "--style-image", f"wave={assets / 'wave.png'}"])
    assert settings.decoder == demo_adain_checkpoint() and settings.encoder is None


@pytest.mark.usefixtures("ray_local")
def test_batch_job_two_style_images_and_a_mix(assets, tmp_path):
    method = ["--method", "adain", "--encoder", str(assets / "vgg_normalised.pth"),
              "--decoder", str(assets / "decoder.pth")]
    check_two_style_images_and_a_mix(assets, tmp_path / "out", method, "adain")


@pytest.mark.usefixtures("ray_local")
def test_video_job_runs_adain_on_a_tiny_sequence(assets, tmp_path):
    weights = ["--encoder", str(assets / "vgg_normalised.pth"), "--decoder", str(assets / "decoder.pth")]
    encodings = check_video_on_a_tiny_sequence(assets, tmp_path, ["--method", "adain", *weights])
    assert encodings["style_images"]["wave"]["arrays"] == {"mean": [1, 512, 1, 1], "std": [1, 512, 1, 1]}


@pytest.mark.usefixtures("ray_local")
def test_nightly_catalog_re_renders_a_style_whose_image_changed(assets, tmp_path):
    import json

    import yaml

    from jobs.catalog import night as catalog

    (tmp_path / "wave.png").write_bytes((assets / "wave.png").read_bytes())
    (tmp_path / "ink.png").write_bytes((assets / "ink.png").read_bytes())
    out = tmp_path / "out"
    cfg = tmp_path / "nightly.yaml"
    cfg.write_text(yaml.safe_dump({
        "source": str(assets / "in"), "output": str(out), "method": "adain",
        "encoder": str(assets / "vgg_normalised.pth"), "decoder": str(assets / "decoder.pth"),
        "style_images": {"wave": str(tmp_path / "wave.png"), "ink": str(tmp_path / "ink.png")},
        "mix": {"both": {"wave": 0.5, "ink": 0.5}}, "no_metrics": True, "quiet": True, "contact_sheet": 0}))

    def night(run_id: str) -> tuple[dict, list[dict]]:
        assert catalog.cli(["--config", str(cfg), "--run-id", run_id]) == 0
        summary = json.loads((out / "_runs" / f"{run_id}.json").read_text())
        metrics = out / "_metrics" / f"run_id={run_id}"
        return summary, pq.read_table(str(metrics)).to_pylist() if metrics.exists() else []

    n1, rows = night("n1")
    assert n1["processed"] == 6 and {r["status"] for r in rows} == {"ok"}
    write_image(tmp_path / "ink.png", 24, 24, 99)  # a new ink image: ink and the mix re-render, wave does not
    n2, rows = night("n2")
    assert (n2["processed"], n2["skipped"]) == (4, 2)
    assert sorted((r["style"], r["status"]) for r in rows) == [("both", "ok")] * 2 + [("ink", "ok")] * 2
