"""The video job's actor: probes inputs, stylises segments (decode -> flow -> stylise -> blend ->
encode) and joins them. Ray-free: ``jobs.common.ray_runtime`` runs it as an actor, tests call it
directly. Its work files are laid out by :mod:`jobs.video.workdir`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from fractions import Fraction

import numpy as np

from stylize_core.masks import MaskError
from stylize_core.style_encoding import StyleEncodings
from stylize_core.video.errors import VideoError

from jobs.common.storage import (exists, get_file, local_path, put_file_atomic, read_bytes, redact, url_path,
                                 write_bytes_atomic)
from jobs.common.planning import ActorPlan
from jobs.video.settings import VideoSettings
from jobs.video.workdir import segment_uris

SETUP_ERROR = "setup_error"  # a probe's error_type when the worker could not build its stylizer


def sequence_plan_inputs(n: int, fps: float) -> tuple[list[int], list[int], Fraction]:
    """Frame timestamps of an image sequence: every frame a keyframe, ``fps`` frames a second."""
    return list(range(n)), list(range(n)), Fraction(fps).limit_denominator(1000) ** -1


class VideoWorker:
    """Holds the style networks (and the VGG loss network when metrics are on), built once."""

    def __init__(self, settings: VideoSettings, plan: ActorPlan, encodings: StyleEncodings | None = None) -> None:
        import torch

        from stylize_core.builder import SetupError
        from stylize_core.registry import build_stylizer

        from jobs.common.stylizer_spec import run_stylizer_spec
        from stylize_core.host import retain_freed_memory
        from stylize_core.style_result import resolve_device

        self.settings = settings
        self.opts = settings.storage_options
        retain_freed_memory()
        if resolve_device(settings.device).type == "cpu":
            torch.set_num_threads(plan.torch_threads or max(1, (os.cpu_count() or 1) // max(1, plan.max_actors)))
        # The image job's builder: the same checkpoints, style-loss targets and loss network. Losses are
        # measured here on every --loss-every-th frame, not by the Stylizer on every frame.
        self.setup_error = ""  # why nothing can be stylised: every probe answers with it, the driver stops (exit 2)
        try:
            spec = run_stylizer_spec(settings, settings.batch_size, encodings)  # encodings: made once for the run
            built = build_stylizer(spec, lambda uri: read_bytes(uri, self.opts))
        except SetupError as exc:  # raised here it would reach the driver as a Ray traceback, after retries
            self.setup_error = str(exc)
            return
        upscaling = {n: s for n, s in getattr(built.stylizer, "scales", {}).items() if s > 1}
        if upscaling:  # frames, flow and the temporal blend are all at the input's size here
            name, scale = next(iter(upscaling.items()))
            self.setup_error = (f"style {name!r} is an x{scale} super-resolution network: jobs.stylize_video runs "
                                "same-size networks only (styles, denoise, deblock)")
            return
        self.stylizer = built.stylizer
        self.sha256 = built.model_sha256
        self.device_name = built.device_name
        self.loss_model = built.loss_model
        self.meter = self.stylizer.meter
        self.tmp = tempfile.mkdtemp(prefix="stylize-video-")
        self._cached: tuple[str, str] | None = None  # (uri, local copy) of the last remote input

    # -- inputs -----------------------------------------------------------------------------------
    def local_input(self, uri: str) -> str:
        """A local path for ``uri``: itself when local, else a download kept for the next segment."""
        path = local_path(uri)
        if path is not None:
            return path
        if self._cached and self._cached[0] == uri:
            return self._cached[1]
        if self._cached:
            with contextlib.suppress(OSError):
                os.unlink(self._cached[1])
        ext = os.path.splitext(url_path(uri))[1]  # a presigned URL's query is no part of a file name
        dest = os.path.join(self.tmp, "input-" + hashlib.sha1(uri.encode()).hexdigest()[:16] + ext)
        get_file(uri, dest, self.opts)
        self._cached = (uri, dest)
        return dest

    def probe(self, task: dict) -> dict:
        """``{uri, rel_path}`` -> the task plus ``info`` and ``plans``, or an error."""
        from stylize_core.video.probe import probe_video
        from stylize_core.video.segments import plan_segments

        s = self.settings
        out = dict(task, op="probe", status="ok", error_type="", error="", finished=False)
        if self.setup_error:
            return out | {"status": "error", "error_type": SETUP_ERROR, "error": self.setup_error}
        try:
            if s.kind == "sequence":
                seq = task["sequence"]
                pts, keys, tb = sequence_plan_inputs(seq.frames, s.sequence_fps)
                out["info"] = None
            else:
                path = self.local_input(task["uri"])
                out["input_bytes"] = os.path.getsize(path)
                info = probe_video(path, max_pixels=s.max_pixels, max_duration_s=s.max_duration)
                pts, keys, tb = info.frame_pts, info.keyframe_pts, info.time_base
                out["info"] = info
                if s.mask_prefix:  # a still mask that cannot be used ends the video here, before any segment
                    from stylize_core.video.decode import output_size

                    from jobs.video.masks import ClipMasks

                    width, height = output_size(info, s.max_side)
                    ClipMasks(s, out).planes(None, (height, width))
            out["plans"] = plan_segments(pts, keys, tb, s.segment_seconds, s.warmup_frames)
            # Joined by an earlier attempt of this run id: its rows are kept, no segment is redone.
            from jobs.video.assemble import finished_rows

            out["finished"] = finished_rows(self, task["rel_path"]) is not None
        except (VideoError, MaskError) as exc:
            out.update(status="error", error_type=exc.error_type, error=str(exc))
        except FileNotFoundError as exc:
            out.update(status="error", error_type="not_found", error=f"input disappeared: {exc}")
        except Exception as exc:  # storage/network: the row says why, the run goes on
            out.update(status="error", error_type="read_error", error=f"{type(exc).__name__}: {exc}")
        return out

    # -- segments ---------------------------------------------------------------------------------
    def _stylize_fns(self) -> dict:
        def fn(frames, style):
            return [r.image for r in self.stylizer.stylize_many(frames, [style], measure=[False] * len(frames))[style]]

        return {s: (lambda frames, s=s: fn(frames, s)) for s in self.settings.style_names}

    def _loss_fns(self) -> dict | None:
        if self.meter is None:
            return None
        import torch

        def fn(contents, outputs, style):
            c = torch.from_numpy(np.stack(contents)).permute(0, 3, 1, 2).float()  # (B, 3, H, W) 0..255
            o = torch.from_numpy(np.stack(outputs)).permute(0, 3, 1, 2).float()
            r = self.meter.measure(c, o, style)
            return list(zip(r["content_loss"], r["style_loss"], r["style_stat_distance"], r["style_stat_ratio"]))

        return {s: (lambda c, o, s=s: fn(c, o, s)) for s in self.settings.style_names}

    def segment(self, task: dict) -> dict:
        """Stylise one planned segment with every style and store its work files. Returns
        ``{uri, index, status, error_type, error}``; a finished segment (its JSON exists) is skipped."""
        from jobs.video.segment import run_segment

        plan = task["plan"]
        result = {"op": "segment", "uri": task["uri"], "index": plan.index, "status": "ok", "error_type": "", "error": "", "skipped": False}
        uris = segment_uris(self.settings, task["rel_path"], plan.index)
        try:
            videos = [u for k, u in uris.items() if k.startswith("video:")] if self.settings.kind == "video" else []
            if exists(uris["json"], self.opts) and all(exists(u, self.opts) for u in videos):
                result["skipped"] = True
                return result
            run_segment(self, task, uris)
        except (VideoError, MaskError) as exc:
            result.update(status="error", error_type=exc.error_type, error=str(exc))
        except Exception as exc:
            result.update(status="error", error_type="segment_error", error=f"{type(exc).__name__}: {exc}")
        return result

    def join(self, task: dict) -> dict:
        """Join a video's segments per style; returns ``{uri, rows, strips}`` (see jobs.video_join)."""
        from jobs.video.assemble import join_video

        return join_video(self, task)

    def store_npz(self, uri: str, arrays: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        write_bytes_atomic(uri, buf.getvalue(), self.opts)

    def store_json(self, uri: str, data: dict) -> None:
        write_bytes_atomic(uri, json.dumps(redact(data, keys=False)).encode(), self.opts)  # kept under the output

    def load_json(self, uri: str) -> dict:
        return json.loads(read_bytes(uri, self.opts))

    def put(self, path: str, uri: str) -> None:
        put_file_atomic(path, uri, self.opts)

    def close(self) -> None:
        """Remove the local copies of remote inputs (the pool calls this before it kills the actor)."""
        shutil.rmtree(getattr(self, "tmp", ""), ignore_errors=True)

    def __del__(self) -> None:
        self.close()

