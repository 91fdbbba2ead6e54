"""The batch job end to end: real local Ray, a real S3 protocol server (moto), Parquet read back."""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from crash_hooks import crash_once, poison  # tests/jobs/crash_hooks.py
from PIL import Image

from jobs.batch import driver as stylize
from jobs.common.storage import StorageOptions, get_filesystem
from stylize_core.checkpoint import save_style_model
from stylize_core.image_io import decode_image
from stylize_core.transformer_net import TransformerNet

pytestmark = pytest.mark.usefixtures("ray_local")


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, "PNG")
    return buf.getvalue()


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A real 1x1 PNG whose header claims width x height pixels (CRC fixed up)."""
    data = bytearray(_png(np.zeros((1, 1, 3), np.uint8)))
    ihdr = 8 + 4  # signature, chunk length
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 4 + 13]))
    data[ihdr + 4 + 13 : ihdr + 4 + 17] = struct.pack(">I", crc)
    return bytes(data)


def good_images(rng: np.random.Generator) -> dict[str, tuple[bytes, tuple[int, int]]]:
    """rel_path -> (bytes, (height, width) after decoding)."""
    rgb = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (33, 47, 4), dtype=np.uint8)
    grey16 = Image.fromarray(rng.integers(0, 65536, (30, 30), dtype=np.uint16))
    palette = Image.fromarray(rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)).convert("P")
    cmyk = Image.fromarray(rgb).convert("CMYK")
    rotated = Image.fromarray(rng.integers(0, 256, (20, 44, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW on display
    return {
        "photos/a.png": (_png(rgb), (40, 56)),
        "photos/b.JPG": (_encoded(Image.fromarray(rgb), "JPEG", quality=90), (40, 56)),
        "photos/deep/c.png": (_png(rgba), (33, 47)),
        "grey16.png": (_encoded(grey16, "PNG"), (30, 30)),
        "palette.gif": (_encoded(palette, "GIF"), (24, 36)),
        "cmyk.jpg": (_encoded(cmyk, "JPEG"), (40, 56)),
        "exif.jpg": (_encoded(rotated, "JPEG", exif=exif), (44, 20)),
        "tiny.webp": (_encoded(Image.fromarray(rng.integers(0, 256, (5, 3, 3), dtype=np.uint8)), "WEBP", lossless=True), (5, 3)),
    }


def broken_images() -> dict[str, tuple[bytes, str]]:
    """rel_path -> (bytes, expected error_type)."""
    jpeg = _encoded(Image.fromarray(np.full((64, 64, 3), 120, np.uint8)), "JPEG")
    return {
        "broken/empty.jpg": (b"", "empty"),
        "broken/truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "broken/text.jpg": (b"this is not an image, just text\n" * 4, "unidentified"),
        "broken/bomb.png": (_bomb_png(), "too_large"),
    }


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for seed, name in enumerate(["mosaic", "ink"]):
        torch.manual_seed(seed)
        style = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
        path = str(root / f"{name}.pth")
        save_style_model(TransformerNet(), path, style_image=style, style=name)
        out[name] = path
    return out


def _put_all(fs, root: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        fs.pipe_file(f"{root}/{rel}", data)


def _metrics(fs, path: str):
    return pq.read_table(path, filesystem=fs).to_pylist()


def test_s3_end_to_end(s3_bucket, checkpoints, capsys):
    fs, _ = get_filesystem(f"s3://{s3_bucket}", StorageOptions())
    rng = np.random.default_rng(0)
    good, broken = good_images(rng), broken_images()
    _put_all(fs, f"{s3_bucket}/in", {k: v[0] for k, v in good.items()} | {k: v[0] for k, v in broken.items()})
    fs.pipe_file(f"{s3_bucket}/in/notes.txt", b"not listed: not an image extension")
    fs.pipe_file(f"{s3_bucket}/models/ink.pth", open(checkpoints["ink"], "rb").read())

    code = stylize.cli([
        "--input", f"s3://{s3_bucket}/in", "--output", f"s3://{s3_bucket}/out",
        "--style", f"mosaic={checkpoints['mosaic']}", "--style", f"ink=s3://{s3_bucket}/models/ink.pth",
        "--vgg-weights", "random:0", "--run-id", "e2e", "--format", "png", "--batch-size", "4",
        "--max-pixels", "1000000", "--max-error-rate", "0.5", "--quiet", "--metrics-sample", "1",
        "--stages", "split",  # decode/encode tasks beside the actors; the local tests run CPU's default, fused
    ])
    assert code == 0

    rows = _metrics(fs, f"{s3_bucket}/out/_metrics/run_id=e2e")
    n_inputs = len(good) + len(broken)
    assert len(rows) == n_inputs * 2
    assert {(r["input_uri"], r["style"]) for r in rows} == {
        (f"s3://{s3_bucket}/in/{rel}", style) for rel in list(good) + list(broken) for style in ("mosaic", "ink")
    }
    for r in rows:
        rel = r["rel_path"]
        assert r["loss_model"] == "vgg16/random:0" and r["device"] == "cpu"
        assert len(r["model_sha256"]) == 64
        if rel in good:
            h, w = good[rel][1]
            assert r["status"] == "ok", r
            assert (r["height"], r["width"], r["out_height"], r["out_width"]) == (h, w, h, w)
            assert r["input_bytes"] == len(good[rel][0])
            for key in ("content_loss", "style_loss", "tv_loss", "stylize_ms", "decode_ms", "encode_ms"):
                assert r[key] is not None and np.isfinite(r[key]) and r[key] >= 0, (key, r)
            stem = rel.rsplit(".", 1)[0]
            assert r["output_uri"] == f"s3://{s3_bucket}/out/{r['style']}/{stem}.png"
            out = decode_image(fs.cat_file(r["output_uri"]))
            assert out.shape == (h, w, 3)
            assert r["error"] is None and r["error_type"] is None
        else:
            assert r["status"] == "error"
            assert r["error_type"] == broken[rel][1], r
            assert r["error"] and r["output_uri"] is None and r["content_loss"] is None
    # nothing else was written under the styles' prefixes
    written = [p for p in fs.find(f"{s3_bucket}/out") if "/_" not in p]
    assert len(written) == len(good) * 2

    summary = json.loads(fs.cat_file(f"{s3_bucket}/out/_runs/e2e.json"))
    assert summary["counts"] == {"ok": len(good) * 2, "error": len(broken) * 2}
    assert summary["errors_by_type"] == {"empty": 2, "truncated": 2, "unidentified": 2, "too_large": 2}
    assert summary["rows"] == n_inputs * 2 and summary["passed"] is True
    sheet = decode_image(fs.cat_file(summary["contact_sheet"]))
    assert sheet.shape[1] == 3 * 192  # input + two styles
    # the dummy credentials never leak into anything written or printed
    secret = "testing-secret"
    printed = capsys.readouterr()  # read once: a second read returns only what came after the first
    dumped = json.dumps(summary) + printed.out + printed.err
    assert secret not in dumped
    assert all(secret not in json.dumps(r, default=str) for r in rows)


@pytest.fixture
def local_inputs(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "in"
    for rel, (data, _) in good_images(rng).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "broken").mkdir()
    (root / "broken" / "text.jpg").write_bytes(b"nope")
    return root


def _read_local_metrics(out, run_id):
    return pq.read_table(str(out / "_metrics" / f"run_id={run_id}")).to_pylist()


def test_local_rerun_skip_existing_and_error_budget(local_inputs, tmp_path, checkpoints):
    out = tmp_path / "out"
    base = ["--input", str(local_inputs), "--output", str(out), "--style", f"mosaic={checkpoints['mosaic']}",
            "--vgg-weights", "random:0", "--no-metrics", "--quiet"]
    # one broken file out of nine is above the default 1% budget: outputs and metrics are still written
    assert stylize.cli(base + ["--run-id", "r1"]) == 1
    rows = _read_local_metrics(out, "r1")
    assert len(rows) == 9 and sum(r["status"] == "error" for r in rows) == 1
    assert all(r["content_loss"] is None for r in rows)  # --no-metrics: no loss network pass
    outputs = sorted(p.relative_to(out).as_posix() for p in (out / "mosaic").rglob("*") if p.is_file())
    assert len(outputs) == 8 and "mosaic/photos/deep/c.jpg" in outputs

    # rerunning the same run id replaces its rows instead of adding to them
    assert stylize.cli(base + ["--run-id", "r1", "--max-error-rate", "0.2"]) == 0
    assert len(_read_local_metrics(out, "r1")) == 9
    assert len(list((out / "_metrics" / "run_id=r1").iterdir())) == 1
    mtimes = {p: (out / p).stat().st_mtime_ns for p in outputs}

    # a write killed in an earlier run (its actor died mid-write) left a temp file: the next run removes
    # it; one newer than that run's start (another run's writer, still going) stays
    killed = out / "mosaic" / "photos" / ".tmp-killedwrite"
    killed.write_bytes(b"half a jpeg")
    os.utime(killed, (time.time() - 60, time.time() - 60))
    live = out / "mosaic" / ".tmp-livewriter"
    live.write_bytes(b"being written")
    os.utime(live, (time.time() + 3600, time.time() + 3600))
    # --skip-existing: nothing is re-rendered; the broken input is still reported
    assert stylize.cli(base + ["--run-id", "r2", "--skip-existing", "--max-error-rate", "0.2"]) == 0
    assert not killed.exists() and live.exists()
    assert json.loads((out / "_runs" / "r2.json").read_text())["temp_files_removed"] == 1
    live.unlink()
    rows = _read_local_metrics(out, "r2")
    assert sorted(r["status"] for r in rows).count("skipped") == 8
    assert all(r["output_uri"] for r in rows if r["status"] == "skipped")
    assert {p: (out / p).stat().st_mtime_ns for p in outputs} == mtimes  # not rewritten
    # all runs read back at once, the run id coming from the hive partition in the path
    every = pq.read_table(str(out / "_metrics")).to_pylist()
    assert sorted({r["run_id"] for r in every}) == ["r1", "r2"] and len(every) == 18
    assert not list(out.rglob(".tmp-*"))  # atomic writes leave no temp files behind


def test_manifest_path_confinement(tmp_path, checkpoints):
    img = tmp_path / "img.png"
    img.write_bytes(_png(np.zeros((16, 16, 3), np.uint8)))
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "uri,rel_path\n"
        f"{img},ok/one.png\n"
        f"{img},../escape.png\n"
        f"{img},/abs/path.png\n"
        f"{tmp_path}/missing.png,missing.png\n"
    )
    out = tmp_path / "out"
    code = stylize.cli(["--input", str(manifest), "--output", str(out), "--style", f"s={checkpoints['mosaic']}",
                        "--vgg-weights", "random:0", "--no-metrics", "--quiet", "--run-id", "m", "--max-error-rate", "1"])
    assert code == 0
    rows = {r["rel_path"]: r for r in _read_local_metrics(out, "m")}
    assert rows["ok/one.png"]["status"] == "ok"
    assert rows["../escape.png"]["error_type"] == "unsafe_path"
    assert rows["/abs/path.png"]["error_type"] == "unsafe_path"
    assert rows["missing.png"]["error_type"] == "not_found"
    assert not (tmp_path / "escape.jpg").exists() and not (out / "escape.jpg").exists()
    files = [p for p in tmp_path.rglob("*.jpg")]
    assert [p.relative_to(out).as_posix() for p in files] == ["s/ok/one.jpg"]


def test_optimize_method(tmp_path, checkpoints):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(3)
    (src / "x.png").write_bytes(_png(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)))
    style = tmp_path / "style.png"
    style.write_bytes(_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    out = tmp_path / "out"
    code = stylize.cli(["--input", str(src), "--output", str(out), "--method", "optimize", "--style-image", f"st={style}",
                        "--optimize-steps", "3", "--optimize-levels", "2", "--vgg-weights", "random:0", "--quiet",
                        "--run-id", "o", "--format", "png"])
    assert code == 0
    (row,) = _read_local_metrics(out, "o")
    assert row["status"] == "ok" and row["style"] == "st" and row["loss_model"] == "vgg19/random:0"
    assert decode_image((out / "st" / "x.png").read_bytes()).shape == (24, 20, 3)


@pytest.mark.parametrize("stages", ["split", "fused"])
def test_actor_crash_is_retried_without_losing_or_duplicating_rows(local_inputs, tmp_path, checkpoints, stages,
                                                                   monkeypatch):
    out = tmp_path / "out"
    source = str(local_inputs)
    if stages == "fused":  # the other source the job streams: a user's manifest, read in record batches
        files = sorted(p for p in local_inputs.rglob("*") if p.is_file())
        source = str(tmp_path / "inputs.parquet")
        pq.write_table(pa.table({"uri": [str(p) for p in files]}), source, row_group_size=4)
    settings = stylize.parse_args([
        "--input", source, "--output", str(out), "--style", f"mosaic={checkpoints['mosaic']}",
        "--vgg-weights", "random:0", "--no-metrics", "--quiet", "--run-id", "crash", "--batch-size", "2",
        "--max-error-rate", "0.2", "--stages", stages,
    ])
    crash_once(monkeypatch, str(tmp_path / "crashed"))
    summary = stylize.run(settings)
    assert (tmp_path / "crashed").exists()  # an actor really died mid-run
    assert summary["stages"] == stages
    rows = _read_local_metrics(out, "crash")
    assert len(rows) == 9 and len({r["input_uri"] for r in rows}) == 9
    assert summary["counts"] == {"ok": 8, "error": 1} and summary["inputs"] == 9
    assert not (out / "_manifests").exists() or not any((out / "_manifests").iterdir())  # staging removed


def test_split_and_fused_stages_write_the_same_outputs_and_rows(local_inputs, tmp_path, checkpoints):
    """Decoding/encoding in tasks beside the actors or inside them is a scheduling choice only. Both
    runs measure a sample of the inputs (--metrics-sample 0.5), the same inputs for every style."""
    volatile = {"decode_ms", "stylize_ms", "encode_ms", "metrics_ms", "output_uri", "run_id"}
    results = {}
    for stages in ("split", "fused"):
        out = tmp_path / stages
        code = stylize.cli([
            "--input", str(local_inputs), "--output", str(out), "--style", f"mosaic={checkpoints['mosaic']}",
            "--style", f"ink={checkpoints['ink']}", "--vgg-weights", "random:0", "--quiet", "--run-id", stages,
            "--format", "png", "--max-error-rate", "0.2", "--stages", stages, "--metrics-sample", "0.5",
        ])
        assert code == 0
        summary = json.loads((out / "_runs" / f"{stages}.json").read_text())
        assert summary["stages"] == stages
        assert summary["images_per_forward_mean"] >= 1 and summary["images_per_forward_hist"]
        rows = sorted(_read_local_metrics(out, stages), key=lambda r: (r["input_uri"], r["style"]))
        _check_sample(rows)
        files = {p.relative_to(out).as_posix(): p.read_bytes() for d in ("mosaic", "ink") for p in (out / d).rglob("*")
                 if p.is_file()}
        results[stages] = ([{k: v for k, v in r.items() if k not in volatile} for r in rows], files)
    (rows_split, files_split), (rows_fused, files_fused) = results["split"], results["fused"]
    assert len(rows_split) == 18 and sum(r["status"] == "ok" for r in rows_split) == 16
    assert files_split.keys() == files_fused.keys() and len(files_split) == 16
    for key, data in files_split.items():  # same pixels, not just the same names
        assert np.array_equal(decode_image(data), decode_image(files_fused[key])), key
    for a, b in zip(rows_split, rows_fused, strict=True):
        for k in a:
            if isinstance(a[k], float):
                assert b[k] == pytest.approx(a[k], rel=1e-4), (k, a, b)
            else:
                assert a[k] == b[k], (k, a, b)


def _check_sample(rows: list[dict]) -> None:
    """--metrics-sample 0.5 over 8 good inputs x 2 styles: the sampled inputs measured for every style."""
    from stylize_core.sampling import sampled

    rows = [r for r in rows if r["status"] == "ok"]
    assert len(rows) == 16
    for r in rows:
        assert r["measured"] == sampled(r["input_uri"], 0.5)
        assert (r["content_loss"] is not None) == r["measured"] and (r["metrics_ms"] is not None) == r["measured"]
        assert r["tv_loss"] is None or r["measured"]
        assert r["forward_images"] >= 1 and r["backend"].startswith("torch-eager ") and r["backend"].endswith(" fp32 cpu")
        assert r["arch"] == "width=1.0,blocks=5,depthwise=False,num_styles=1"
    by_input = {}
    for r in rows:
        by_input.setdefault(r["input_uri"], set()).add(r["measured"])
    assert all(len(v) == 1 for v in by_input.values())  # every style measured the same inputs
    # Which inputs are sampled depends on their URIs, here under a random temporary path: all 8 measured,
    # or none, happens (CI saw it once), so the share is checked on fixed URIs in tests/stylize_core/test_sampling.py.


def test_actor_that_cannot_load_its_weights_stops_the_run_with_exit_2(local_inputs, tmp_path, checkpoints, capsys):
    """The actors' constructor runs on the cluster, where the weights must be staged: its message, one
    line, exit 2, no metrics or summary written as if the run had happened."""
    out = tmp_path / "out"
    missing = tmp_path / "weights" / "vgg16-missing.pth"
    code = stylize.cli(["--input", str(local_inputs), "--output", str(out), "--style", f"mosaic={checkpoints['mosaic']}",
                        "--vgg-weights", str(missing), "--quiet", "--run-id", "noweights"])
    assert code == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[stylize] error:")]
    assert str(missing) in line and "Traceback" not in line
    assert not (out / "_runs").exists() and not list((out / "_metrics").rglob("*.parquet"))


def _attempt_keys() -> set[bytes]:
    from ray.experimental.internal_kv import _internal_kv_list

    from jobs.common.attempts import ATTEMPTS_NAMESPACE

    return set(_internal_kv_list(b"", namespace=ATTEMPTS_NAMESPACE))


def test_an_input_that_keeps_killing_actors_ends_as_its_own_error_row(tmp_path, checkpoints, monkeypatch):
    """A sticky CUDA error makes the actor exit so Ray replaces it and retries the batch; after
    --max-actor-crashes starts the batch runs image by image, and the culprit alone becomes an error."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(3)
    for n in range(4):
        arr = rng.integers(10, 250, (16, 20, 3), dtype=np.uint8)
        if n == 2:
            arr[0, 0] = (1, 2, 3)
        (inputs / f"p{n}.png").write_bytes(_png(arr))
    poison(monkeypatch, (1, 2, 3))
    out = tmp_path / "out"
    before = _attempt_keys()
    code = stylize.cli(["--input", str(inputs), "--output", str(out), "--style", f"mosaic={checkpoints['mosaic']}",
                        "--vgg-weights", "random:0", "--no-metrics", "--quiet", "--run-id", "poison",
                        "--batch-size", "4", "--max-actor-crashes", "1", "--max-error-rate", "0.5"])
    assert code == 0
    rows = {r["rel_path"]: r for r in _read_local_metrics(out, "poison")}
    assert len(rows) == 4
    assert {k: r["status"] for k, r in rows.items()} == {"p0.png": "ok", "p1.png": "ok", "p2.png": "error",
                                                         "p3.png": "ok"}
    assert rows["p2.png"]["error_type"] == "stylize_error" and "killed the stylize actor" in rows["p2.png"]["error"]
    assert _attempt_keys() == before  # the run's counts went with it (a killed driver's elsewhere may stay)
