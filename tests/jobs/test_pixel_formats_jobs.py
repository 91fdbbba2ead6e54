"""Pixel formats through the real programs: the local CLI (in process) and one batch-job run on the
local Ray with several formats and bad inputs, its Parquet metrics read back (docs/formats.md)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageCms
from pixel_samples import (H, LINEAR_NAME, W, disc_alpha, grey16_png, linear_profile, palette_rgba_png, photo,
                           planar_rgb_tiff16, png16, rgb16, rgba_png, save, tiff16)

from jobs.batch import driver as stylize
from jobs.batch.settings import JobSettings
from jobs.batch.stages import encode_write, read_decode
from jobs.image.cli import main, parse_args
from stylize_core.image_formats import PixelFormat

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "stylize_core/assets/demo_mosaic.pth")
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'


def _cv(path: Path) -> np.ndarray:
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pixfmt_in")
    (root / "sprite.png").write_bytes(rgba_png()[0])
    (root / "deep.png").write_bytes(png16(rgb16()))
    (root / "grey16.png").write_bytes(grey16_png()[0])
    (root / "palette.png").write_bytes(palette_rgba_png())
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "PixCam"  # shown turned 90 degrees; the camera's make
    (root / "photo.jpg").write_bytes(save(Image.fromarray(photo()), "JPEG", exif=exif, xmp=XMP))
    (root / "wide.png").write_bytes(save(Image.fromarray(photo()), "PNG", icc_profile=linear_profile()))
    (root / "planar.tif").write_bytes(planar_rgb_tiff16())
    (root / "broken16.png").write_bytes(png16(rgb16())[:-200])  # truncated
    return root


def _run_cli(capsys, *argv: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(parse_args([*argv, "--device", "cpu", "--json"]))
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    return code, lines[0] if lines else {}


def test_cli_rgba_keeps_alpha_16_bit_stays_16_bit_and_jpeg_is_flattened(inputs, tmp_path, capsys):
    _, rgba = rgba_png()
    code, row = _run_cli(capsys, str(inputs / "sprite.png"), "-o", str(tmp_path / "sprite.png"))
    out = np.asarray(Image.open(tmp_path / "sprite.png"))
    assert code == 0 and (row["pixel_format"], row["alpha"]) == ("RGBA", "kept")
    assert out.shape == (H, W, 4) and np.array_equal(out[:, :, 3], rgba[:, :, 3])  # alpha identical
    opaque = rgba[:, :, 3] == 255
    assert np.abs(out[:, :, :3][opaque].astype(int) - rgba[:, :, :3][opaque]).mean() > 20  # the colour is styled

    code, row = _run_cli(capsys, str(inputs / "deep.png"), "-o", str(tmp_path / "deep.png"),
                         "--metrics", "--vgg-weights", "random:0", "--metrics-size", "32")
    deep = _cv(tmp_path / "deep.png")
    assert code == 0 and row["pixel_format"] == "RGB;16" and deep.dtype == np.uint16 and deep.shape == (H, W, 3)
    assert row["content_loss"] > 0 and row["tv_loss"] > 0  # the metrics of a float input
    assert len(np.unique(deep)) > 4 * len(np.unique(deep // 257))  # values between the 8-bit steps
    eight = tmp_path / "deep8.png"
    Image.fromarray(((rgb16().astype(np.uint32) + 128) // 257).astype(np.uint8)).save(eight)
    assert main(parse_args([str(eight), "-o", str(tmp_path / "styled8.png"), "--device", "cpu", "-q"])) == 0
    styled8 = np.asarray(Image.open(tmp_path / "styled8.png")).astype(float)
    assert np.abs(deep[:, :, ::-1] / 257 - styled8).mean() < 3  # the same style as through 8 bits, finer
    assert np.abs(deep[:, :, ::-1] / 257 - rgb16() / 257).mean() > 20
    # AdaIN (the shipped demo model) stylises it in float too
    Image.fromarray(photo()).save(tmp_path / "style.png")
    code, row = _run_cli(capsys, str(inputs / "deep.png"), "-o", str(tmp_path / "deep_adain.png"), "--method", "adain",
                         "--style-image", str(tmp_path / "style.png"))
    adain = _cv(tmp_path / "deep_adain.png")
    assert code == 0 and row["pixel_format"] == "RGB;16" and adain.dtype == np.uint16 and adain.shape == (H, W, 3)
    assert len(np.unique(adain)) > 4 * len(np.unique(adain // 257)) and adain.std() / 257 > 10
    # and Gatys optimisation (from the content, a few steps of a random VGG16)
    code, row = _run_cli(capsys, str(inputs / "deep.png"), "-o", str(tmp_path / "deep_gatys.png"), "--optimize",
                         "--style-image", str(tmp_path / "style.png"), "--steps", "2", "--levels", "1", "--vgg", "vgg16",
                         "--vgg-weights", "random:0")
    gatys = _cv(tmp_path / "deep_gatys.png")
    assert code == 0 and row["method"] == "optimize" and gatys.dtype == np.uint16 and gatys.shape == (H, W, 3)
    assert len(np.unique(gatys)) > 4 * len(np.unique(gatys // 257))

    (tmp_path / "deep.tif").write_bytes(tiff16(rgb16()))
    code, row = _run_cli(capsys, str(tmp_path / "deep.tif"), "-o", str(tmp_path / "styled.tiff"))
    assert code == 0 and row["pixel_format"] == "RGB;16" and np.array_equal(_cv(tmp_path / "styled.tiff"), deep)

    code, row = _run_cli(capsys, str(inputs / "sprite.png"), "-o", str(tmp_path / "flat.jpg"), "--background", "#000000")
    flat = np.asarray(Image.open(tmp_path / "flat.jpg")).astype(int)
    assert code == 0 and row["alpha"] == "flattened" and flat.shape == (H, W, 3)
    assert flat[rgba[:, :, 3] == 0].mean() < 8  # on the black background
    # grey, a palette with alpha and a non-sRGB profile in one call, one --json row each
    capsys.readouterr()
    names = ["grey16.png", "palette.png", "wide.png"]
    assert main(parse_args([*(str(inputs / n) for n in names), "-o", str(tmp_path / "many"), "--format", "png",
                            "--device", "cpu", "--json"])) == 0
    rows = {Path(r["input_uri"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["grey16.png"]["pixel_format"] == "I;16" and Image.open(tmp_path / "many/grey16.png").mode.startswith("I")
    assert rows["palette.png"]["alpha"] == "kept" and Image.open(tmp_path / "many/palette.png").mode == "RGBA"
    assert rows["wide.png"]["color_profile"] == LINEAR_NAME and rows["wide.png"]["alpha"] is None
    assert "sRGB" in ImageCms.getProfileDescription(
        ImageCms.ImageCmsProfile(io.BytesIO(Image.open(tmp_path / "many/wide.png").info["icc_profile"])))

    with pytest.raises(SystemExit) as stopped:
        parse_args([str(inputs / "sprite.png"), "-o", str(tmp_path / "x.jpg"), "--background", "nocolour"])
    assert stopped.value.code == 2 and "--background 'nocolour': 'nocolour' is not a colour" in capsys.readouterr().err


@pytest.mark.usefixtures("ray_local")
def test_batch_job_keeps_each_pixel_format_and_accounts_for_bad_inputs(inputs, tmp_path):
    out = tmp_path / "out"
    summary = stylize.run(stylize.parse_args([
        "--input", str(inputs), "--output", str(out), "--style", f"demo={DEMO}", "--no-metrics", "--quiet",
        "--run-id", "fmt", "--format", "png", "--device", "cpu", "--max-error-rate", "1", "--stages", "split",
    ]))
    rows = {r["rel_path"]: r for r in pq.read_table(str(out / "_metrics" / "run_id=fmt")).to_pylist()}
    assert sorted(rows) == sorted(p.name for p in inputs.iterdir()) and summary["rows"] == len(rows)  # each once
    fmt = {k: (r["status"], r["pixel_format"], r["alpha"]) for k, r in rows.items()}
    assert fmt["sprite.png"] == ("ok", "RGBA", "kept")
    assert fmt["deep.png"] == ("ok", "RGB;16", None)
    assert fmt["grey16.png"] == ("ok", "I;16", None)
    assert fmt["palette.png"][0] == "ok" and fmt["palette.png"][2] == "kept"
    assert fmt["photo.jpg"] == ("ok", "RGB", None) and (rows["photo.jpg"]["width"], rows["photo.jpg"]["height"]) == (H, W)
    assert fmt["wide.png"] == ("ok", "RGB", None) and rows["wide.png"]["color_profile"] == LINEAR_NAME
    assert rows["photo.jpg"]["color_profile"] is None
    assert (rows["broken16.png"]["status"], rows["broken16.png"]["error_type"]) == ("error", "truncated")
    assert fmt["planar.tif"] == ("ok", "RGB;16", None)  # stored plane by plane: read with tifffile, kept 16-bit
    sprite = np.asarray(Image.open(out / "demo" / "sprite.png"))
    assert np.array_equal(sprite[:, :, 3], rgba_png()[1][:, :, 3])
    deep = _cv(out / "demo" / "deep.png")
    assert deep.dtype == np.uint16 and len(np.unique(deep)) > 4 * len(np.unique(deep // 257))
    assert np.array_equal(_cv(out / "demo" / "planar.png"), deep)  # the same samples as deep.png, read right
    grey = Image.open(out / "demo" / "grey16.png")
    assert grey.mode.startswith("I") and np.asarray(grey).std() > 1000
    assert Image.open(out / "demo" / "palette.png").mode == "RGBA"
    upright = Image.open(out / "demo" / "photo.png")  # EXIF and XMP carried, orientation reset
    assert upright.size == (H, W) and upright.getexif()[0x010F] == "PixCam" and upright.getexif()[0x0112] == 1
    assert b'tiff:Orientation="1"' in upright.info["xmp"]
    assert "sRGB" in ImageCms.getProfileDescription(
        ImageCms.ImageCmsProfile(io.BytesIO(Image.open(out / "demo" / "wide.png").info["icc_profile"])))


def test_the_catalog_takes_the_same_format_options():
    from jobs.catalog.settings import CatalogSettings  # it runs the batch job's stages

    assert {"format", "background"} <= set(CatalogSettings.model_fields)
    assert CatalogSettings.model_fields["format"].annotation == JobSettings.model_fields["format"].annotation


def test_batch_rows_stay_compact_and_jpeg_rows_say_flattened(inputs, tmp_path):
    settings = JobSettings(input=str(inputs), output=str(tmp_path / "out"), styles={"demo": DEMO}, format="jpeg")
    (tmp_path / "plain.jpg").write_bytes(save(Image.fromarray(photo()), "JPEG"))  # no EXIF, XMP or profile
    uris = [str(tmp_path / "plain.jpg"), str(inputs / "sprite.png")]
    read = read_decode({"uri": np.array(uris), "rel_path": np.array(["plain.jpg", "sprite.png"])}, settings)
    assert list(read["pixfmt"]) == [b"", read["pixfmt"][1]] and len(read["pixfmt"][1]) > H * W  # plain rows: empty
    assert PixelFormat.from_bytes(read["pixfmt"][1]).alpha is not None
    batch = {**read, "style": np.array(["demo", "demo"]), "out_image": read["image"]}
    rows = encode_write(batch, settings)
    assert list(rows["alpha"]) == ["", "flattened"] and "pixfmt" not in rows and list(rows["status"]) == ["ok", "ok"]
    flat = np.asarray(Image.open(io.BytesIO((tmp_path / "out" / "demo" / "sprite.jpg").read_bytes())))
    assert flat.shape == (H, W, 3) and flat[disc_alpha() == 0].min() > 230  # on the default white
