"""Video decode/encode/join: timestamps, rotation, colour tags, audio packets, bad inputs.
Clips are made here with PyAV (stylize_core.video.synthetic); frames are small and few."""

from __future__ import annotations

import av
import numpy as np
import pytest
from media_samples import write_silent_audio  # tests/media_samples.py

from stylize_core.video import (EncodeOptions, SegmentWriter, VideoError, iter_frames, join_segments, make_clip,
                                output_container, output_size, pan_frames, plan_segments, probe_video)
from stylize_core.video.join import SEGMENT_FORMAT
from stylize_core.video.synthetic import sample_photo


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return sample_photo("astronaut")


def _audio_packets(path: str) -> list[tuple[int, bytes]]:
    with av.open(path) as c:
        return [(p.pts, bytes(p)) for p in c.demux(*c.streams.audio) if p.size]


def _passthrough(src: str, dst: str, tmp_path, muxer: str = "mp4", segment_seconds: float = 0.0, max_side=None) -> None:
    """Decode -> re-encode in segments -> join: the job's path without the stylising."""
    info = probe_video(src)
    size = output_size(info, max_side)
    paths = []
    for plan in plan_segments(info.frame_pts, info.keyframe_pts, info.time_base, segment_seconds, 0):
        path = str(tmp_path / f"seg{plan.index}.nut")
        w = SegmentWriter(path, info, size, EncodeOptions(preset="ultrafast"), format=SEGMENT_FORMAT)
        end = info.frame_pts[plan.end] if plan.end < info.frames else None
        for pts, rgb in iter_frames(src, info, size, info.frame_pts[plan.start], end):
            w.write(rgb, pts)
        w.close()
        paths.append(path)
    join_segments(paths, src, dst, muxer, info)


def test_round_trip_keeps_frames_timestamps_duration_and_audio_packets(tmp_path, photo):
    src, dst = str(tmp_path / "in.mp4"), str(tmp_path / "out.mp4")
    make_clip(src, pan_frames(photo, 30, (96, 64), seed=1), gop=6)
    _passthrough(src, dst, tmp_path, segment_seconds=0.5)
    a, b = probe_video(src), probe_video(dst)
    assert len(plan_segments(a.frame_pts, a.keyframe_pts, a.time_base, 0.5, 0)) == 3
    assert b.frames == a.frames == 30
    assert b.frame_pts == a.frame_pts and b.time_base == a.time_base
    assert b.duration_s == pytest.approx(a.duration_s)
    assert (b.width, b.height) == (96, 64)
    assert _audio_packets(dst) == _audio_packets(src) and len(_audio_packets(src)) > 5


def test_variable_frame_rate_survives(tmp_path, photo):
    src, dst = str(tmp_path / "vfr.mkv"), str(tmp_path / "out.mkv")
    durations = [100, 250, 100, 50, 400, 100, 100, 300, 60, 100] * 2
    written = make_clip(src, pan_frames(photo, 20, (64, 48)), durations=durations, format="matroska", audio_hz=None)
    _passthrough(src, dst, tmp_path, muxer="matroska")
    a, b = probe_video(src), probe_video(dst)
    gaps = np.diff(b.frame_pts)
    assert b.frame_pts == a.frame_pts and len(b.frame_pts) == len(written) == 20
    assert gaps.max() > 4 * gaps.min()  # still variable


def test_rotation_is_applied_and_not_tagged_again(tmp_path):
    # A marker in the stored frame's top-left corner; a 90-degree display rotation (counter-clockwise)
    # puts it bottom-left on screen.
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:8, :8] = 255
    src, dst = str(tmp_path / "rot.mp4"), str(tmp_path / "out.mp4")
    make_clip(src, [frame] * 6, rotation=90, audio_hz=None)
    info = probe_video(src)
    assert info.rotation == 90 and info.display_size == (48, 64)
    pts, shown = next(iter_frames(src, info, output_size(info, None)))
    assert shown.shape == (64, 48, 3)
    assert shown[-8:, :8].mean() > 200 and shown[:8, :8].mean() < 50
    _passthrough(src, dst, tmp_path)
    out = probe_video(dst)
    assert out.rotation == 0 and (out.width, out.height) == (48, 64)


