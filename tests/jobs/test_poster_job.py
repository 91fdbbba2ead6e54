"""One poster across the actor pool (--split-pixels) through the batch job on a local Ray: the output
and its losses equal the in-actor tiled path's, tiles run on several actors, a killed or hung actor
re-runs only its own unfinished tile, every (input, style) has exactly one metrics row, a corrupt
poster or a wrong-sized mask is an error row, a 16-bit RGBA poster keeps its alpha and its depth, a
masked poster is composited tile by tile."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data

from jobs.batch import driver as stylize
from jobs.batch import poster

pytestmark = pytest.mark.usefixtures("ray_local")

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "stylize_core/assets/demo_mosaic.pth")
# 256 x 320 = 81,920 pixels: above --split-pixels 40,000; tiles of 192 make a 2 x 3 grid
COMMON = ["--style", f"demo={DEMO}", "--no-metrics", "--quiet", "--tile", "192", "--tile-stats", "thumbnail",
          "--format", "png", "--device", "cpu", "--actors", "2", "--contact-sheet", "0"]
# The same, every input measured: a random VGG16 at 128 px, below the posters' 256 x 320, so that the
# metrics' resize runs
MEASURED = [a for a in COMMON if a != "--no-metrics"] + ["--metrics-sample", "1", "--metrics-size", "128", "--vgg-weights", "random:0"]
LOSSES = ("content_loss", "style_loss", "tv_loss", "style_stat_distance")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("poster_in")
    Image.fromarray(data.astronaut()[100:356, 80:400]).save(root / "poster.png")
    Image.fromarray(data.coffee()[40:296, 100:420]).save(root / "poster2.png")  # a second, in flight with the first
    Image.fromarray(data.astronaut()[0:64, 0:64]).save(root / "small.png")  # below the split: the stream's
    whole = (root / "poster.png").read_bytes()
    (root / "broken.png").write_bytes(whole[: len(whole) // 2])  # a good header, half its pixels: a poster
    return root


@pytest.fixture(scope="module")
def measured_reference(photos, tmp_path_factory) -> tuple[np.ndarray, dict]:
    """The poster stylised in one actor call, tiled there with the same tiles and thumbnail
    statistics, and measured: (its output, its metrics row)."""
    src = tmp_path_factory.mktemp("poster_ref_in")
    (src / "poster.png").write_bytes((photos / "poster.png").read_bytes())
    out = tmp_path_factory.mktemp("poster_ref_out")
    summary = stylize.run(stylize.parse_args(["--input", str(src), "--output", str(out), "--run-id", "ref", *MEASURED]))
    assert summary["counts"] == {"ok": 1} and summary["posters"] is None
    return _read(out / "demo" / "poster.png"), _rows(out, "ref")["poster.png"]


@pytest.fixture(scope="module")
def reference(measured_reference) -> np.ndarray:
    return measured_reference[0]


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(np.float64)


def _rows(out: Path, run_id: str) -> dict[str, dict]:
    rows = pq.read_table(str(out / "_metrics" / f"run_id={run_id}")).to_pylist()
    names = [Path(r["rel_path"]).name for r in rows]
    assert len(names) == len(set(names)), names  # every (input, style) exactly once
    return dict(zip(names, rows))


def _deep_rgba() -> tuple[np.ndarray, np.ndarray]:
    """A 16-bit RGB photo with more than 8 bits' worth of levels, and a 16-bit alpha disc."""
    rgb = data.astronaut()[100:356, 80:400].astype(np.uint16) * 257 + (np.arange(320, dtype=np.uint16) % 200)[None, :, None]
    yy, xx = np.mgrid[0:256, 0:320]
    alpha = np.clip((120 - np.hypot(yy - 128, xx - 160)) * 4000, 0, 65535).astype(np.uint16)
    return rgb, alpha


