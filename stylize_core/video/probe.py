"""What a video holds, read before any pixel is stylised: streams, frame timestamps, keyframes,
rotation and colour tags, checked against the size/duration guard."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from .errors import VideoError, ffmpeg_errors

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})
DEFAULT_MAX_PIXELS = 4096 * 2304  # per frame: 4K UHD fits, a header claiming 100k x 100k does not
DEFAULT_MAX_DURATION_S = 4 * 3600.0


@dataclass
class VideoInfo:
    """One input video. Timestamps are in ``time_base`` units, frames in presentation order."""

    width: int  # as stored (before rotation)
    height: int
    codec: str
    pix_fmt: str
    time_base: Fraction
    frame_pts: list[int]  # every frame's presentation timestamp, sorted
    keyframe_pts: list[int]
    last_duration: int  # duration of the last frame, time_base units
    rotation: int = 0  # degrees counter-clockwise a player turns the stored frame (display matrix)
    colorspace: int = 2  # AVColorSpace of the frames (2: unspecified)
    color_range: int = 0  # AVColorRange (0 unspecified, 1 limited/MPEG, 2 full/JPEG)
    color_primaries: int = 2
    color_trc: int = 2
    average_rate: Fraction | None = None
    audio_streams: list[str] = field(default_factory=list)  # codec name per audio stream
    container: str = ""

    @property
    def frames(self) -> int:
        return len(self.frame_pts)

    @property
    def duration_s(self) -> float:
        if not self.frame_pts:
            return 0.0
        return float((self.frame_pts[-1] + self.last_duration - self.frame_pts[0]) * self.time_base)

    @property
    def fps(self) -> float:
        return self.frames / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as played: a quarter turn swaps the sides."""
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)


def _open(path: str):
    import av

    try:
        return av.open(path, "r")
    except av.error.InvalidDataError as exc:
        raise VideoError("not_video", f"not a video container FFmpeg can read: {exc}") from None
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise VideoError("not_video", f"cannot open as a video: {type(exc).__name__}: {exc}") from None


def _video_stream(container, max_pixels: int):
    """The first video stream, if FFmpeg can decode it and its frames pass the pixel guard."""
    if not container.streams.video:
        raise VideoError("no_video_stream", "the file has no video stream")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None:  # PyAV leaves it None when FFmpeg has no decoder for the stream's codec
        raise VideoError("unsupported_codec", "no decoder for the video codec in this FFmpeg build")
    if ctx.width * ctx.height > max_pixels:
        raise VideoError("too_large", f"{ctx.width}x{ctx.height} frames exceed the {max_pixels}-pixel guard")
    return stream


def _packet_index(container, stream) -> tuple[list[int], list[int], int]:
    """(every frame's pts, keyframe pts, both sorted; the last frame's duration) from the packets alone."""
    import av

    pts: list[int] = []
    keys: list[int] = []
    durations: dict[int, int] = {}
    try:
        with ffmpeg_errors() as log:
            for packet in container.demux(stream):
                t = packet.pts if packet.pts is not None else packet.dts
                if t is None or packet.size == 0:
                    continue  # the flush packet at the end
                pts.append(t)
                durations[t] = packet.duration or 0
                if packet.is_keyframe:
                    keys.append(t)
        log.check("damaged container")
    except av.error.FFmpegError as exc:
        raise VideoError("corrupt", f"damaged container while reading packets: {exc}") from None
    if not pts:
        raise VideoError("zero_frames", "the video stream holds no frames")
    pts.sort()
    keys.sort()
    if len(set(pts)) != len(pts):
        raise VideoError("corrupt", "several frames share one timestamp")
    gaps = [b - a for a, b in zip(pts, pts[1:])]
    last = durations.get(pts[-1]) or (min(gaps) if gaps else 0)
    if not last and stream.average_rate:
        last = max(1, round(1 / (stream.average_rate * stream.time_base)))
    return pts, keys, int(last)


def _read_frame_tags(container, stream, info: VideoInfo) -> None:
    """Rotation and colour tags onto ``info``. They live on decoded frames (FFmpeg copies the stream's
    display matrix onto each frame), so the first one is decoded; this also catches undecodable streams."""
    import av

    container.seek(info.frame_pts[0], stream=stream, backward=True, any_frame=False)
    try:
        first = next(iter(container.decode(stream)), None)
    except av.error.FFmpegError as exc:
        raise VideoError("corrupt", f"the first frame does not decode: {exc}") from None
    if first is None:
        raise VideoError("zero_frames", "no frame of the video stream decodes")
    info.rotation = int(first.rotation or 0) % 360
    if info.rotation % 90:
        raise VideoError("unsupported_rotation", f"display rotation {info.rotation} is not a multiple of 90 degrees")
    info.colorspace, info.color_range = int(first.colorspace), int(first.color_range)
    info.color_primaries, info.color_trc = int(first.color_primaries), int(first.color_trc)


def probe_video(
    path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_duration_s: float = DEFAULT_MAX_DURATION_S
) -> VideoInfo:
    """Read the container's packet index (no decoding but the first frame) into a :class:`VideoInfo`.

    Raises :class:`VideoError` for anything that cannot be stylised.
    """
    with _open(path) as container:
        stream = _video_stream(container, max_pixels)
        ctx = stream.codec_context
        pts, keys, last = _packet_index(container, stream)
        info = VideoInfo(
            width=ctx.width, height=ctx.height, codec=ctx.name, pix_fmt=ctx.pix_fmt or "",
            time_base=stream.time_base, frame_pts=pts, keyframe_pts=keys or pts[:1], last_duration=last,
            average_rate=stream.average_rate, container=container.format.name,
            audio_streams=[a.codec_context.name if a.codec_context is not None else "unknown" for a in container.streams.audio],
        )
        if info.duration_s > max_duration_s:
            raise VideoError("too_large", f"{info.duration_s:.0f} s exceeds the {max_duration_s:.0f}-second guard")
        _read_frame_tags(container, stream, info)
        return info
