"""The poster phase of the batch job: inputs above ``--split-pixels`` stylised as tiles spread over a
pool of actors, then joined by one writer per style.

The read stage leaves such an input undecoded (status ``poster``, :func:`jobs.batch.stages.poster_size`)
and its rows pass through the stream; the driver holds them back and hands them here. Per poster:

1. an actor plans the tiles (:meth:`PosterActor.plan`; cheap), then decodes the input once, pads and
   cuts it, and records each style's normalisation statistics from its thumbnail
   (:meth:`PosterActor.prepare`): one small Ray object with the statistics and the pixel format, and one
   object per tile's input, all owned by the driver;
2. one writer task per style (:func:`write_poster`) asks the pool's actors in turn for its tiles
   (:meth:`PosterActor.tile`, each given the shared statistics and its own tile only, returning its
   output times its blend weights), in order and at most :data:`TILES_AHEAD_PER_ACTOR` per actor ahead of
   the tile it is reading (:class:`TileFeed`): the object store holds a few float tiles per style, not
   the whole image's (12 bytes a pixel plus the overlap: ~3.5 GB at 268 MP);
3. the writer sums the tiles band by band (:func:`stylize_core.poster_plan.assemble`), measures the
   output when the poster is measured (its full-size total variation and its thumbnail at the metrics
   size as the bands finish, then :meth:`PosterActor.measure` on an actor's loss network), encodes
   with the input's pixel format (alpha, 16 bits, profile) and writes atomically, as the encode stage does;
4. the rows of the poster's styles are answered here: ok, or an error with its reason.

The actors restart after a crash and Ray retries only the calls they had not answered
(:func:`jobs.common.ray_actors.start_actors`): a tile already returned is not run again. An actor that
gives no answer for ``--stall-timeout`` seconds is presumed hung and restarted the same way
(:func:`jobs.common.ray_actors.result_or_restart`), within the same restarts. The driver
holds handles and the tiles' timings, never pixels.
"""

from __future__ import annotations

import collections
import functools
import importlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stylize_core.image_encode import encode_image_full
from stylize_core.poster_plan import PosterPlan, Thumbnail, TotalVariation, assemble

from jobs.batch.settings import JobSettings
from jobs.batch.stages import output_key
from jobs.common import ray_actors, ray_runtime
from jobs.common.planning import ActorPlan
from jobs.common.run_settings import background_rgb
from jobs.common.redaction import exception_line
from jobs.common.storage import redact, write_bytes_atomic

# The actor class, by name: the actors import it (and torch); the driver never does. Tests hand in a class.
POSTER_ACTOR: str | type = "jobs.batch.poster_actor:PosterActor"
POSTER_ERROR = "poster_error"
# How far a writer's tile calls run ahead of the tile it reads, per actor: enough to keep every actor
# busy while the writer adds a tile, few enough that the tiles' outputs never pile up in the object store.
TILES_AHEAD_PER_ACTOR = 2


class PosterWorker:
    """The Ray actor: builds ``target`` (a "module:Class" name, imported in the actor, or a class) and
    forwards the poster calls to it."""

    def __init__(self, target: str | type, **kwargs: Any) -> None:
        if isinstance(target, str):
            module, _, name = target.partition(":")
            target = getattr(importlib.import_module(module), name)
        self._impl = target(**kwargs)

    def plan(self, *args: Any) -> Any:
        return self._impl.plan(*args)

    def prepare(self, *args: Any) -> Any:
        return self._impl.prepare(*args)

    def tile(self, *args: Any) -> Any:
        return self._impl.tile(*args)

    def measure(self, *args: Any) -> Any:
        return self._impl.measure(*args)


