"""The stylize stage's actor: style networks + VGG loss network, built once per actor process."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import numpy as np
import torch

from stylize_core.checkpoint import StyleModel, load_style_model
from stylize_core.gatys import GatysConfig
from stylize_core.gatys_stylizer import GatysStylizer
from stylize_core.host import retain_freed_memory
from stylize_core.image_io import decode_image
from stylize_core.loss_meter import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, LossMeter
from stylize_core.stylizer import Stylizer, StylizerConfig, resolve_device
from stylize_core.vgg import VGGFeatures

from .settings import JobSettings
from .stages import EMPTY_IMAGE, encode_write, read_decode, storage_options
from .storage import read_bytes


def load_styles(settings: JobSettings, blobs: dict[str, bytes] | None = None) -> dict[str, StyleModel]:
    """Each style's checkpoint, from pre-read bytes when the driver already fetched them."""
    opts = storage_options(settings)
    opener: Callable[[str], bytes] = lambda uri: read_bytes(uri, opts)  # noqa: E731
    return {
        name: load_style_model(uri, opener=opener, data=(blobs or {}).get(name))
        for name, uri in settings.styles.items()
    }


def load_style_images(settings: JobSettings) -> dict[str, np.ndarray]:
    opts = storage_options(settings)
    return {name: decode_image(read_bytes(uri, opts)) for name, uri in settings.style_images.items()}


class StylizeActor:
    """Holds the style networks and the VGG loss network (built once); stylises batches of rows."""

    def __init__(self, settings: JobSettings, style_blobs: dict[str, bytes] | None = None) -> None:
        self.settings = settings
        retain_freed_memory()  # reuse activation buffers instead of page-faulting them in per image
        device = resolve_device(settings.device)
        if device.type == "cpu":
            threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // max(1, settings.actors or 1))
            torch.set_num_threads(threads)
        self.device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        opts = storage_options(settings)
        opener = lambda uri: read_bytes(uri, opts)  # noqa: E731
        checkpoints = load_styles(settings, style_blobs)
        style_images = load_style_images(settings)
        for name, sm in checkpoints.items():
            if sm.style_image is not None:
                style_images.setdefault(name, sm.style_image)
        self.sha256 = {name: sm.sha256 for name, sm in checkpoints.items()}
        for name, uri in settings.style_images.items():  # optimize-only styles: identified by their image
            self.sha256.setdefault(name, hashlib.sha256(opener(uri)).hexdigest())
        vgg = None
        if settings.metrics:
            vgg = VGGFeatures(settings.vgg, DEFAULT_CONTENT_LAYERS + DEFAULT_STYLE_LAYERS, settings.vgg_weights, opener=opener)
        self.loss_model = vgg.loss_model if vgg is not None else ""
        if settings.method == "optimize":
            meter = None
            if vgg is not None:
                meter = LossMeter(vgg, style_images, short_side=settings.metrics_size, device=resolve_device(settings.device))
            missing = [n for n in settings.style_names if n not in style_images]
            if missing:
                raise ValueError(f"--method optimize needs a style image for {missing}: pass --style-image NAME=URI")
            gatys = GatysConfig(
                steps=settings.optimize_steps, pyramid_levels=settings.optimize_levels,
                optimizer=settings.optimizer, preserve_color=settings.preserve_color,
            )
            self.stylizer = GatysStylizer(
                {n: style_images[n] for n in settings.style_names}, gatys, arch=settings.vgg,
                weights=settings.vgg_weights, opener=opener, device=settings.device,
                strength=settings.strength, meter=meter,
            )
            self.loss_model = self.stylizer.loss_model
        else:
            config = StylizerConfig(
                device=settings.device, channels_last=settings.channels_last, bf16=settings.bf16,
                metrics=settings.metrics, metrics_short_side=settings.metrics_size, strength=settings.strength,
                preserve_color=settings.preserve_color, max_batch=settings.batch_size,
            )
            self.stylizer = Stylizer(checkpoints, vgg, config, style_images=style_images)

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

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        marker = self.settings.crash_once_marker
        if marker and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
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
                cols["model_sha256"].append(self.sha256[style])
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
        out = {k: np.asarray(batch[k])[rows] for k in ("idx", "uri", "rel_path", "input_bytes", "width", "height", "decode_ms")
               if k in batch}  # idx: the row's manifest index, by which the driver counts rows exactly once
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
        return encode_write(super().__call__(read_decode(batch, self.settings)), self.settings)
