"""The read stage's side of --split-pixels (no Ray): which inputs it leaves for the poster phase, and the
guards that still refuse them; the option's validation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from jobs.batch.settings import JobSettings
from jobs.batch.stages import POSTER, read_decode


def _png(h: int, w: int, orientation: int = 1) -> bytes:
    img = Image.fromarray(np.zeros((h, w, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="PNG", exif=exif)
    return buf.getvalue()


def _read(tmp_path, files: dict[str, bytes], **kw) -> dict[str, dict]:
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
    settings = JobSettings(input=str(tmp_path), output=str(tmp_path / "out"), **({"styles": {"s": "x.pth"}} | kw))
    names = sorted(files)
    out = read_decode({"uri": np.array([str(tmp_path / n) for n in names]), "rel_path": np.array(names),
                       "idx": np.arange(len(names))}, settings)
    return {n: {k: out[k][i] for k in ("status", "error_type", "width", "height", "image")} for i, n in enumerate(names)}


def test_inputs_above_the_split_are_left_undecoded_with_their_oriented_size(tmp_path):
    rows = _read(tmp_path, {"big.png": _png(200, 300), "turned.png": _png(300, 200, orientation=6),
                            "small.png": _png(100, 100)}, split_pixels=50_000)
    assert rows["big.png"]["status"] == POSTER and rows["big.png"]["image"].size == 0
    assert (rows["big.png"]["width"], rows["big.png"]["height"]) == (300, 200)
    assert rows["turned.png"]["status"] == POSTER  # EXIF 6 turns it: 300 wide, 200 high
    assert (rows["turned.png"]["width"], rows["turned.png"]["height"]) == (300, 200)
    assert rows["small.png"]["status"] == "ok" and rows["small.png"]["image"].size


def test_a_run_with_regions_styles_splits_no_input(tmp_path):
    """Regions render in one actor call; a plain mask (tests/jobs/test_poster_job.py) does not stop a split."""
    rows = _read(tmp_path, {"big.png": _png(200, 300)}, split_pixels=40_000, styles={"s": "x.pth", "t": "y.pth"},
                 regions={"both": ["s", "t"]}, mask_mode="labels")
    assert rows["big.png"]["status"] == "ok" and rows["big.png"]["image"].size


def test_max_pixels_still_refuses_and_max_side_decides_first(tmp_path):
    rows = _read(tmp_path, {"big.png": _png(200, 300)}, split_pixels=40_000, max_pixels=50_000)
    assert rows["big.png"]["status"] == "error" and rows["big.png"]["error_type"] == "too_large"
    rows = _read(tmp_path, {"big.png": _png(200, 300)}, split_pixels=40_000, max_side=200)  # 200 x 133: decoded
    assert rows["big.png"]["status"] == "ok"
    rows = _read(tmp_path, {"big.png": _png(200, 300)})  # off by default
    assert rows["big.png"]["status"] == "ok"


def test_a_max_pixels_above_pillows_own_limit_is_what_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # Pillow would refuse 60,000 pixels (> 2 x 10,000)
    rows = _read(tmp_path, {"big.png": _png(200, 300)}, split_pixels=40_000, max_pixels=100_000)
    assert rows["big.png"]["status"] == POSTER
    rows = _read(tmp_path, {"big.png": _png(200, 300)}, max_pixels=100_000)
    assert rows["big.png"]["status"] == "ok"


def test_split_pixels_is_validated():
    with pytest.raises(ValueError, match="below one tile"):
        JobSettings(styles={"s": "x.pth"}, split_pixels=1000)
    with pytest.raises(ValueError, match="--evaluate"):
        JobSettings(styles={"s": "x.pth"}, split_pixels=100_000, evaluate=True)
    assert JobSettings(styles={"s": "x.pth"}, split_pixels=100_000, tileable=True).tileable  # wrap-padded posters
    assert JobSettings(styles={"s": "x.pth"}, split_pixels=36_864).split_pixels == 36_864


def test_a_tileable_poster_repeats_without_a_seam(tmp_path, ray_local):
    """--tileable with --split-pixels: a periodic texture's poster, planned, decoded and tiled by the
    poster actor in this process (no Ray) and summed as the writer sums it, repeats without a seam
    and is close to the in-actor wrap-around tiling's; the same poster padded by reflection shows one."""
    from media_samples import periodic_texture  # tests/media_samples.py

    from jobs.batch.poster_actor import PosterActor
    from jobs.batch.settings import parse_args
    from jobs.common.planning import ActorPlan
    from jobs.common.run_settings import demo_checkpoint
    from stylize_core.checkpoint import load_style_model
    from stylize_core.poster_plan import assemble
    from stylize_core.stylizer import Stylizer, StylizerConfig
    from stylize_core.tiling import wrap_ratio

    texture = periodic_texture(302, 410, seed=1).round().astype(np.uint8).transpose(1, 2, 0)  # sides not multiples of 4
    Image.fromarray(texture).save(tmp_path / "texture.png")

    def poster(*extra: str) -> tuple:
        settings = parse_args(["--input", str(tmp_path), "--style", f"demo={demo_checkpoint()}", "--no-metrics",
                               "--device", "cpu", "--split-pixels", "36864", "--tile", "192", *extra])
        actor = PosterActor(settings, ActorPlan(1, 1, 0.0, 1.0, 2, "test", 8))
        plan = actor.plan(302, 410, ["demo"])
        meta, *tiles = actor.prepare(str(tmp_path / "texture.png"), plan, ["demo"])
        assert not meta.error, meta.error
        out = assemble(plan, lambda t: actor.tile(meta, tiles[t], "demo", t, plan)[0],
                       lambda rows: np.rint(np.clip(rows, 0, 255)).astype(np.uint8))
        return plan, out

    plan, seamless = poster("--tileable")
    _, plain = poster()
    assert plan.wrap and plan.tiles > 1 and seamless.shape == texture.shape and seamless.std() > 20
    in_actor = Stylizer({"demo": load_style_model(demo_checkpoint())}, None,
                        StylizerConfig(device="cpu", metrics=False, tileable=True)).stylize([texture], "demo")[0].image
    # measured 2026-12-07: 1.20 (the in-actor tiling's 1.08), 9.75 by reflection; 1.5 grey levels from the
    # in-actor output, whose statistics are the whole image's where the poster's come from a thumbnail
    assert wrap_ratio(seamless) <= 1.6 < 3 * 1.6 < wrap_ratio(plain)  # tests/stylize_core/test_tiling.py: SEAMLESS
    assert np.abs(seamless.astype(float) - in_actor).mean() <= 4.0


