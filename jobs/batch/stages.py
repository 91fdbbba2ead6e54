"""The batch job's read/decode and encode/write stages as plain functions, run by :mod:`jobs.batch.driver`
through Ray Data (or inside the actor, :mod:`jobs.batch.actor`, when the stages are fused).

Nothing here imports Ray or torch: each stage maps a numpy batch (``dict[str, np.ndarray]``) to
another, so it is testable without a cluster. Every input leaves the read stage as exactly one row, and the
stylize stage turns each row into exactly one row per style, errors included.
"""

from __future__ import annotations

import time

import numpy as np

# Pillow + NumPy only: these stages run in CPU task workers that must not pay for importing torch.
from stylize_core.image_io import FORMAT_EXTENSIONS, ImageDecodeError, decode_image_sized, encode_image

from jobs.batch.settings import JobSettings
from jobs.common.metrics_schema import READ, WRITE, StageRows, stage_columns
from jobs.common.storage import UnsafePathError, exists, output_uri, read_bytes, write_bytes_atomic

EMPTY_IMAGE = np.zeros((0, 0, 3), dtype=np.uint8)
# error_type of rows from an actor that could not build its stylizer: the driver stops the run (exit 2)
SETUP_ERROR = "setup_error"


def output_key(settings: JobSettings, rel_path: str, style: str) -> str:
    return output_uri(settings.output, style, rel_path, FORMAT_EXTENSIONS[settings.format])


def read_decode(batch: dict[str, np.ndarray], settings: JobSettings) -> dict[str, np.ndarray]:
    """uri, rel_path -> one row per input: the decoded image or an error; which styles remain to do.

    ``idx`` (the row's place in the run's manifest) passes through: the driver counts rows by it.
    ``width``/``height`` are the file's own (from its header); the image is already shrunk to
    ``--max-side``, JPEGs by decoding at a reduced scale."""
    opts = settings.storage_options
    uris = [str(u) for u in batch["uri"]]
    rel_paths = [str(r) for r in batch["rel_path"]]
    idx = batch.get("idx")
    planned = [str(t).split(",") if str(t) else [] for t in batch["todo_styles"]] if "todo_styles" in batch else None
    rows = StageRows(READ, extra=("idx", "image", "todo_styles"))
    for n, (uri, rel) in enumerate(zip(uris, rel_paths)):
        start = time.perf_counter()
        todo = settings.style_names if planned is None else [s for s in settings.style_names if s in planned[n]]
        status, error_type, error, image, nbytes, size = "ok", "", "", EMPTY_IMAGE, -1, (-1, -1)
        try:
            keys = {style: output_key(settings, rel, style) for style in settings.style_names}
            if settings.skip_existing:
                todo = [style for style in todo if not exists(keys[style], opts)]
            if todo:
                data = read_bytes(uri, opts)
                nbytes = len(data)
                image, size = decode_image_sized(data, max_pixels=settings.max_pixels, max_side=settings.max_side)
        except UnsafePathError as exc:
            status, error_type, error = "error", "unsafe_path", str(exc)
        except ImageDecodeError as exc:
            status, error_type, error = "error", exc.error_type, str(exc)
        except FileNotFoundError as exc:
            status, error_type, error = "error", "not_found", f"input disappeared before it was read: {exc}"
        except Exception as exc:  # storage/network/permission: the row says why, the run goes on
            status, error_type, error = "error", "read_error", f"{type(exc).__name__}: {exc}"
        rows.append(
            idx=int(idx[n]) if idx is not None else n, uri=uri, rel_path=rel, input_bytes=nbytes, status=status,
            error_type=error_type, error=error, width=int(size[1]), height=int(size[0]), image=image,
            decode_ms=(time.perf_counter() - start) * 1000, todo_styles=",".join(todo),
        )
    out = {k: np.array(v) for k, v in rows.cols.items() if k != "image"}
    images = np.empty(len(rows.cols["image"]), dtype=object)
    images[:] = rows.cols["image"]
    out["image"] = images
    return out


def encode_write(batch: dict[str, np.ndarray], settings: JobSettings) -> dict[str, np.ndarray]:
    """Encode and atomically write each ok output; returns metrics rows (no pixels)."""
    opts = settings.storage_options
    n = len(batch["uri"])
    status = [str(s) for s in batch["status"]]
    error_type = [str(s) for s in batch["error_type"]]
    error = [str(s) for s in batch["error"]]
    out_uris, encode_ms, output_bytes = [""] * n, [float("nan")] * n, [-1] * n
    for i in range(n):
        if status[i] not in ("ok", "skipped"):
            continue
        try:
            out_uris[i] = output_key(settings, str(batch["rel_path"][i]), str(batch["style"][i]))
            if status[i] == "ok":
                start = time.perf_counter()
                data = encode_image(np.asarray(batch["out_image"][i]), settings.format, settings.quality)
                write_bytes_atomic(out_uris[i], data, opts)
                encode_ms[i] = (time.perf_counter() - start) * 1000
                output_bytes[i] = len(data)
        except Exception as exc:
            status[i], error_type[i], error[i] = "error", "write_error", f"{type(exc).__name__}: {exc}"
    out = {k: v for k, v in batch.items() if k != "out_image"}
    out.update(stage_columns(
        WRITE, status=status, error_type=error_type, error=error,
        output_uri=out_uris, encode_ms=encode_ms, output_bytes=output_bytes,
    ))
    out["run_id"] = np.array([settings.run_id] * n)
    return out
