"""Masks through the real programs: the local CLI (in process, and a subprocess for the exit status and
its one line) and the batch job on a local Ray with --mask-prefix."""

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

from jobs.batch import driver as stylize
from jobs.batch.settings import JobSettings
from jobs.batch.stages import read_decode
from jobs.common.manifest import iter_manifest
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


def test_cli_with_a_mask_keeps_the_black_half(photos, tmp_path, capsys):
    _left_black().save(tmp_path / "mask.png")
    args = [str(photos / "face.png"), "--device", "cpu", "-q", "--format", "png"]
    capsys.readouterr()
    assert main(parse_args([*args, "-o", str(tmp_path / "masked.png"), "--mask", str(tmp_path / "mask.png"), "--json"])) == 0
    assert json.loads(capsys.readouterr().out)["mask_uri"] == str(tmp_path / "mask.png")
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


def test_cli_masks_a_super_resolution_output_over_the_upscaled_input(photos, tmp_path):
    """x2 super-resolution (the shipped demo) with a mask at the input's size: where it is black the
    output is the input upscaled with Lanczos (Pillow's, computed here), where white the network's."""
    _left_black().save(tmp_path / "mask.png")
    args = [str(photos / "face.png"), "--checkpoint", str(REPO / "stylize_core/assets/enhance_sr2.pth"), "--device",
            "cpu", "-q", "--format", "png"]
    assert main(parse_args([*args, "-o", str(tmp_path / "masked.png"), "--mask", str(tmp_path / "mask.png")])) == 0
    assert main(parse_args([*args, "-o", str(tmp_path / "plain.png")])) == 0
    masked, plain = _rgb(tmp_path / "masked.png"), _rgb(tmp_path / "plain.png")
    with Image.open(photos / "face.png") as img:
        lanczos = np.asarray(img.convert("RGB").resize((2 * W, 2 * H), Image.Resampling.LANCZOS)).astype(int)
    assert masked.shape == plain.shape == (2 * H, 2 * W, 3)
    assert np.abs(plain - lanczos)[:, W + 2:].mean() > 1  # the network's output is not the plain upscale
    assert np.array_equal(masked[:, : W - 2], lanczos[:, : W - 2])  # black: the upscaled input
    assert np.array_equal(masked[:, W + 2:], plain[:, W + 2:])  # white: the network's output


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


