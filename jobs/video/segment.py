"""One segment of one clip, every style: decode (or read frames) -> stylise with temporal
blending -> encode (or write frames); stores the segment's work files (see jobs.video_worker)."""

from __future__ import annotations

import os
import posixpath
import time

import numpy as np

from stylize_core.video.decode import iter_frames, output_size
from stylize_core.video.encode import EncodeOptions, SegmentWriter
from stylize_core.video.errors import VideoError
from stylize_core.video.flow import DisFlow
from stylize_core.video.process import stylize_clip
from stylize_core.video.sequence import read_sequence_frame, write_sequence_frame

from jobs.common.storage import output_uri, read_bytes, write_bytes_atomic
from jobs.video.masks import ClipMasks
from jobs.video.workdir import stats_to_json


def _clip_kwargs(worker, task: dict, sizes: dict | None = None) -> dict:
    """``stylize_clip``'s settings for ``task``'s segment; ``sizes``: a sequence's frame sizes as read."""
    s = worker.settings
    masks = ClipMasks(s, task, sizes).composites() if s.mask_prefix else None
    return dict(warmup=task["plan"].warmup, temporal=s.temporal, weight=s.temporal_weight, batch_size=s.batch_size,
                flow=DisFlow(s.flow_preset, s.flow_side), meter_side=s.measure_side or None,
                losses=worker._loss_fns(), loss_every=s.loss_every, composite=masks)


def _video_segment(worker, task: dict, uris: dict) -> dict:
    s = worker.settings
    info, plan = task["info"], task["plan"]
    path = worker.local_input(task["uri"])
    size = output_size(info, s.max_side)
    start = info.frame_pts[plan.warm_start]
    end = info.frame_pts[plan.end] if plan.end < info.frames else None
    options = EncodeOptions(codec=s.codec, crf=s.crf, preset=s.preset)
    local = {style: os.path.join(worker.tmp, f"seg-{os.getpid()}-{plan.index}-{style}.nut") for style in s.style_names}
    writers = {style: SegmentWriter(local[style], info, size, options, format="nut") for style in s.style_names}
    try:
        stats = stylize_clip(iter_frames(path, info, size, start, end), worker._stylize_fns(),
                             {st: (lambda pts, out, w=w: w.write(out, int(pts))) for st, w in writers.items()},
                             **_clip_kwargs(worker, task))
        for w in writers.values():
            w.close()
        for style, st in stats.items():
            if st.frames != plan.frames:
                raise VideoError("truncated", f"segment {plan.index}: {st.frames} frames decoded, the container lists {plan.frames}")
        for style in s.style_names:
            worker.put(local[style], uris[f"video:{style}"])
        return stats
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        for p in local.values():
            if os.path.exists(p):
                os.unlink(p)


def _sequence_frames(worker, task: dict, plan, metas: dict, sizes: dict):
    s = worker.settings
    shape = None
    for i in range(plan.warm_start, plan.end):
        rgb, meta = read_sequence_frame(read_bytes(task["frame_uris"][i], worker.opts))
        sizes[i] = rgb.shape[:2]  # the file's size: a mask is checked against it, before --max-side
        if s.max_side:
            from stylize_core.image_size import resize_max_side

            rgb = resize_max_side(rgb, s.max_side)
            meta = meta if meta.alpha is None else type(meta)(meta.depth, None)  # alpha no longer fits
        if shape is None:
            shape = rgb.shape
        elif rgb.shape != shape:
            raise VideoError("size_mismatch", f"frame {task['sequence'].rel_paths[i]} is {rgb.shape[1]}x{rgb.shape[0]}, "
                             f"the sequence {shape[1]}x{shape[0]}")
        metas[i] = meta
        yield i, rgb


def _sequence_segment(worker, task: dict, uris: dict) -> dict:
    s = worker.settings
    seq, plan = task["sequence"], task["plan"]
    metas: dict = {}
    sizes: dict = {}

    def sink(style):
        def write(i, out):
            rel = seq.rel_paths[i]
            ext = posixpath.splitext(rel)[1]
            data = write_sequence_frame(out, metas.pop(i) if style == s.style_names[-1] else metas[i], ext)
            write_bytes_atomic(output_uri(s.output, style, rel, ext), data, worker.opts)
        return write

    return stylize_clip(_sequence_frames(worker, task, plan, metas, sizes), worker._stylize_fns(),
                        {st: sink(st) for st in s.style_names}, **_clip_kwargs(worker, task, sizes))


def run_segment(worker, task: dict, uris: dict) -> None:
    """Process ``task["plan"]`` and store its statistics and seam frames (JSON last: the done mark)."""

    started = time.perf_counter()
    stats = (_sequence_segment if worker.settings.kind == "sequence" else _video_segment)(worker, task, uris)
    first = next(iter(stats.values()))
    arrays = {"first_in": first.first_in, "last_in": first.last_in}
    for style, st in stats.items():
        arrays[f"first_out:{style}"] = st.first_out
        arrays[f"last_out:{style}"] = st.last_out
    worker.store_npz(uris["npz"], {k: v if v is not None else np.zeros((0, 0, 3), np.uint8) for k, v in arrays.items()})
    worker.store_json(uris["json"], {"index": task["plan"].index, "wall_s": time.perf_counter() - started,
                                     "styles": {style: stats_to_json(st) for style, st in stats.items()}})
