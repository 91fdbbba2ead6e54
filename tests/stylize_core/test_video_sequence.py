"""Numbered image sequences: grouping, and frames written back in their format and bit depth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stylize_core.video import VideoError, find_sequences, read_sequence_frame, write_sequence_frame


def test_sequences_group_by_directory_stem_extension_and_padding():
    rels = ["shot010/frame_0002.png", "shot010/frame_0001.png", "shot010/frame_0010.png", "shot010/notes.txt",
            "shot020/f.0001.jpg", "shot020/f.0002.jpg", "shot010/other_01.png", "shot010/frame_1.png"]
    seqs = {s.name: s for s in find_sequences(rels)}
    assert set(seqs) == {"shot010/frame_####.png", "shot020/f.####.jpg", "shot010/other_##.png", "shot010/frame_#.png"}
    s = seqs["shot010/frame_####.png"]
    assert s.rel_paths == ("shot010/frame_0001.png", "shot010/frame_0002.png", "shot010/frame_0010.png")
    assert s.numbers == (1, 2, 10)


def test_16_bit_png_with_alpha_round_trips_at_16_bits():
    rng = np.random.default_rng(0)
    bgra = rng.integers(0, 65536, (12, 16, 4), dtype=np.uint16)
    ok, buf = cv2.imencode(".png", bgra)
    rgb, meta = read_sequence_frame(buf.tobytes())
    assert rgb.dtype == np.uint8 and rgb.shape == (12, 16, 3) and meta.depth == 16
    np.testing.assert_array_equal(rgb[..., 0], ((bgra[..., 2].astype(np.uint32) + 128) // 257).astype(np.uint8))
    back = cv2.imdecode(np.frombuffer(write_sequence_frame(rgb, meta, ".png"), np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.shape == (12, 16, 4)
    np.testing.assert_array_equal(back[..., 3], bgra[..., 3])  # alpha carried unchanged
    assert np.abs(back[..., :3].astype(int) - bgra[..., :3]).max() <= 128


def test_jpeg_and_8_bit_png_stay_8_bit():
    img = np.full((8, 8, 3), 90, np.uint8)
    for ext in (".jpg", ".png"):
        ok, buf = cv2.imencode(ext, img)
        rgb, meta = read_sequence_frame(buf.tobytes())
        assert meta.depth == 8 and meta.alpha is None
        data = write_sequence_frame(rgb, meta, ext)
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    assert write_sequence_frame(rgb, meta, ".jpg")[:2] == b"\xff\xd8"


def test_unreadable_frame_is_an_error():
    with pytest.raises(VideoError) as err:
        read_sequence_frame(b"not a png")
    assert err.value.error_type == "corrupt"