@pytest.mark.usefixtures("ray_local")
def test_batch_job_masks_by_prefix_with_error_rows(photos, tmp_path):
    masks = tmp_path / "masks"
    (masks / "sub").mkdir(parents=True)
    _left_black().save(masks / "face.png")  # suit.png has none; hand's is one pixel too wide
    _left_black(H, W + 1).save(masks / "sub" / "hand.png")
    out = tmp_path / "out"
    summary = stylize.run(stylize.parse_args([
        "--input", str(photos), "--output", str(out), "--style", "demo=" + str(REPO / "stylize_core/assets/demo_mosaic.pth"),
        "--no-metrics", "--quiet", "--run-id", "masks", "--format", "png", "--device", "cpu",
        "--mask-prefix", str(masks), "--mask-feather", "0",
    ]))
    rows = {r["rel_path"]: r for r in pq.read_table(str(out / "_metrics" / "run_id=masks")).to_pylist()}
    assert sorted(rows) == ["face.png", "sub/hand.png", "suit.png"] and summary["rows"] == 3  # each input once
    face, suit, hand = rows["face.png"], rows["suit.png"], rows["sub/hand.png"]
    assert face["status"] == "ok" and face["mask_uri"].endswith("masks/face.png")
    assert (suit["status"], suit["error_type"]) == ("error", "mask_error") and "not found" in suit["error"]
    assert suit["mask_uri"].endswith("masks/suit.png")
    assert (hand["status"], hand["error_type"]) == ("error", "mask_error") and "129x96 but the input is 128x96" in hand["error"]
    assert summary["errors_by_type"] == {"mask_error": 2}
    styled, image = _rgb(out / "demo" / "face.png"), _rgb(photos / "face.png")
    assert np.array_equal(styled[:, : W // 2], image[:, : W // 2])  # black: the input, exactly
    assert np.abs(styled[:, W // 2:] - image[:, W // 2:]).mean() > 20  # white: styled
    assert not (out / "demo" / "suit.png").exists() and not (out / "demo" / "sub" / "hand.png").exists()


def test_manifest_mask_uri_and_label_planes_in_the_read_stage(photos, tmp_path):
    labels = np.zeros((H, W), np.uint8)
    labels[:, 40:80], labels[:, 80:] = 1, 2
    Image.fromarray(labels).save(tmp_path / "face_labels.png")
    manifest = tmp_path / "inputs.csv"
    manifest.write_text(f"uri,mask_uri\n{photos / 'face.png'},face_labels.png\n{photos / 'suit.png'},\n")
    entries = [f for page in iter_manifest(str(manifest)) for f in page]
    assert [f.mask_uri for f in entries] == [str(tmp_path / "face_labels.png"), ""]  # relative: the manifest's folder
    demo = str(REPO / "stylize_core/assets/demo_mosaic.pth")
    settings = JobSettings(input=str(manifest), output=str(tmp_path / "out"), styles={"a": demo, "b": demo},
                           mask_mode="labels", mask_feather=4)
    batch = {"uri": np.array([f.uri for f in entries]), "rel_path": np.array([f.rel_path for f in entries]),
             "mask_uri": np.array([f.mask_uri for f in entries])}
    out = read_decode(batch, settings)
    assert list(out["status"]) == ["ok", "ok"] and list(out["mask_uri"]) == [str(tmp_path / "face_labels.png"), ""]
    planes = out["mask"][0]
    assert planes.shape == (2, H, W) and planes.dtype == np.uint16  # one feathered region per style
    assert (planes[0][:, 44:76] == 65535).all() and (planes[0][:, :36] == 0).all() and (planes[0][:, 84:] == 0).all()
    assert (planes[1][:, 84:] == 65535).all() and 0 < planes[1][0, 80] < 65535
    assert out["mask"][1].size == 0
    one_style = JobSettings(input=str(manifest), output=str(tmp_path / "out"), styles={"a": demo}, mask_mode="labels")
    failed = read_decode(batch, one_style)  # label 2 names no style of a one-style run
    assert failed["error_type"][0] == "mask_error" and "values up to 2 but there are 1 style" in failed["error"][0]


def test_the_catalog_takes_the_batch_jobs_mask_options():
    from jobs.catalog.settings import CatalogSettings

    assert {"mask_prefix", "mask_feather", "mask_mode"} <= set(CatalogSettings.model_fields)  # runs the batch job


@pytest.mark.usefixtures("ray_local")
def test_video_job_masks_sequences_frame_by_frame_and_videos_with_a_still_mask(tmp_path):
    """A sequence with a label mask per frame whose borders move (two styles: label k the k-th style),
    written losslessly: where a style's region is not, its frames are the input bit for bit. Videos:
    one still mask for every frame; a missing and a wrong-sized mask are mask_error rows, no output."""
    import cv2
    from stylize_core.video import make_clip, pan_frames
    from stylize_core.video.synthetic import sample_photo

    from jobs.video import driver as video
    from jobs.video.settings import parse_args as video_args

    demo = str(REPO / "stylize_core/assets/demo_mosaic.pth")
    fast = ["--segment-seconds", "0", "--warmup-frames", "0", "--vgg-weights", "random:0", "--no-metrics",
            "--preset", "ultrafast", "--quiet", "--contact-sheet", "0", "--device", "cpu"]
    frames = pan_frames(sample_photo("astronaut"), 5, (64, 48), seed=1)
    (tmp_path / "seq/shot").mkdir(parents=True)
    (tmp_path / "seqmasks/shot").mkdir(parents=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"seq/shot/f_{i:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        labels = np.zeros((48, 64), np.uint8)
        labels[:, 16 + i:40 + i], labels[:, 40 + i:] = 1, 2  # label 0 | 1 | 2, a column further each frame
        Image.fromarray(labels).save(tmp_path / f"seqmasks/shot/f_{i:04d}.png")
    summary = video.run(video_args(["--sequence", str(tmp_path / "seq"), "--output", str(tmp_path / "out"),
                                    "--style", f"a={demo}", "--style", f"b={demo}", "--mask-prefix",
                                    str(tmp_path / "seqmasks"), "--mask-mode", "labels", "--run-id", "s", *fast]))
    assert summary["counts"] == {"ok": 2, "error": 0}
    for i, f in enumerate(frames):
        a, b = (cv2.cvtColor(cv2.imread(str(tmp_path / f"out/{s}/shot/f_{i:04d}.png")), cv2.COLOR_BGR2RGB).astype(int)
                for s in ("a", "b"))
        assert np.array_equal(a[:, :16 + i], f[:, :16 + i]) and np.array_equal(a[:, 40 + i:], f[:, 40 + i:])
        assert np.array_equal(b[:, :40 + i], f[:, :40 + i])
        assert np.abs(a[:, 16 + i:40 + i] - f[:, 16 + i:40 + i]).mean() > 20  # a's region styled
        assert np.abs(b[:, 40 + i:] - f[:, 40 + i:]).mean() > 20
    rows = pq.read_table(summary["metrics_file"]).to_pylist()
    assert {r["mask_uri"] for r in rows} == {str(tmp_path / "seqmasks/shot/f_####.png")}

    (tmp_path / "vid").mkdir()
    (tmp_path / "vidmasks").mkdir()
    for name in ("still", "missing", "wrong"):
        make_clip(str(tmp_path / f"vid/{name}.mp4"), frames + frames[::-1], gop=5, audio_hz=None)
    _left_black(48, 64).save(tmp_path / "vidmasks/still.png")
    _left_black(48, 66).save(tmp_path / "vidmasks/wrong.png")
    summary = video.run(video_args(["--input", str(tmp_path / "vid"), "--output", str(tmp_path / "vout"),
                                    "--style", f"a={demo}", "--mask-prefix", str(tmp_path / "vidmasks"),
                                    "--max-error-rate", "1", "--run-id", "v", *fast]))
    rows = {r["rel_path"]: r for r in pq.read_table(summary["metrics_file"]).to_pylist()}
    assert rows["still.mp4"]["status"] == "ok" and rows["still.mp4"]["mask_uri"].endswith("vidmasks/still.png")
    assert (rows["missing.mp4"]["error_type"], rows["wrong.mp4"]["error_type"]) == ("mask_error", "mask_error")
    assert "not found" in rows["missing.mp4"]["error"]
    assert "the mask is 66x48 but the input is 64x48" in rows["wrong.mp4"]["error"]
    assert sorted(os.listdir(tmp_path / "vout/a")) == ["still.mp4"]
    source, styled = (np.stack([fr for _, fr in _decoded(tmp_path / d / "still.mp4")]).astype(int) for d in ("vid", "vout/a"))
    assert np.abs(styled[:, :, :32] - source[:, :, :32]).mean() < 3  # black: the input (through H.264 once more)
    assert np.abs(styled[:, :, 32:] - source[:, :, 32:]).mean() > 20  # white: styled


def _decoded(path: Path):
    from stylize_core.video import probe_video
    from stylize_core.video.decode import iter_frames, output_size

    info = probe_video(str(path))
    return iter_frames(str(path), info, output_size(info, None))


def test_mask_uri_is_redacted_like_input_uri_in_the_metrics_files(tmp_path):
    from jobs.common.metrics import MetricsWriter, to_table
    from jobs.common.metrics_schema import blank_rows

    signed = "https://bucket.example/m/a.png?X-Amz-Signature=beef&v=1"
    rows = blank_rows(2)
    rows.update(uri=np.array([signed, "s3://b/a.jpg"]), mask_uri=np.array([signed, ""]), status=np.array(["ok", "ok"]))
    writer = MetricsWriter(str(tmp_path), "r")
    writer.add(to_table(rows))
    writer.flush()
    got = pq.read_table(str(tmp_path / "_metrics" / "run_id=r")).to_pylist()
    assert [r["mask_uri"] for r in got] == ["https://bucket.example/m/a.png?X-Amz-Signature=***&v=1", None]
    assert got[0]["input_uri"] == got[0]["mask_uri"]  # one redaction for both
