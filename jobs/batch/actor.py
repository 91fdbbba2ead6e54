"""The stylize stage's actor: style networks + VGG loss network, built once per actor process."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import threading
from typing import Any

import numpy as np
import torch

from stylize_core.builder import SetupError
from stylize_core.device_errors import is_fatal_device_error
from stylize_core.enhance_eval import EVALUATION_KEYS, prepare
from stylize_core.enhance_net import OutputTooLarge, check_output_pixels
from stylize_core.host import retain_freed_memory
from stylize_core.image_formats import composite_any, eight_bit, network_input, pack_pixels, unpack_pixels
from stylize_core.masks import MaskError
from stylize_core.registry import build_stylizer
from stylize_core.sampling import sampled
from stylize_core.style_encoding import StyleEncodings
from stylize_core.style_result import resolve_device

from jobs.common.attempts import begin_attempt, end_attempt
from jobs.common.planning import ActorPlan
from jobs.common.stylizer_spec import run_stylizer_spec
from jobs.batch.settings import JobSettings
from jobs.batch.stages import EMPTY_IMAGE, POSTER, SETUP_ERROR, encode_write, read_decode
from jobs.common.masks import MASK_ONE
from jobs.common.metrics_schema import READ, STYLIZE, StageRows, blank_rows, stage_keys
from jobs.common.storage import read_bytes


EXIT_FATAL_DEVICE_ERROR = 3


def _exit_for_replacement(exc: BaseException) -> None:
    """A sticky device error poisons this process's CUDA context: every later batch would fail too.
    Exit, so that Ray starts a fresh actor and retries the batch (counted by the attempt ledger)."""
    print(f"[stylize] fatal device error, exiting so Ray replaces this actor: {type(exc).__name__}: {exc}",
          file=sys.stderr, flush=True)
    os._exit(EXIT_FATAL_DEVICE_ERROR)


def batch_key(uris: np.ndarray) -> str:
    """A batch's identity across Ray's retries: the same inputs give the same key."""
    return hashlib.blake2b("\0".join(map(str, uris)).encode(), digest_size=16).hexdigest()


class StylizeActor:
    """Holds the style networks and the VGG loss network (built once); stylises batches of rows.

    A batch that keeps killing its actor (a sticky CUDA error such as an illegal address or ECC
    error makes the actor exit so Ray replaces it) is retried by Ray; once it has been started more
    than ``max_actor_crashes`` times, its images run one at a time, and an image started more than
    that many times becomes a ``stylize_error`` row of its own. No input can loop forever.
    """

    def __init__(self, settings: JobSettings, plan: ActorPlan, attempts: Any = None, fused: bool = False,
                 encodings: StyleEncodings | None = None) -> None:
        self.settings = settings
        self.attempts = attempts  # the run's attempt counts (jobs.common.attempts.attempt_ledger)
        # fused: read/decode and encode/write inside this call, for pools of CPU actors. Without a GPU to
        # keep fed, separate decode and encode tasks only compete with the network for the same cores,
        # and each task worker Ray starts costs seconds of imports; one stage avoids both.
        self.fused = fused
        self._one_at_a_time = threading.Lock()
        retain_freed_memory()  # reuse activation buffers instead of page-faulting them in per image
        if resolve_device(settings.device).type == "cpu":
            threads = plan.torch_threads or max(1, (os.cpu_count() or 1) // max(1, plan.max_actors))
            torch.set_num_threads(threads)
        opts = settings.storage_options
        # A constructor that raises leaves Ray retrying and logging tracebacks; instead every row this
        # actor is given says why it cannot run, and the driver stops with that one line (exit 2).
        self.setup_error = ""
        try:
            # encodings: the style images' encodings the driver's task made once for the run (adain, predict)
            built = build_stylizer(run_stylizer_spec(settings, plan.window, encodings), lambda uri: read_bytes(uri, opts))
        except SetupError as exc:
            self.setup_error = str(exc)
            self.built = None
            return
        self.built = built
        self.stylizer = built.stylizer

    def _run(self, images: list[np.ndarray], styles: list[str], measure: list[bool]) -> dict[str, list]:
        """``{style: [result per image]}``: each input uploaded once, its content features computed once."""
        try:
            return self.stylizer.stylize_many(images, styles, measure=measure)
        except Exception as exc:
            if is_fatal_device_error(exc):
                _exit_for_replacement(exc)
            raise

    def _run_each(self, images: list[np.ndarray], styles: list[str], measure: list[bool], keys: list[str] | None = None
                  ) -> dict[str, list]:
        """Image by image, so one bad input fails alone (an exception in place of its results). With
        ``keys`` (a batch that killed its actor too often), each image is counted in the attempt
        ledger, and one started more than --max-actor-crashes times is not run again."""
        cap = self.settings.max_actor_crashes
        out: dict[str, list] = {s: [] for s in styles}
        for n, image in enumerate(images):
            started = self._begin(keys[n]) if keys else 0
            try:
                if started > cap:
                    raise RuntimeError(f"this input killed the stylize actor {started - 1} times "
                                       f"(--max-actor-crashes {cap}); not retried")
                found = {s: r[0] for s, r in self._run([image], styles, [measure[n]]).items()}
            except Exception as exc:  # e.g. out of memory on one huge image
                found = {s: exc for s in styles}
            if keys:
                self._end(keys[n])
            for s in styles:
                out[s].append(found[s])
        return out

    def _stylize_safely(self, images: list[np.ndarray], styles: list[str], measure: list[bool]) -> dict[str, list]:
        """Results per style and image; a failing batch is retried image by image so one bad input fails alone."""
        try:
            return self._run(images, styles, measure)
        except Exception:
            if len(images) == 1:
                raise
        return self._run_each(images, styles, measure)

    def _begin(self, key: str) -> int:
        return begin_attempt(self.attempts, key) if self.attempts is not None else 1

    def _end(self, key: str) -> None:
        if self.attempts is not None:
            end_attempt(self.attempts, key)

    def _setup_error_rows(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One ``setup_error`` row per input x style, nothing read or stylised."""
        styles = self.settings.style_names
        rows = np.repeat(np.arange(len(batch["uri"])), len(styles))
        out = blank_rows(len(rows))
        out.update({k: np.asarray(batch[k])[rows] for k in ("uri", "rel_path")})
        out.update(style=np.array(styles * len(batch["uri"])), status=np.full(len(rows), "error"),
                   error_type=np.full(len(rows), SETUP_ERROR), error=np.full(len(rows), self.setup_error))
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.setup_error:  # nothing to read for: the driver stops at the first such row
            return self._setup_error_rows(batch)
        # One batch at a time, even if Ray hands this actor several at once: the network would only
        # share the device, and a batch that kills the process must not take a neighbour's attempt
        # count down with it (the attempt ledger would blame an innocent input).
        with self._one_at_a_time:
            if self.fused:
                return encode_write(self._stylize_rows(read_decode(batch, self.settings)), self.settings)
            return self._stylize_rows(batch)

    def _render_region(self, batch: dict[str, np.ndarray], i: int, name: str) -> Any:
        """Row ``i`` in regions style ``name`` (stylize_core.region_stylizer), or the exception saying why not."""
        try:
            weights = region_planes(batch, i, name, len(self.settings.regions[name]))
            return self.built.regions.render(network_input(_pixels(batch, i), self.built.regions), weights, name)
        except Exception as exc:  # a MaskError is a mask_error row; anything else a stylize_error row
            if is_fatal_device_error(exc):
                _exit_for_replacement(exc)
            return exc

    def _too_large(self, batch: dict[str, np.ndarray], status: list) -> dict[tuple[int, str], Any]:
        """(row, style) -> OutputTooLarge for inputs whose output at a style's scale exceeds --max-pixels."""
        refused: dict[tuple[int, str], Any] = {}
        for style, scale in getattr(self.stylizer, "scales", {}).items():
            for i, image in enumerate(batch["image"]):
                if status[i] == "ok" and scale > 1:
                    try:
                        check_output_pixels(*np.asarray(image).shape[:2], scale, self.settings.max_pixels)
                    except OutputTooLarge as exc:
                        refused[(i, style)] = exc
        return refused

    def _evaluate(self, batch: dict[str, np.ndarray], todo: list[list[str]], status: list, refused: dict
                  ) -> tuple[dict[tuple[int, str], Any], dict[tuple[int, str], Any]]:
        """--evaluate: each enhancement style restores a copy of its inputs degraded as it was trained for
        (seeded by the input URI); ``(results, scores)`` keyed by (row, style)."""
        results: dict[tuple[int, str], Any] = {}
        scores: dict[tuple[int, str], Any] = {}
        if not self.settings.evaluate:
            return results, scores
        uris = [str(u) for u in batch["uri"]]
        for style, sm in self.built.models.items():
            if sm.enhance is None:
                continue
            prepared = {}
            for i in range(len(uris)):
                if status[i] == "ok" and style in todo[i] and (i, style) not in refused:
                    try:
                        prepared[i] = prepare(eight_bit(_pixels(batch, i)), sm.enhance.degradation, uris[i])
                    except ValueError as exc:  # too small to downscale by the network's scale
                        results[(i, style)] = exc
            idx = list(prepared)
            if not idx:
                continue
            measure = [sampled(uris[i], self.settings.metrics_sample) for i in idx]
            try:
                found = self._stylize_safely([prepared[i].degraded for i in idx], [style], measure)[style]
            except Exception as exc:
                found = [exc] * len(idx)
            for i, res in zip(idx, found):
                results[(i, style)] = res
                if not isinstance(res, Exception):
                    scores[(i, style)] = prepared[i].score(res.image)
        return results, scores

    def _stylize_rows(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Decoded rows -> one row per input x style with the output image (or the error)."""
        n = len(batch["uri"])
        key = batch_key(batch["uri"])
        isolate = self._begin(key) > self.settings.max_actor_crashes
        uris = [str(u) for u in batch["uri"]]
        status = list(batch["status"])
        todo = [str(t).split(",") if str(t) else [] for t in batch["todo_styles"]]
        # Rows that need the same styles share one call (usually all of them: todo differs only for
        # --skip-existing and nightly plans).
        groups: dict[tuple[str, ...], list[int]] = {}
        apart = self._too_large(batch, status)  # super-resolution outputs over --max-pixels
        evaluated, scores = self._evaluate(batch, todo, status, apart)  # --evaluate: run apart
        apart.update(evaluated)
        regions = self.settings.regions
        for i in range(n):
            styles = tuple(s for s in self.settings.style_names
                           if s in todo[i] and (i, s) not in apart and s not in regions)
            if status[i] == "ok" and styles:
                groups.setdefault(styles, []).append(i)
        results: dict[tuple[int, str], Any] = dict(apart)  # (row, style) done or refused apart
        for styles, idx in groups.items():
            # a 16-bit input runs in float (feed-forward networks) and comes back float32
            images = [network_input(_pixels(batch, i), self.stylizer) for i in idx]
            measure = [sampled(uris[i], self.settings.metrics_sample) for i in idx]
            try:
                if isolate:
                    found = self._run_each(images, list(styles), measure, [uris[i] for i in idx])
                else:
                    found = self._stylize_safely(images, list(styles), measure)
            except Exception as exc:
                found = {s: [exc] * len(idx) for s in styles}
            results.update({(i, s): r for s in styles for i, r in zip(idx, found[s])})
        for style in (s for s in self.settings.style_names if s in regions):  # already composited: not _masked
            for i in range(n):
                if status[i] == "ok" and style in todo[i]:
                    results[(i, style)] = self._render_region(batch, i, style)
        built = self.built
        labels = self.settings.label_styles
        made = StageRows(STYLIZE, extra=("row", "out_image"))
        for style in self.settings.style_names:
            for i in range(n):
                res = results.get((i, style))
                if not isinstance(res, Exception) and res is not None and style not in regions:
                    res = _masked(batch, i, labels.index(style), res)
                row_status, etype, err = status[i], str(batch["error_type"][i]), str(batch["error"][i])
                if row_status in ("ok", POSTER) and style not in todo[i]:
                    row_status = "skipped"
                elif isinstance(res, Exception):
                    etype = getattr(res, "error_type", "stylize_error")  # too_large: an output over --max-pixels
                    row_status, err = "error", f"{type(res).__name__}: {res}"
                ok = row_status == "ok"
                image = _compact(res.image) if ok else EMPTY_IMAGE
                nan = float("nan")
                made.append(
                    row=i, style=style, model_sha256=built.model_sha256[style], loss_model=built.loss_model,
                    status=row_status, error_type=etype, error=err, out_image=image,
                    out_width=int(image.shape[1]) if ok else -1, out_height=int(image.shape[0]) if ok else -1,
                    measured=int(res.measured) if ok else -1,  # 1/0, -1: no value
                    forward_images=int(res.forward_images) if ok else -1,
                    content_loss=float(res.content_loss) if ok else nan, style_loss=float(res.style_loss) if ok else nan,
                    tv_loss=float(res.tv_loss) if ok else nan,
                    style_stat_distance=float(res.style_stat_distance) if ok else nan,
                    style_stat_ratio=float(res.style_stat_ratio) if ok else nan, stylize_ms=float(res.stylize_ms) if ok else nan,
                    metrics_ms=float(res.metrics_ms) if ok and res.measured else nan,
                    device=built.device_name, backend=built.backend, arch=built.arch(style),
                    **_scores(scores.get((i, style)) if ok else None),
                    tiles=int(res.tiles) if ok else -1,
                )
        cols = made.cols
        rows = cols.pop("row")
        # The read stage's columns pass through, and idx: the row's manifest index, by which the driver
        # counts rows exactly once.
        # pixfmt: what the encoder needs of the input's pixel format (empty for plain 8-bit RGB).
        out = {k: np.asarray(batch[k])[rows] for k in ("idx", "pixfmt", *stage_keys(READ))
               if k in batch and k not in cols}
        out.update({k: np.array(v) for k, v in cols.items() if k != "out_image"})
        images_out = np.empty(len(rows), dtype=object)
        images_out[:] = cols["out_image"]
        out["out_image"] = images_out
        self._end(key)
        return out


def region_planes(batch: dict[str, np.ndarray], i: int, name: str, parts: int) -> np.ndarray:
    """Row ``i``'s (parts + 1, H, W) float32 region weights for regions style ``name`` (plane 0: the input),
    from the read stage's label planes; MaskError without a label mask or with labels beyond ``parts``."""
    mask = np.asarray(batch["mask"][i]) if "mask" in batch else np.zeros((0, 0, 0), np.uint16)
    if not mask.size:
        raise MaskError(f"regions style {name!r} needs a label mask for every input (a manifest's mask_uri or "
                        "--mask-prefix); this input has none")
    planes = mask.astype(np.float32) / MASK_ONE  # (labels, H, W): plane k-1 is label k's region
    if planes[parts:].any():
        top = next(k for k in range(len(planes), 0, -1) if planes[k - 1].any())
        raise MaskError(f"the label mask has values up to {top} but regions style {name!r} has {parts} part(s): "
                        "label k is its k-th style, 0 the input unchanged")
    styled = planes[:parts]
    return np.concatenate([np.clip(1 - styled.sum(0, keepdims=True), 0, 1), styled])


def _masked(batch: dict[str, np.ndarray], i: int, k: int, res: Any) -> Any:
    """Row ``i``'s result for the ``k``-th style over its input where its mask says (the read stage
    feathered the mask); the result itself without a mask, a MaskError when the sizes differ."""
    if "mask" not in batch or not np.asarray(batch["mask"][i]).size:
        return res
    mask = np.asarray(batch["mask"][i])  # (1 or styles, H, W) uint16
    weights = mask[k if len(mask) > 1 else 0].astype(np.float32) / MASK_ONE
    try:  # a 16-bit input is composited in float
        return dataclasses.replace(res, image=composite_any(_pixels(batch, i), res.image, weights))
    except MaskError as exc:  # e.g. a super-resolution network's larger output
        return exc


def _pixels(batch: dict[str, np.ndarray], i: int) -> np.ndarray:
    """Row ``i``'s input: (H, W, 3) uint8, or uint16 from a 16-bit file."""
    return unpack_pixels(np.asarray(batch["image"][i]))


def _compact(image: np.ndarray) -> np.ndarray:
    """An output as it travels to the encoder: uint8, or a float output (a 16-bit input's) as uint16 (half
    the bytes of float32 and still finer than 1/257 of a grey level), packed as the read stage packs it."""
    if image.dtype == np.uint8:
        return image
    return pack_pixels(np.clip(np.rint(image.astype(np.float32) * 257.0), 0, 65535).astype(np.uint16))


def _scores(evaluation: Any) -> dict[str, float]:
    """The --evaluate columns of a row (NaN: not evaluated)."""
    return {k: float(getattr(evaluation, k)) if evaluation is not None else float("nan") for k in EVALUATION_KEYS}
