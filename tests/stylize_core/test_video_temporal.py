"""Optical flow, blending, scene cuts, warping error, segment planning and the seam rule.
A deterministic stand-in stylizer (its texture changes with every frame's noise, as a style
network's does) keeps these fast; one test uses the real Stylizer and the demo checkpoint."""

from __future__ import annotations

import hashlib
from fractions import Fraction

import numpy as np
import pytest

from stylize_core.video import (DisFlow, SceneCutDetector, TemporalBlender, WarpErrorMeter, consistency_mask,
                                pan_frames, plan_segments, stylize_clip, warp)
from stylize_core.video.flow import to_gray
from stylize_core.video.synthetic import sample_photo


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    return pan_frames(sample_photo("astronaut"), 40, (96, 64), speed=(1.7, 0.6), noise=6.0, seed=3)


def flicker_stylize(frames: list[np.ndarray]) -> list[np.ndarray]:
    """Inverted colours plus a texture drawn from the frame's own bytes: the same frame always gives
    the same output, and consecutive frames (different sensor noise) get different textures."""
    out = []
    for f in frames:
        rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(f.tobytes(), digest_size=8).digest(), "little"))
        tex = rng.normal(0, 20, f.shape)
        out.append(np.clip(255.0 - f + tex, 0, 255).astype(np.uint8))
    return out


def _run(frames, temporal="flow", warmup=0, **kw):
    outs = []
    stats = stylize_clip(list(enumerate(frames)), {"s": flicker_stylize}, {"s": lambda k, o: outs.append(o)},
                         warmup=warmup, temporal=temporal, **kw)["s"]
    return stats, outs


def test_dis_flow_recovers_a_shift_and_the_mask_flags_what_left_the_frame():
    rng = np.random.default_rng(0)
    base = (rng.random((64, 96)) * 255).astype(np.uint8)
    import cv2

    base = cv2.GaussianBlur(base, (5, 5), 1.5)
    moved = np.roll(base, 3, axis=1)  # content moves 3 px right
    flow = DisFlow(max_side=0)
    back, fwd = flow.pair(base, moved)  # F_{t->t-1}, F_{t-1->t}
    inner = (slice(8, -8), slice(8, -8))
    assert np.median(fwd[inner][..., 0]) == pytest.approx(3, abs=0.3)
    assert np.median(back[inner][..., 0]) == pytest.approx(-3, abs=0.3)
    mask = consistency_mask(back, fwd)
    assert mask[inner].mean() > 0.9
    assert mask[:, :2].mean() < 0.5  # the left edge came from outside the previous frame
    warped = warp(base.astype(np.float32), back)  # frame t-1 brought onto frame t
    assert np.median(np.abs(warped[inner] - moved[inner].astype(np.float32))) < 1.0


def test_flow_blending_lowers_warping_error_and_keeps_the_frame_count(clip):
    none, out_none = _run(clip, "none")
    flow, out_flow = _run(clip, "flow")
    assert none.frames == flow.frames == len(out_flow) == len(clip)
    assert none.ewarp_out == pytest.approx(none.ewarp_per_frame)  # nothing blended
    assert flow.ewarp_per_frame == pytest.approx(none.ewarp_per_frame, rel=1e-6)
    assert flow.ewarp_out < 0.5 * flow.ewarp_per_frame


