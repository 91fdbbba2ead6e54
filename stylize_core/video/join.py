"""Joining encoded segments into one file and copying the input's audio packets beside them."""

from __future__ import annotations

import heapq
import posixpath
from collections.abc import Iterator, Sequence
from fractions import Fraction

from .probe import VideoInfo

# Which output codecs each container can carry; anything else is written as MP4 (extension changed).
_CARRIES = {
    ".mp4": {"h264", "hevc", "vp9"}, ".m4v": {"h264", "hevc"}, ".mov": {"h264", "hevc"},
    ".mkv": {"h264", "hevc", "vp9", "ffv1"}, ".webm": {"vp9"},
}
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
SEGMENT_FORMAT = "nut"  # keeps any time base and start time exactly (MP4 edits them, Matroska rounds to 1 ms)
SEGMENT_EXT = ".nut"


def output_container(rel_path: str, codec: str) -> tuple[str, str]:
    """``(output relative path, FFmpeg muxer)``: the input's container when it can carry ``codec``
    (AVI cannot carry variable frame rates), else MP4 with the extension changed."""
    stem, ext = posixpath.splitext(rel_path)
    if codec in _CARRIES.get(ext.lower(), set()):
        return rel_path, _FORMATS[ext.lower()]
    return stem + ".mp4", "mp4"


def _video_packets(paths: Sequence[str], info: VideoInfo) -> Iterator[tuple[Fraction, object]]:
    import av

    index = {p: i for i, p in enumerate(info.frame_pts)}
    for path in paths:
        with av.open(path) as seg:
            stream = seg.streams.video[0]
            for packet in seg.demux(stream):
                if packet.size == 0:
                    continue
                # Back to the input's own ticks; each frame lasts until the next input frame starts.
                pts = round(packet.pts * packet.time_base / info.time_base)
                i = index[pts]
                nxt = info.frame_pts[i + 1] - pts if i + 1 < len(info.frame_pts) else info.last_duration
                packet.pts = packet.dts = pts
                packet.duration = nxt
                packet.time_base = info.time_base
                yield pts * info.time_base, packet


def _audio_packets(container, streams) -> Iterator[tuple[Fraction, object]]:
    if not streams:  # demux() with no streams would read every stream
        return
    for packet in container.demux(*streams):
        if packet.size == 0:
            continue
        t = packet.pts if packet.pts is not None else packet.dts
        yield (t or 0) * packet.time_base, packet


def join_segments(segment_paths: Sequence[str], source_path: str, out_path: str, muxer: str, info: VideoInfo) -> int:
    """Concatenate the segments' video packets (no re-encode) and copy every audio stream of
    ``source_path`` packet for packet into ``out_path``. Returns the number of video packets."""
    import av

    if not segment_paths:
        raise ValueError("nothing to join")
    with av.open(segment_paths[0]) as first:
        template = first.streams.video[0]
        with av.open(source_path) as src, av.open(out_path, "w", format=muxer) as out:
            vout = out.add_stream_from_template(template)
            vout.time_base = info.time_base
            audio_in = list(src.streams.audio)
            audio_out = {}
            for a in audio_in:
                s = out.add_stream_from_template(a)
                s.time_base = a.time_base
                audio_out[a.index] = s
            merged = heapq.merge(_video_packets(segment_paths, info), _audio_packets(src, audio_in), key=lambda x: x[0])
            count = 0
            for _, packet in merged:
                if packet.stream.type == "video":
                    packet.stream = vout
                    count += 1
                else:
                    packet.stream = audio_out[packet.stream.index]
                out.mux(packet)
    return count