def test_a_writer_keeps_only_a_few_tile_outputs_started_and_unread():
    """The writer's feed over a plan of 12 or more tiles: tiles start in order, each once, never more than `ahead`
    outputs started and not yet read (the object store's bound), and assemble gets every tile once."""
    from jobs.batch.poster import TileFeed
    from stylize_core.poster_plan import assemble
    from stylize_core.poster import plan_poster

    plan = plan_poster(600, 840, 192)  # 192: the smallest tile side
    assert plan.tiles >= 12
    started, unread, peak = [], set(), [0]

    def submit(t):
        started.append(t)
        unread.add(t)
        peak[0] = max(peak[0], len(unread))
        return f"out{t}", f"info{t}"

    def fetch(t, handle):
        assert handle == f"out{t}"
        unread.discard(t)
        (_, rl), (_, cl) = plan.window(t)
        return np.zeros((rl, cl, 3), np.float32)

    feed = TileFeed(plan.tiles, 4, submit, fetch)
    assemble(plan, feed, lambda rows: rows)
    assert started == list(range(plan.tiles)) and not unread and peak[0] == 4
    assert feed.infos == [f"info{t}" for t in range(plan.tiles)]
    with pytest.raises(ValueError, match="already read"):
        feed(0)


def test_the_next_poster_starts_before_the_previous_ones_rows_are_collected():
    """Two posters in flight: poster k+1 is decoded and its writers started before poster k's rows are
    collected (its join and encode overlap k+1's tiles); rows still come back once each, in order."""
    from jobs.batch.poster import Poster, PosterPhase, PosterStats

    phase = object.__new__(PosterPhase)  # the scheduling alone: no actors
    phase.stats, events, got = PosterStats(), [], []

    def start(p):
        events.append(("start", p.idx))
        return lambda: events.append(("finish", p.idx)) or [{"idx": p.idx}]

    phase._start = start
    phase.run([Poster(i, f"u{i}", f"r{i}", 1, 1) for i in range(3)], got.extend)
    assert events == [("start", 0), ("start", 1), ("finish", 0), ("start", 2), ("finish", 1), ("finish", 2)]
    assert got == [{"idx": 0}, {"idx": 1}, {"idx": 2}] and phase.stats.posters == 3