def test_a_mask_is_composited_after_the_blend_and_leaves_state_and_measures_unmasked(clip):
    """Masked frames: the input where the weight is 0, the blended output where it is 1, a blend in
    between; the temporal state, E_warp and the seam frames are those of the run without a mask."""
    from stylize_core.masks import composite

    frames = clip[:12]
    plain, outs = _run(frames, warmup=2)
    weights = {}  # frame key -> its weights: the mask's edge moves a column a frame, as a matte would
    for k in range(len(frames)):
        w = np.zeros(frames[0].shape[:2], np.float32)
        w[:, 30 + k:] = 1.0
        w[:, 20 + k:30 + k] = 0.5
        weights[k] = w
    written, seen = [], []

    def masked(key, rgb, out):
        seen.append(key)
        return composite(rgb, out, weights[key])

    stats = stylize_clip(list(enumerate(frames)), {"s": flicker_stylize}, {"s": lambda k, o: written.append(o)},
                         warmup=2, composite={"s": masked})["s"]
    assert seen == list(range(2, 12))  # kept frames only, in order
    spread = []
    for k, (rgb, out, got) in enumerate(zip(frames[2:], outs, written), start=2):
        assert np.array_equal(got[:, :20 + k], rgb[:, :20 + k])  # black: the input, bit for bit
        assert np.array_equal(got[:, 30 + k:], out[:, 30 + k:])  # white: the blended output unmasked
        grey = 25 + k  # weight 0.5: halfway
        half = np.floor((rgb[:, grey].astype(np.float32) + out[:, grey]) / 2 + 0.5)
        assert np.abs(got[:, grey].astype(np.float32) - half).max() <= 1
        spread.append(np.abs(out.astype(np.float32) - rgb).mean())
    assert min(spread) > 40  # the stand-in styles far from its input: the checks above can fail
    assert stats.ewarp_out == plain.ewarp_out and stats.ewarp_per_frame == plain.ewarp_per_frame
    assert np.array_equal(stats.first_out, plain.first_out) and np.array_equal(stats.last_out, plain.last_out)


def test_scene_cut_is_detected_reported_and_resets_the_state():
    a = pan_frames(sample_photo("astronaut"), 10, (96, 64), noise=4.0, seed=1)
    b = pan_frames(sample_photo("coffee"), 10, (96, 64), noise=4.0, seed=2)
    stats, outs = _run(a + b)
    assert stats.cuts == 1
    first_after = flicker_stylize([b[0]])[0]
    np.testing.assert_array_equal(outs[10], first_after)  # no trace of the previous shot
    calm, _ = _run(a)
    assert calm.cuts == 0


def test_segments_start_on_keyframes_with_warmup():
    pts = list(range(0, 4800, 100))  # 48 frames at 1/2400 s ticks, 24 fps
    keys = pts[::6]
    plans = plan_segments(pts, keys, Fraction(1, 2400), 0.5, 4)
    assert [p.start for p in plans] == [0, 12, 24, 36]
    assert [p.warm_start for p in plans] == [0, 8, 20, 32]
    assert sum(p.frames for p in plans) == 48 and plans[-1].end == 48
    assert all(pts[p.start] in keys for p in plans)
    assert len(plan_segments(pts, keys, Fraction(1, 2400), 10.0, 4)) == 1
    assert len(plan_segments(pts, keys[:1], Fraction(1, 2400), 0.1, 4)) == 1  # one keyframe: one segment


SEG_LEN = 12  # frames per segment in the seam tests


@pytest.fixture(scope="module")
def long_clip() -> list[np.ndarray]:
    """Long enough that four segments' warm-ups (the job's default, 24 frames) start after frame 0."""
    return pan_frames(sample_photo("astronaut"), 84, (96, 64), speed=(1.7, 0.6), noise=6.0, seed=3)


def _segments(frames, warmup: int, cold: bool = False) -> list[tuple[int, dict[int, np.ndarray]]]:
    """``(warm-up's first frame, {frame index: output})`` of each SEG_LEN segment whose ``warmup``-frame
    warm-up starts after frame 0 (one starting at frame 0 is the uncut run by construction, so its seam
    would equal the uncut pair whatever the warm-up did); ``cold``: the same segments without warm-up."""
    segs = []
    for start in range(0, len(frames), SEG_LEN):
        if start - warmup <= 0:
            continue
        ws = start if cold else start - warmup
        _, outs = _run(frames[ws : start + SEG_LEN], warmup=start - ws)
        segs.append((ws, dict(zip(range(start, start + len(outs)), outs))))
    return segs