def test_posters_run_as_tiles_on_several_actors_and_equal_the_in_actor_tiling(photos, measured_reference, tmp_path):
    """One run (a manifest): two 8-bit posters (in flight together), a 16-bit RGBA one, a masked one,
    one whose mask has the wrong size, a truncated one and a small input that stays in the stream;
    every input measured."""
    import cv2

    from pixel_samples import png16  # tests/pixel_samples.py

    reference, reference_row = measured_reference
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for p in photos.iterdir():
        (src / p.name).write_bytes(p.read_bytes())
    rgb, alpha = _deep_rgba()
    (src / "deep.png").write_bytes(png16(rgb, alpha))
    (src / "masked.png").write_bytes((photos / "poster.png").read_bytes())
    (src / "badmask.png").write_bytes((photos / "poster2.png").read_bytes())
    yy, xx = np.mgrid[0:256, 0:320]
    disc = np.hypot(yy - 120, xx - 150) < 90  # white: styled; black: the input unchanged
    Image.fromarray(np.where(disc, 255, 0).astype(np.uint8)).save(tmp_path / "disc.png")
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "small_mask.png")
    masks = {"masked.png": tmp_path / "disc.png", "badmask.png": tmp_path / "small_mask.png"}
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("uri,rel_path,mask_uri\n" + "".join(
        f"{p},{p.name},{masks.get(p.name, '')}\n" for p in sorted(src.iterdir())))
    summary = stylize.run(stylize.parse_args(["--input", str(manifest), "--output", str(out), "--run-id", "split",
                                              "--split-pixels", "40000", *MEASURED]))
    rows = _rows(out, "split")
    assert set(rows) == {"poster.png", "poster2.png", "deep.png", "masked.png", "badmask.png", "small.png", "broken.png"}
    for name in ("poster.png", "poster2.png", "deep.png", "masked.png"):
        ok = rows[name]
        assert ok["status"] == "ok" and ok["tiles"] == 6 and (ok["width"], ok["height"]) == (320, 256)
        assert (ok["out_width"], ok["out_height"]) == (320, 256) and ok["output_bytes"] > 0 and ok["pixel_format"]
        assert ok["measured"] is True and all(np.isfinite(ok[k]) and ok[k] > 0 for k in LOSSES), ok
        assert ok["metrics_ms"] > 0
    assert rows["small.png"]["status"] == "ok" and rows["small.png"]["tiles"] == 1 and rows["small.png"]["measured"]
    assert (rows["broken.png"]["status"], rows["broken.png"]["error_type"]) == ("error", "truncated")  # the decoder's reason
    assert (rows["badmask.png"]["status"], rows["badmask.png"]["error_type"]) == ("error", "mask_error")
    assert "100x100" in rows["badmask.png"]["error"] and not (out / "demo" / "badmask.png").exists()
    posters = summary["posters"]
    assert posters["inputs"] == 6 and posters["tiles"] == 24 and posters["actors"] == 2
    assert posters["actors_used"] == 2 and sorted(posters["tiles_by_actor"].values()) == [12, 12]
    got = _read(out / "demo" / "poster.png")
    assert got.shape == reference.shape and reference.std() > 20  # the demo network's output spans the range
    assert np.abs(got - reference).mean() <= 0.05 and np.abs(got - reference).max() <= 2
    # The losses as the in-actor path measures them: content and style on thumbnails at --metrics-size
    # (the writer's band-wise resize, the meter's on the whole image), total variation at full size
    split_row = rows["poster.png"]
    for k in LOSSES:  # measured 2026-12-07: equal to 1e-6 or better
        assert split_row[k] == pytest.approx(reference_row[k], rel=1e-3), (k, split_row[k], reference_row[k])
    # Masked: the styled output inside the disc, the input outside it; its losses are the network's own
    # output's, as the stream's are
    masked = _read(out / "demo" / "masked.png")
    expected = np.where(disc[:, :, None], reference, _read(photos / "poster.png"))
    assert np.abs(masked - expected).mean() <= 0.05 and np.abs(masked - expected).max() <= 2
    assert np.abs(masked - reference)[~disc].mean() > 20  # the outside is not styled
    for k in LOSSES:
        assert rows["masked.png"][k] == pytest.approx(reference_row[k], rel=1e-3), k
    assert rows["masked.png"]["mask_uri"].endswith("disc.png")
    other = _read(out / "demo" / "poster2.png")
    assert other.std() > 20 and np.abs(other - got).mean() > 10  # its own image, not the first's
    assert abs(rows["poster2.png"]["content_loss"] - split_row["content_loss"]) > 0.05 * split_row["content_loss"]
    assert not (out / "demo" / "broken.png").exists()
    assert not [p for p in out.rglob(".tmp*")]
    deep = rows["deep.png"]
    assert "16" in deep["pixel_format"] and deep["alpha"] == "kept", deep
    got16 = cv2.imread(str(out / "demo" / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert got16.dtype == np.uint16 and got16.shape == (256, 320, 4)
    assert np.array_equal(got16[:, :, 3], alpha)  # alpha exactly as it came
    colour = got16[:, :, :3][alpha > 0]
    assert len(np.unique(colour)) > 2 * len(np.unique(colour // 257))  # stylised in float, not through 8 bits
    assert np.abs(colour.astype(np.float64) - rgb[:, :, ::-1][alpha > 0]).mean() / 257 > 10  # and stylised


def crashing_poster_actor(log: str, marker: str, crash_tile: int, hang_tile: int = -1, refuse_tile: int = -1) -> type:
    """PosterActor whose ``crash_tile`` kills its process once (the marker file), as a lost node would,
    whose ``hang_tile`` hangs once (``marker`` + ".hang"), as a stuck GPU kernel would, and whose
    ``refuse_tile`` is refused once as unreachable (``marker`` + ".refused"), as calls to an actor on a
    lost node are until Ray restarts it elsewhere; every tile call logs its start and end (by value to
    the workers: defined inside a function)."""
    import time

    from jobs.batch.poster_actor import PosterActor

    def tile(self, meta, pixels, style, t, plan):
        import ray

        with open(log, "a") as f:
            f.write(f"start {t} {os.getpid()}\n")
        if t == crash_tile and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        if t == refuse_tile and not os.path.exists(marker + ".refused"):
            open(marker + ".refused", "w").close()
            raise ray.exceptions.ActorUnavailableError("connection refused (a test)", None)
        if t == hang_tile and not os.path.exists(marker + ".hang"):
            open(marker + ".hang", "w").close()
            time.sleep(3600)
        out = PosterActor.tile(self, meta, pixels, style, t, plan)
        with open(log, "a") as f:
            f.write(f"done {t} {os.getpid()}\n")
        return out

    return type("CrashingPosterActor", (PosterActor,), {"tile": tile})


def _run_with_a_crashing_tile(photos, tmp_path, monkeypatch, run_id: str, *extra: str, hang_tile: int = -1,
                              refuse_tile: int = -1):
    """The poster through the job with tile 1's actor killed the first time it runs it (and
    ``hang_tile``'s hung, ``refuse_tile``'s refused the first time): (out, summary, the tiles'
    start/done log, the crash's marker)."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "poster.png").write_bytes((photos / "poster.png").read_bytes())
    log, marker = tmp_path / "tiles.log", tmp_path / "crashed"
    monkeypatch.setattr(poster, "POSTER_ACTOR", crashing_poster_actor(str(log), str(marker), 1, hang_tile, refuse_tile))
    out = tmp_path / "out"
    summary = stylize.run(stylize.parse_args(["--input", str(src), "--output", str(out), "--run-id", run_id,
                                              "--split-pixels", "40000", *extra, *COMMON]))
    return out, summary, log, marker


def test_a_killed_or_hung_actor_reruns_only_its_tile(photos, reference, tmp_path, monkeypatch):
    """Tile 1's actor dies mid-tile; tile 4's (the other actor) hangs and gives no answer for
    --stall-timeout, so its writer restarts it; tile 3 is refused once as unreachable, so its writer
    asks again. Each re-runs only the tile it had not answered. The timeout also covers the restart
    and the re-run (torch imported again): 15 s leaves room on a loaded machine, where a second kill
    would spend the actor's last restart and start tile 4 thrice."""
    out, summary, log, marker = _run_with_a_crashing_tile(photos, tmp_path, monkeypatch, "crash", "--stall-timeout",
                                                          "15", hang_tile=4, refuse_tile=3)
    assert marker.exists() and Path(f"{marker}.hang").exists()  # the actor did die, the other did hang
    assert Path(f"{marker}.refused").exists()
    events = [line.split() for line in log.read_text().splitlines()]
    started = collections.Counter(int(t) for kind, t, _ in events if kind == "start")
    done = collections.Counter(int(t) for kind, t, _ in events if kind == "done")
    assert done == {t: 1 for t in range(6)}  # every tile finished once: none that had returned ran again
    assert started == {**{t: 1 for t in range(6)}, 1: 2, 3: 2, 4: 2}  # only the killed, refused and hung tiles twice
    for tile in ("1", "4"):  # the process that started it (first) did nothing more: it ended
        at = next(i for i, (kind, t, _) in enumerate(events) if kind == "start" and t == tile)
        assert all(pid != events[at][2] for _, _, pid in events[at + 1:])
    rows = _rows(out, "crash")
    assert rows["poster.png"]["status"] == "ok" and summary["counts"] == {"ok": 1}
    assert rows["poster.png"]["measured"] is False and rows["poster.png"]["content_loss"] is None  # --no-metrics
    assert np.abs(_read(out / "demo" / "poster.png") - reference).max() <= 2
    assert not [p for p in out.rglob(".tmp*")]


def test_a_poster_whose_actor_cannot_restart_is_an_error_row(photos, tmp_path, monkeypatch):
    out, summary, _, marker = _run_with_a_crashing_tile(photos, tmp_path, monkeypatch, "lost", "--max-actor-crashes", "0")
    row = _rows(out, "lost")["poster.png"]  # exactly one row: the input is not lost
    assert (row["status"], row["error_type"]) == ("error", "stylize_error") and "tile" in row["error"], row
    assert summary["counts"] == {"error": 1} and marker.exists()
    assert not (out / "demo" / "poster.png").exists() and not [p for p in out.rglob(".tmp*")]
