"""The stylize stage's actor: style networks + VGG loss network, built once per actor process."""

from __future__ import annotations

import os

import numpy as np
import torch

from stylize_core.builder import SetupError, StylizerSpec, build_stylizer
from stylize_core.gatys import GatysConfig
from stylize_core.host import retain_freed_memory
from stylize_core.stylizer import resolve_device

from .settings import JobSettings
from .stages import EMPTY_IMAGE, SETUP_ERROR, encode_write, read_decode, storage_options
from .storage import read_bytes


def stylizer_spec(settings: JobSettings) -> StylizerSpec:
    """The stylizer the job's settings ask for (the local CLI builds its own spec the same way)."""
    return StylizerSpec(
        styles=settings.styles, style_images=settings.style_images, method=settings.method, vgg=settings.vgg,
        vgg_weights=settings.vgg_weights, metrics=settings.metrics, metrics_size=settings.metrics_size,
        device=settings.device, bf16=settings.bf16, channels_last=settings.channels_last,
        strength=settings.strength, preserve_color=settings.preserve_color, max_batch=settings.batch_size,
        gatys=GatysConfig(steps=settings.optimize_steps, pyramid_levels=settings.optimize_levels,
                          optimizer=settings.optimizer, preserve_color=settings.preserve_color),
        max_style_pixels=settings.max_pixels,
    )


class StylizeActor:
    """Holds the style networks and the VGG loss network (built once); stylises batches of rows."""

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings
        retain_freed_memory()  # reuse activation buffers instead of page-faulting them in per image
        if resolve_device(settings.device).type == "cpu":
            threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // max(1, settings.actors or 1))
            torch.set_num_threads(threads)
        opts = storage_options(settings)
        # A constructor that raises leaves Ray retrying and logging tracebacks; instead every row this
        # actor is given says why it cannot run, and the driver stops with that one line (exit 2).
        self.setup_error = ""
        try:
            built = build_stylizer(stylizer_spec(settings), lambda uri: read_bytes(uri, opts))
        except SetupError as exc:
            self.setup_error = str(exc)
            self.stylizer, self.sha256, self.loss_model, self.device_name = None, {}, "", ""
            return
        self.stylizer = built.stylizer
        self.sha256 = built.model_sha256
        self.loss_model = built.loss_model
        self.device_name = built.device_name

    def _run(self, images: list[np.ndarray], style: str):
        return self.stylizer.stylize(images, style)

    def _stylize_safely(self, images: list[np.ndarray], style: str) -> list:
        """Results per image; a failing batch is retried image by image so one bad input fails alone."""
        try:
            return self._run(images, style)
        except Exception:
            if len(images) == 1:
                raise
        results = []
        for image in images:
            try:
                results.append(self._run([image], style)[0])
            except Exception as exc:  # e.g. out of memory on one huge image
                results.append(exc)
        return results

    def _setup_error_rows(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One ``setup_error`` row per input x style, nothing read or stylised."""
        styles = self.settings.style_names
        rows = np.repeat(np.arange(len(batch["uri"])), len(styles))
        out = {k: np.asarray(batch[k])[rows] for k in ("uri", "rel_path")}
        out.update(style=np.array(styles * len(batch["uri"])), status=np.full(len(rows), "error"),
                   error_type=np.full(len(rows), SETUP_ERROR), error=np.full(len(rows), self.setup_error))
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.setup_error:
            return self._setup_error_rows(batch)
        n = len(batch["uri"])
        images = list(batch["image"])
        status = list(batch["status"])
        todo = [str(t).split(",") if str(t) else [] for t in batch["todo_styles"]]
        cols: dict[str, list] = {k: [] for k in (
            "row", "style", "model_sha256", "status", "error_type", "error", "out_image", "out_width", "out_height",
            "content_loss", "style_loss", "tv_loss", "stylize_ms", "metrics_ms",
        )}
        for style in self.settings.style_names:
            ready = [i for i in range(n) if status[i] == "ok" and style in todo[i]]
            try:
                results = dict(zip(ready, self._stylize_safely([np.asarray(images[i]) for i in ready], style)))
            except Exception as exc:
                results = {i: exc for i in ready}
            for i in range(n):
                res = results.get(i)
                row_status, etype, err = status[i], str(batch["error_type"][i]), str(batch["error"][i])
                if row_status == "ok" and style not in todo[i]:
                    row_status = "skipped"
                elif isinstance(res, Exception):
                    row_status, etype, err = "error", "stylize_error", f"{type(res).__name__}: {res}"
                ok = row_status == "ok"
                cols["row"].append(i)
                cols["style"].append(style)
                cols["model_sha256"].append(self.sha256.get(style, ""))
                cols["status"].append(row_status)
                cols["error_type"].append(etype)
                cols["error"].append(err)
                out = res.image if ok else EMPTY_IMAGE
                cols["out_image"].append(out)
                cols["out_width"].append(int(out.shape[1]) if ok else -1)
                cols["out_height"].append(int(out.shape[0]) if ok else -1)
                for key in ("content_loss", "style_loss", "tv_loss"):
                    cols[key].append(float(getattr(res, key)) if ok else float("nan"))
                cols["stylize_ms"].append(float(res.stylize_ms) if ok else float("nan"))
                cols["metrics_ms"].append(float(res.metrics_ms) if ok else float("nan"))
        rows = cols.pop("row")
        out = {k: np.asarray(batch[k])[rows] for k in ("uri", "rel_path", "input_bytes", "width", "height", "decode_ms")}
        out.update({k: np.array(v) for k, v in cols.items() if k != "out_image"})
        images_out = np.empty(len(rows), dtype=object)
        images_out[:] = cols["out_image"]
        out["out_image"] = images_out
        out["loss_model"] = np.array([self.loss_model] * len(rows))
        out["device"] = np.array([self.device_name] * len(rows))
        return out


class FusedStylizeActor(StylizeActor):
    """Read/decode, stylise and encode/write in one call, for pools of CPU actors.

    Without a GPU to keep fed, separate decode and encode tasks only compete with the network for
    the same cores, and each task worker Ray starts costs seconds of imports; one stage avoids both.
    """

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.setup_error:  # nothing to read for: the driver stops at the first such row
            return self._setup_error_rows(batch)
        return encode_write(super().__call__(read_decode(batch, self.settings)), self.settings)