def test_seams_after_a_warm_up_are_as_stable_as_the_same_pairs_uncut(long_clip):
    from jobs.video.settings import VideoSettings

    warmup = VideoSettings.model_fields["warmup_frames"].default
    _, uncut = _run(long_clip)  # flicker_stylize: a texture drawn anew for every frame, as a network's flickers
    segs = _segments(long_clip, warmup)
    assert [ws for ws, _ in segs] == [12, 24, 36, 48]  # every warm-up starts after frame 0
    meter = WarpErrorMeter()

    def ewarp(a: int, b: int, out_a: np.ndarray, out_b: np.ndarray) -> float:
        return meter.pair(long_clip[a], long_clip[b], {"o": (out_a, out_b)})["o"]

    seams, same, inside = [], [], []
    for (_, prev), (_, nxt) in zip(segs, segs[1:]):
        a, b = max(prev), min(nxt)
        assert not np.array_equal(nxt[b], uncut[b])  # the cut run's state really started elsewhere
        seams.append(ewarp(a, b, prev[a], nxt[b]))
        same.append(ewarp(a, b, uncut[a], uncut[b]))
    for _, seg in segs:
        keys = sorted(seg)
        assert len(keys) == SEG_LEN
        inside += [ewarp(a, b, seg[a], seg[b]) for a, b in zip(keys, keys[1:])]
    assert len(seams) == 3
    assert np.mean(seams) / np.mean(same) == pytest.approx(1.0, abs=0.02)  # 8 warm-up frames: 1.04, 4: 1.30
    assert np.mean(seams) <= 1.2 * np.mean(inside)
    cold = _segments(long_clip, warmup, cold=True)
    assert [min(seg) for _, seg in cold] == [min(seg) for _, seg in segs]
    cold_seams = [ewarp(max(p), min(n), p[max(p)], n[min(n)]) for (_, p), (_, n) in zip(cold, cold[1:])]
    assert np.mean(cold_seams) > 2 * np.mean(seams)  # without warm-up a seam restarts from per-frame output


def test_blender_weight_bounds():
    with pytest.raises(ValueError):
        TemporalBlender(1.0)
    b = TemporalBlender(0.5)
    img = np.full((4, 4, 3), 100, np.uint8)
    assert (b.step(img, None, None) == 100).all()
    zero = np.zeros((4, 4, 2), np.float32)
    out = b.step(np.full((4, 4, 3), 200, np.uint8), zero, np.ones((4, 4), np.float32))
    assert (out == 150).all()
    out = b.step(np.full((4, 4, 3), 0, np.uint8), zero, np.zeros((4, 4), np.float32))  # unreliable: no carry-over
    assert (out == 0).all()


def test_scene_cut_detector_histogram_rule():
    d = SceneCutDetector()
    dark, bright = np.full((8, 8), 20, np.uint8), np.full((8, 8), 220, np.uint8)
    assert d.is_cut(d.histogram(dark), d.histogram(bright), None)
    assert not d.is_cut(d.histogram(dark), d.histogram(dark), np.ones((8, 8)))
    assert d.is_cut(d.histogram(dark), d.histogram(dark), np.zeros((8, 8)))  # alike, but nothing maps


def test_real_stylizer_and_demo_checkpoint(clip):
    from jobs.common.run_settings import demo_checkpoint
    from stylize_core.checkpoint import load_style_model
    from stylize_core.stylizer import Stylizer, StylizerConfig

    stylizer = Stylizer({"demo": load_style_model(demo_checkpoint())}, None, StylizerConfig(device="cpu", metrics=False))
    fn = {"demo": lambda frames: [r.image for r in stylizer.stylize(frames, "demo")]}
    frames = [f[:48, :64] for f in clip[:10]]
    res = {}
    for temporal in ("none", "flow"):
        outs = []
        res[temporal] = stylize_clip(list(enumerate(frames)), fn, {"demo": lambda k, o: outs.append(o)}, temporal=temporal)["demo"]
        assert len(outs) == 10 and outs[0].shape == (48, 64, 3)
    assert res["flow"].ewarp_out < res["none"].ewarp_out


def test_gray_of_rgb():
    assert to_gray(np.full((2, 2, 3), 128, np.uint8)).shape == (2, 2)