@dataclass
class Poster:
    """An input held back for the poster phase: its stream rows by style (metrics rows, Parquet names)."""

    idx: int
    uri: str
    rel_path: str
    height: int
    width: int
    mask_uri: str = ""
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class PosterStats:
    """What the summary records of the phase."""

    posters: int = 0
    tiles: int = 0
    actors: int = 0
    wall_s: float = 0.0
    tile_s: float = 0.0  # the tile calls' own time, summed over actors
    tiles_by_actor: collections.Counter = field(default_factory=collections.Counter)

    def summary(self) -> dict[str, Any]:
        return {"inputs": self.posters, "tiles": self.tiles, "actors": self.actors,
                "actors_used": len(self.tiles_by_actor), "tiles_by_actor": dict(self.tiles_by_actor),
                "wall_s": round(self.wall_s, 3), "tile_s": round(self.tile_s, 3)}


class _TileFailed(RuntimeError):
    error_type = "stylize_error"


class _MetricsFailed(RuntimeError):
    error_type = "stylize_error"  # as a failed measure in a stream's stylize call


class _OutputMetrics:
    """What the writer measures of the output as its bands are finished (clamped, before rounding):
    the full-size total variation and the thumbnail at the metrics size, and the time that took."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.tv, self.thumbnail, self.seconds = TotalVariation(), Thumbnail(size, "bilinear"), 0.0

    def add(self, rows: np.ndarray) -> None:
        start = time.perf_counter()
        self.tv.add(rows)
        self.thumbnail.add(rows)
        self.seconds += time.perf_counter() - start


class TileFeed:
    """One style's tile outputs for :func:`~stylize_core.poster_plan.assemble`, which reads them once each
    in order: ``feed(t)`` first starts every tile up to ``t + ahead - 1`` not yet started
    (``submit(t)`` -> (output handle, info handle)), then reads tile ``t``'s output (``fetch(t, handle)``)
    and drops its handle. At most ``ahead`` outputs are started and unread at any time; each tile starts once."""

    def __init__(self, tiles: int, ahead: int, submit: Callable[[int], tuple[Any, Any]],
                 fetch: Callable[[int, Any], np.ndarray]) -> None:
        self.tiles, self.ahead = tiles, max(1, ahead)
        self._submit, self._fetch = submit, fetch
        self._outputs: dict[int, Any] = {}
        self.infos: list[Any] = []  # the info handles, in tile order
        self.started = 0

    def __call__(self, t: int) -> np.ndarray:
        if t not in self._outputs and t < self.started:
            raise ValueError(f"tile {t} was already read")
        while self.started < min(self.tiles, t + self.ahead):
            output, info = self._submit(self.started)
            self._outputs[self.started] = output
            self.infos.append(info)
            self.started += 1
        return self._fetch(t, self._outputs.pop(t))


def write_poster(settings: JobSettings, plan: PosterPlan, style: str, rel_path: str, prepared: Sequence[Any],
                 actors: Sequence[Any], first_actor: int = 0) -> dict[str, Any]:
    """One style of a poster: its tiles asked of ``actors`` in turn from ``first_actor`` (``prepared``:
    the handles :meth:`PosterActor.prepare` returned, the metadata then one per tile's input), joined,
    encoded and written atomically. Returns the write stage's columns and ``tile_infos`` (each tile's
    actor and time), or error_type and error; never raises."""
    start = time.perf_counter()
    try:
        meta = ray_runtime.result(prepared[0])
    except Exception as exc:
        return {"error_type": POSTER_ERROR, "error": exception_line(exc, 500)}
    scale = 257.0 if meta.float_pixels else 1.0  # a 16-bit input's output: uint16, as the encode stage gets it
    dtype = np.uint16 if meta.float_pixels else np.uint8

    def actor_of(t: int) -> Any:
        return actors[(first_actor + t) % len(actors)]

    def submit(t: int) -> tuple[Any, Any]:
        return ray_actors.call(actor_of(t), "tile", prepared[0], prepared[1 + t], style, t, plan, returns=2)

    def resubmit(t: int) -> Any:
        """Tile ``t`` asked again (its actor was unreachable): its new info handle replaces the refused one."""
        output, feed.infos[t] = submit(t)
        return output

    def fetch(t: int, handle: Any) -> np.ndarray:
        try:  # a tile that does not answer within --stall-timeout restarts its actor, which runs it again
            return ray_actors.result_or_restart(handle, actor_of(t), settings.stall_timeout,
                                                resubmit=functools.partial(resubmit, t))
        except Exception as exc:
            raise _TileFailed(f"tile {t} of {plan.tiles} failed: {exception_line(exc, 500)}") from None

    feed = TileFeed(plan.tiles, TILES_AHEAD_PER_ACTOR * len(actors), submit, fetch)
    metrics = _OutputMetrics(meta.metric_input.shape[:2]) if meta.metric_input is not None else None

    def finish(rows: np.ndarray) -> np.ndarray:
        """The output's pixels of float rows; a masked, measured poster's tiles carry the network's own
        output first (the metrics are of it, as in the stream) and the composite after it."""
        rows = np.clip(rows, 0, 255)
        if metrics is not None:
            metrics.add(rows[:, :, :3])
        return np.rint(rows[:, :, -3:] * scale).astype(dtype)

    try:
        image = assemble(plan, feed, finish)
        measured = {"measured": False} if metrics is None else _measure(settings, style, prepared[0], metrics,
                                                                     actor_of(0))
        uri = output_key(settings, rel_path, style)
        data, alpha = encode_image_full(image, meta.format, settings.format, settings.quality,
                                        background=background_rgb(settings.background))
        write_bytes_atomic(uri, data, settings.storage_options)
        infos = ray_actors.results(feed.infos)
    except Exception as exc:
        return {"error_type": getattr(exc, "error_type", "write_error"), "error": redact(f"{type(exc).__name__}: {exc}")}
    return {"output_uri": uri, "output_bytes": len(data), "alpha": alpha, "out_width": int(image.shape[1]),
            "out_height": int(image.shape[0]), "encode_ms": (time.perf_counter() - start) * 1000, "tile_infos": infos,
            **measured}


def _measure(settings: JobSettings, style: str, meta: Any, metrics: _OutputMetrics, actor: Any) -> dict[str, Any]:
    """The poster's metrics columns: ``actor``'s loss network on the input's and the output's
    thumbnails, with the writer's full-size total variation; metrics_ms counts the writer's share too."""
    try:
        args = (meta, style, metrics.thumbnail.result(), metrics.tv.value)

        def ask() -> Any:
            return ray_actors.call(actor, "measure", *args)

        measured = ray_actors.result_or_restart(ask(), actor, settings.stall_timeout, resubmit=ask)
    except Exception as exc:
        raise _MetricsFailed(f"measuring the poster failed: {exception_line(exc, 500)}") from None
    return {**measured, "measured": True, "metrics_ms": measured["metrics_ms"] + metrics.seconds * 1000}


def _failed(row: dict[str, Any], error_type: str, error: str) -> dict[str, Any]:
    return {**row, "status": "error", "error_type": error_type, "error": error}


class PosterPhase:
    """The poster phase of one run: a pool of actors, two posters in flight at a time."""

    def __init__(self, settings: JobSettings, plan: ActorPlan, encodings: Any = None,
                 env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.stats = PosterStats(actors=max(1, plan.max_actors))
        self.actors = ray_actors.start_actors(
            PosterWorker, self.stats.actors, {"target": POSTER_ACTOR, "settings": settings, "plan": plan,
                                              "encodings": encodings},
            num_cpus=plan.cpus_per_actor, num_gpus=plan.gpus_per_actor, retries=settings.max_actor_crashes, env=env)

    def close(self) -> None:
        ray_actors.stop_actors(self.actors)

    def run(self, posters: Sequence[Poster], on_rows: Callable[[list[dict[str, Any]]], None]) -> None:
        """Every poster's rows, through ``on_rows`` (one call per poster, in order). Two posters are in
        flight at a time: the next one is planned, decoded and its writers started before the rows of
        the one before are collected, so its decode and the previous one's join and encode (one process
        each) overlap the other poster's tiles instead of leaving the pool idle."""
        start = time.perf_counter()
        pending: Callable[[], list[dict[str, Any]]] | None = None
        for poster in posters:
            collect = self._start(poster)
            if pending is not None:
                on_rows(pending())
                self.stats.posters += 1
            pending = collect
        if pending is not None:
            on_rows(pending())
            self.stats.posters += 1
        self.stats.wall_s += time.perf_counter() - start

    def _start(self, poster: Poster) -> Callable[[], list[dict[str, Any]]]:
        """Plan and decode the poster and start its writers; returns what collects its rows (at once
        when it failed before its tiles)."""
        styles = list(poster.rows)
        try:
            first, stall = self.actors[0], self.settings.stall_timeout

            def ask_plan() -> Any:
                return ray_actors.call(first, "plan", poster.height, poster.width, styles)

            plan = ray_actors.result_or_restart(ask_plan(), first, stall, resubmit=ask_plan)

            inputs: list[Any] = []

            def prepare() -> Any:  # asked again, every handle is replaced: the writers get the answered ones
                inputs[:] = ray_actors.call(first, "prepare", poster.uri, plan, styles, poster.mask_uri,
                                            returns=1 + plan.tiles)
                return inputs[0]

            meta = ray_actors.result_or_restart(prepare(), first, stall, resubmit=prepare)
        except Exception as exc:  # the actors are gone (restarts spent), the network cannot tile
            error_type, error = getattr(exc, "error_type", POSTER_ERROR), exception_line(exc, 500)
            return lambda: [_failed(row, error_type, error) for row in poster.rows.values()]
        if meta.error:
            return lambda: [_failed(row, meta.error_type, meta.error) for row in poster.rows.values()]
        decoded = {"input_bytes": meta.input_bytes, "decode_ms": meta.decode_ms, "pixel_format": meta.format.label,
                   "color_profile": meta.format.profile}
        writers = {style: ray_runtime.call_remote(write_poster, self.settings, plan, style, poster.rel_path, inputs,
                                                  self.actors, k)
                   for k, style in enumerate(styles)}  # every style's writer starts before the first is waited on
        return functools.partial(self._collect, poster, decoded, writers, plan.tiles)

    def _collect(self, poster: Poster, decoded: dict[str, Any], writers: dict[str, Any], tiles: int
                 ) -> list[dict[str, Any]]:
        """The poster's rows once its writers answer: ok with the tiles' timings, or the writer's error."""
        rows = []
        for style in poster.rows:
            row = {**poster.rows[style], **decoded}
            try:
                written = ray_actors.results(writers[style])
            except Exception as exc:  # the writer's process died
                written = {"error_type": POSTER_ERROR, "error": exception_line(exc, 500)}
            if "error" in written:
                rows.append(_failed(row, written["error_type"], written["error"]))
                continue
            ran = written.pop("tile_infos")
            self.stats.tiles += len(ran)
            self.stats.tile_s += sum(info["ms"] for info in ran) / 1000
            self.stats.tiles_by_actor.update(info["actor"] for info in ran)
            rows.append({**row, **written, "status": "ok", "error_type": "", "error": "", "tiles": tiles,
                         "forward_images": 1, "stylize_ms": sum(info["ms"] for info in ran)})
        return rows


def posters_of(rows: list[dict[str, Any]]) -> Iterator[Poster]:
    """Posters from their held-back rows (each (input, style) once), in manifest order."""
    by_idx: dict[int, Poster] = {}
    for row in rows:
        poster = by_idx.setdefault(row["idx"], Poster(row["idx"], row["input_uri"], row["rel_path"], row["height"],
                                                      row["width"], row.get("mask_uri") or ""))
        poster.rows.setdefault(row["style"], dict(row))  # idx stays: the driver counts rows by it
    yield from (by_idx[i] for i in sorted(by_idx))
