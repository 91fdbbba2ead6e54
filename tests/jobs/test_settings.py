"""One validated settings model for flags and YAML alike: every bad value is one line and exit 2."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs.catalog import night as catalog
from jobs.batch import settings
from jobs.image import settings as stylize_image
from jobs.train import settings as train

REPO = Path(__file__).resolve().parents[2]


def _yaml(tmp_path: Path, **values) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _refused(capsys, argv: list[str], parse=settings.parse_args) -> str:
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err  # one line: no usage dump, no traceback
    return err


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"format": "gif"}, "--format 'gif' (from "),
        ({"max_error_rate": 5}, "--max-error-rate 5 (from "),
        ({"quality": 0}, "--quality 0 (from "),
        ({"batch_size": -1}, "--batch-size -1 (from "),
        ({"actors": "four"}, "--actors 'four' (from "),
        ({"strength": "strong"}, "--strength 'strong' (from "),
        ({"style": {"bad name": "/m.pth"}}, "must match"),
        ({"style": ["mosaic"]}, "expected NAME=URI"),
        ({"run_id": "../escape"}, "--run-id '../escape' (from "),
        ({"device": "tpu"}, "--device 'tpu' (from "),
        ({"metrics_size": 2}, "--metrics-size 2 (from "),
    ],
)
def test_each_invalid_yaml_value_exits_2_naming_the_option(tmp_path, capsys, values, expected):
    err = _refused(capsys, ["--config", _yaml(tmp_path, input="/in", **values)])
    assert err.startswith("python -m jobs.stylize: error: ") and expected in err
    assert "job.yaml" in err


def test_the_same_values_as_flags_are_refused_the_same_way(capsys):
    assert "--format 'gif': Input should be 'jpeg', 'png', 'webp' or 'tiff'" in _refused(capsys, ["--format", "gif"])
    assert "--max-error-rate '5'" in _refused(capsys, ["--max-error-rate", "5"])
    assert "unrecognized arguments: --no-such-flag" in _refused(capsys, ["--no-such-flag"])


def test_unknown_yaml_key_names_the_closest_option(tmp_path, capsys):
    err = _refused(capsys, ["--config", _yaml(tmp_path, max_eror_rate=0.1)])
    assert "unknown option 'max_eror_rate'; did you mean 'max_error_rate'?" in err
    err = _refused(capsys, ["--config", _yaml(tmp_path, zzz=1)])
    assert "unknown option 'zzz'; --help lists the options" in err


def test_config_file_problems_are_one_line(tmp_path, capsys):
    assert "config file not found" in _refused(capsys, ["--config", str(tmp_path / "none.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed")
    assert "is not valid YAML" in _refused(capsys, ["--config", str(bad)])
    bad.write_text("- a\n- b\n")
    assert "must hold a mapping" in _refused(capsys, ["--config", str(bad)])


def test_flags_override_yaml_and_yaml_spellings_map_onto_fields(tmp_path):
    cfg = _yaml(tmp_path, input="/in", style={"a": "/a.pth", "b": "/b.pth"}, quality=70, no_metrics=True,
                max_error_rate=0.2, **{"max-side": 64})
    s = settings.parse_args(["--config", cfg, "--quality", "80", "--style", "c=/c.pth"])
    assert (s.quality, s.max_side, s.max_error_rate, s.metrics) == (80, 64, 0.2, False)
    assert s.styles == {"c": "/c.pth"}  # a repeated flag replaces the file's list, never extends it
    assert settings.parse_args(["--config", cfg]).styles == {"a": "/a.pth", "b": "/b.pth"}


def test_demo_defaults_fill_only_what_was_not_given():
    demo = settings.parse_args([])
    assert demo.demo and demo.max_side == 512 and demo.vgg_weights == "random:0" and demo.max_error_rate == 0.05
    assert demo.vgg == "texture"  # README: the demo's metrics are measured with the texture loss network
    assert set(demo.styles) == {"demo", "demo_slim"} and demo.run_id
    real = settings.parse_args(["--input", "s3://b/in", "--method", "optimize", "--style-image", "s=s3://b/s.jpg"])
    assert not real.demo and real.max_side is None and real.vgg_weights == "imagenet" and real.vgg == "vgg19"
    assert real.style_names == ["s"] and real.max_error_rate == 0.01


def test_video_demo_defaults_fill_only_what_was_not_given():
    """README: ``stylize-video`` with no arguments runs a clip it makes itself into ./out."""
    from jobs.video import settings as video

    demo = video.parse_args([])
    assert demo.demo and demo.input == "" and demo.output == "./out" and demo.max_side == video.DEMO_MAX_SIDE
    assert list(demo.styles) == ["demo"] and demo.vgg == "texture" and demo.vgg_weights == "random:0"
    real = video.parse_args(["--sequence", "/shot010/", "--style", "m=/m.pth"])
    assert not real.demo and real.kind == "sequence" and real.input == "/shot010/" and real.max_side is None
    assert real.vgg == "vgg16" and real.vgg_weights == "imagenet"


def test_a_config_file_can_be_an_s3_uri(s3_client, s3_bucket):
    """README: any config can be a URI (read through the same storage layer as inputs)."""
    s3_client.put_object(Bucket=s3_bucket, Key="conf/night.yaml",
                         Body=yaml.safe_dump({"input": "s3://b/in", "max_side": 300, "style": ["a=/a.pth"]}).encode())
    got = settings.parse_args(["--config", f"s3://{s3_bucket}/conf/night.yaml", "--max-side", "400"])
    assert got.input == "s3://b/in" and got.max_side == 400 and got.styles == {"a": "/a.pth"}  # flags override it


def test_settings_survive_pickling_to_ray_workers():
    s = settings.parse_args(["--input", "/in", "--style", "a=/a.pth", "--no-bf16"])
    assert pickle.loads(pickle.dumps(s)) == s


def test_every_cli_refuses_bad_values_in_one_line(tmp_path, capsys):
    err = _refused(capsys, ["a.png", "-o", "o", "--strength", "1.5"], stylize_image.parse_args)
    assert err.startswith("python -m jobs.stylize_image: error: --strength '1.5'")
    err = _refused(capsys, ["--source", "/c", "--output", "/o", "--style", "a=/a", "--format", "bmp"], catalog.parse_args)
    assert err.startswith("python -m jobs.catalog: error: --format 'bmp'")
    assert "needs source" in _refused(capsys, ["--output", "/o", "--style", "a=/a"], catalog.parse_args)
    err = _refused(capsys, ["--content", "/c", "--style-image", "/s.jpg", "--output", "/o", "--width", "0"],
                   train.parse_args)
    assert err.startswith("python -m jobs.train: error: --width '0'")
    assert "--output" in _refused(capsys, ["--content", "/c", "--style-image", "/s.jpg"], train.parse_args)


def test_bad_config_value_from_the_command_line_exits_2_without_traceback(tmp_path):
    cfg = _yaml(tmp_path, input="/in", format="gif")
    proc = subprocess.run([sys.executable, "-m", "jobs.stylize", "--config", cfg], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"python -m jobs.stylize: error: --format 'gif' (from {cfg}): "
                                                "Input should be 'jpeg', 'png', 'webp' or 'tiff'"]


def test_mix_flags_and_yaml_choose_styles_and_blends(tmp_path, capsys):
    s = settings.parse_args(["--input", "/in", "--style", "warm=/m.pth", "--style", "one=/m.pth",
                             "--mix", "warm=3:0.5,wave:0.5", "--mix", "one=wave"])
    assert s.mixes == {"warm": {3: 0.5, "wave": 0.5}, "one": "wave"}
    cfg = _yaml(tmp_path, input="/in", style={"warm": "/m.pth"}, mix={"warm": {3: 1, "wave": 3}})
    assert settings.parse_args(["--config", cfg]).mixes == {"warm": {3: 1.0, "wave": 3.0}}
    assert "match no --style" in _refused(capsys, ["--input", "/in", "--mix", "nope=1"])
    assert "is not a number" in _refused(capsys, ["--input", "/in", "--style", "w=/m", "--mix", "w=3:heavy"])


def test_backend_choices_match_the_core():
    import typing

    from stylize_core.backends import BACKEND_SPECS

    from jobs.common.run_settings import BackendSpec

    assert set(typing.get_args(BackendSpec)) == set(BACKEND_SPECS)


def test_tile_options_match_the_core():
    from stylize_core.tiling import min_tile

    from jobs.common.run_settings import MIN_TILE_SIDE

    assert MIN_TILE_SIDE == min_tile()
    JobSettings = settings.JobSettings
    s = JobSettings(input="in/", tile=512, max_memory="2GiB", tileable=True)
    assert (s.tile, s.max_memory, s.tileable) == (512, 2 * 2**30, True)
    assert JobSettings(input="in/", max_memory="1.5GB").max_memory == 1_500_000_000
    for bad in ({"tile": 100}, {"max_memory": "lots"}, {"max_memory": -1}, {"tile_stats": "accumulate"}):
        with pytest.raises(ValueError):
            JobSettings(input="in/", **bad)
    import typing

    from stylize_core.tiling import STATS_MODES

    from jobs.common.run_settings import TileStats
    from jobs.common.stylizer_spec import run_stylizer_spec

    assert set(typing.get_args(TileStats)) <= {*STATS_MODES, "auto"}
    assert JobSettings(input="in/").tile_stats == "auto"  # docs/benchmarks_large.md: why
    assert run_stylizer_spec(JobSettings(input="in/", tile_stats="thumbnail"), 4).tile_stats == "thumbnail"


def test_the_demo_folder_has_exactly_the_one_unreadable_file_readme_names():
    """README: scikit-image's multipage_rgb.tif shows up as a ``corrupt`` row, within the demo's 5 %
    error budget; every other file of the folder decodes."""
    from jobs.common.run_settings import DEMO_MAX_ERROR_RATE, sample_images_dir
    from jobs.common.listing import list_images
    from stylize_core.image_io import ImageDecodeError, decode_image

    failed, files = {}, list_images(sample_images_dir())
    for f in files:
        try:
            decode_image(open(f.uri, "rb").read(), max_side=64)
        except ImageDecodeError as exc:
            failed[f.rel_path] = exc.error_type
    assert failed == {"multipage_rgb.tif": "corrupt"} and len(files) >= 20
    assert len(failed) / len(files) <= DEMO_MAX_ERROR_RATE