def test_sizes_stay_even_after_max_side(tmp_path, photo):
    src = str(tmp_path / "odd.mkv")
    make_clip(src, pan_frames(photo, 4, (98, 62)), format="matroska", audio_hz=None, codec="ffv1")
    info = probe_video(src)
    w, h = output_size(info, 51)
    assert max(w, h) <= 51 and w % 2 == 0 and h % 2 == 0


@pytest.mark.parametrize("colorspace,color_range", [(1, 1), (5, 2)])  # BT.709 limited, BT.601 full
def test_colour_matrix_and_range_are_carried(tmp_path, colorspace, color_range):
    img = np.zeros((48, 64, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 200, 60, 30
    src, dst = str(tmp_path / "c.mp4"), str(tmp_path / "o.mp4")
    make_clip(src, [img] * 4, audio_hz=None, colorspace=colorspace, color_range=color_range)
    info = probe_video(src)
    assert (info.colorspace, info.color_range) == (colorspace, color_range)
    _passthrough(src, dst, tmp_path)
    out = probe_video(dst)
    assert (out.colorspace, out.color_range) == (colorspace, color_range)
    _, rgb = next(iter_frames(dst, out, output_size(out, None)))
    assert np.abs(rgb.reshape(-1, 3).mean(0) - [200, 60, 30]).max() < 6  # same colour after the round trip


def test_output_container_rules():
    assert output_container("a/b.MOV", "h264") == ("a/b.MOV", "mov")
    assert output_container("x.mkv", "h264") == ("x.mkv", "matroska")
    assert output_container("x.webm", "h264") == ("x.mp4", "mp4")
    assert output_container("x.webm", "vp9") == ("x.webm", "webm")
    assert output_container("x.avi", "h264") == ("x.mp4", "mp4")


def _bad_files(tmp_path, photo) -> dict[str, str]:
    good_mkv = tmp_path / "good.mkv"
    make_clip(str(good_mkv), pan_frames(photo, 24, (96, 64)), gop=6, format="matroska", audio_hz=None)
    data = bytearray(good_mkv.read_bytes())
    files = {}
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 10)
    files["text.mp4"] = "not_video"
    good_mp4 = tmp_path / "good.mp4"
    make_clip(str(good_mp4), pan_frames(photo, 12, (64, 48)))
    (tmp_path / "cut.mp4").write_bytes(good_mp4.read_bytes()[: good_mp4.stat().st_size // 2])
    files["cut.mp4"] = "not_video"  # the index (moov) is at the end: nothing to open
    (tmp_path / "cut.mkv").write_bytes(bytes(data[: len(data) * 2 // 3]))
    files["cut.mkv"] = "truncated"
    damaged = bytearray(data)
    mid = len(damaged) // 2
    damaged[mid : mid + 2000] = bytes((b * 7 + 13) & 255 for b in damaged[mid : mid + 2000])
    (tmp_path / "damaged.mkv").write_bytes(bytes(damaged))
    files["damaged.mkv"] = "corrupt"
    write_silent_audio(str(tmp_path / "zero.mkv"), "matroska", with_video_track=True)  # a video track, no packets
    files["zero.mkv"] = "zero_frames"
    write_silent_audio(str(tmp_path / "audio.mp4"), "mp4")
    files["audio.mp4"] = "no_video_stream"
    avi = tmp_path / "mpeg4.avi"
    make_clip(str(avi), [np.zeros((48, 64, 3), np.uint8)] * 4, codec="mpeg4", audio_hz=None, format="avi")
    (tmp_path / "unknown.avi").write_bytes(avi.read_bytes().replace(b"FMP4", b"ZQZQ"))  # a FourCC nobody decodes
    files["unknown.avi"] = "unsupported_codec"
    return files


def test_bad_inputs_raise_typed_errors(tmp_path, photo):
    for name, expected in _bad_files(tmp_path, photo).items():
        with pytest.raises(VideoError) as err:
            info = probe_video(str(tmp_path / name))
            list(iter_frames(str(tmp_path / name), info, output_size(info, None)))
        assert err.value.error_type == expected, (name, str(err.value))


def test_size_and_duration_guards(tmp_path, photo):
    src = str(tmp_path / "g.mp4")
    make_clip(src, pan_frames(photo, 6, (64, 48)), audio_hz=None)
    with pytest.raises(VideoError, match="pixel") as err:
        probe_video(src, max_pixels=64 * 47)
    assert err.value.error_type == "too_large"
    with pytest.raises(VideoError, match="second"):
        probe_video(src, max_duration_s=0.1)
