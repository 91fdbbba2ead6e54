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
from stylize_core.image_encode import encode_image_full
from stylize_core.image_formats import PixelFormat, decode_image_full, pack_pixels, unpack_pixels
from stylize_core.image_io import FORMAT_EXTENSIONS, ImageDecodeError, allow_pixels, probe_size
from stylize_core.masks import MaskError

from jobs.batch.settings import JobSettings
from jobs.common.masks import MASK_ERROR, mask_uri_for, read_mask
from jobs.common.metrics_schema import READ, WRITE, StageRows, stage_columns
from jobs.common.run_settings import background_rgb
from jobs.common.storage import UnsafePathError, exists, output_uri, read_bytes, write_bytes_atomic

EMPTY_IMAGE = np.zeros((0, 0, 3), dtype=np.uint8)
NO_MASK = np.zeros((0, 0, 0), dtype=np.uint16)
# status of an input the read stage leaves undecoded for the poster phase (jobs.batch.poster): its rows pass
# through the actor untouched, and the driver writes them once the poster's tiles are joined
POSTER = "poster"
# error_type of rows from an actor that could not build its stylizer: the driver stops the run (exit 2)
SETUP_ERROR = "setup_error"


def output_key(settings: JobSettings, rel_path: str, style: str) -> str:
    return output_uri(settings.output, style, rel_path, FORMAT_EXTENSIONS[settings.format])


def poster_size(data: bytes, settings: JobSettings, mask_uri: str) -> tuple[int, int] | None:
    """The file's (height, width) when the input runs as a poster, else None: ``--split-pixels`` is on,
    the run has no ``--regions`` styles (those render in one actor call; a plain mask is composited tile
    by tile) and the input decodes (after ``--max-side``) to more pixels than that. From the header
    alone; a file the header guards refuse (a bomb over ``--max-pixels``, a corrupt header) raises as a
    decode would."""
    if not settings.split_pixels or settings.regions:
        return None
    full, decoded = probe_size(data, max_pixels=settings.max_pixels, max_side=settings.max_side)
    return full if decoded[0] * decoded[1] > settings.split_pixels else None


def read_decode(batch: dict[str, np.ndarray], settings: JobSettings) -> dict[str, np.ndarray]:
    """uri, rel_path -> one row per input: the decoded image or an error; which styles remain to do.

    ``idx`` (the row's place in the run's manifest) passes through: the driver counts rows by it.
    ``width``/``height`` are the file's own (from its header); the image is already shrunk to
    ``--max-side``, JPEGs by decoding at a reduced scale. ``image`` is (H, W, 3) uint8, or from a 16-bit
    file its uint16 samples as (H, W, 6) bytes (:func:`~stylize_core.image_formats.pack_pixels`); ``pixfmt`` is what else the output needs (alpha, grey, profile, metadata:
    :class:`stylize_core.image_formats.PixelFormat` as bytes), empty for plain 8-bit RGB inputs, so those
    rows carry nothing new."""
    opts = settings.storage_options
    allow_pixels(settings.max_pixels)  # a --max-pixels above Pillow's own limit: Pillow must not refuse
    uris = [str(u) for u in batch["uri"]]
    rel_paths = [str(r) for r in batch["rel_path"]]
    idx = batch.get("idx")
    planned = [str(t).split(",") if str(t) else [] for t in batch["todo_styles"]] if "todo_styles" in batch else None
    given_masks = [str(m or "") for m in batch["mask_uri"]] if "mask_uri" in batch else [""] * len(uris)
    rows = StageRows(READ, extra=("idx", "image", "todo_styles", "mask", "pixfmt"))
    for n, (uri, rel) in enumerate(zip(uris, rel_paths)):
        start = time.perf_counter()
        todo = settings.style_names if planned is None else [s for s in settings.style_names if s in planned[n]]
        status, error_type, error, image, nbytes, size = "ok", "", "", EMPTY_IMAGE, -1, (-1, -1)
        mask_uri, mask = mask_uri_for(settings, rel, given_masks[n]), NO_MASK
        fmt = PixelFormat()
        try:
            keys = {style: output_key(settings, rel, style) for style in settings.style_names}
            if settings.skip_existing:
                todo = [style for style in todo if not exists(keys[style], opts)]
            if todo:
                data = read_bytes(uri, opts)
                nbytes = len(data)
                poster = poster_size(data, settings, mask_uri)
                if poster is not None:  # tiles over the actor pool (jobs.batch.poster)
                    status, size = POSTER, poster
                else:
                    decoded = decode_image_full(data, max_pixels=settings.max_pixels, max_side=settings.max_side)
                    image, size, fmt = pack_pixels(decoded.pixels), decoded.size, decoded.format
        except UnsafePathError as exc:
            status, error_type, error = "error", "unsafe_path", str(exc)
        except ImageDecodeError as exc:
            status, error_type, error = "error", exc.error_type, str(exc)
        except FileNotFoundError as exc:
            status, error_type, error = "error", "not_found", f"input disappeared before it was read: {exc}"
        except Exception as exc:  # storage/network/permission: the row says why, the run goes on
            status, error_type, error = "error", "read_error", f"{type(exc).__name__}: {exc}"
        if mask_uri and status == "ok" and image.size:  # read where the input is, so the actor only composites
            try:
                mask = read_mask(mask_uri, settings, size, image.shape[:2])
            except MaskError as exc:
                status, error_type, error, image = "error", MASK_ERROR, str(exc), EMPTY_IMAGE
        rows.append(
            idx=int(idx[n]) if idx is not None else n, uri=uri, rel_path=rel, input_bytes=nbytes, status=status,
            error_type=error_type, error=error, width=int(size[1]), height=int(size[0]), image=image,
            decode_ms=(time.perf_counter() - start) * 1000, todo_styles=",".join(todo), mask_uri=mask_uri,
            mask=mask, pixel_format=fmt.label if status == "ok" and image.size else "",
            color_profile=fmt.profile if status == "ok" else "", pixfmt=b"" if fmt.plain else fmt.to_bytes(),
        )
    out = {k: np.array(v) for k, v in rows.cols.items() if k not in ("image", "mask", "pixfmt")}
    # A run without masks carries no mask column at all: nothing extra crosses the object store.
    for key in ("image", "mask", "pixfmt") if settings.mask_prefix or "mask_uri" in batch else ("image", "pixfmt"):
        column = np.empty(len(rows.cols[key]), dtype=object)
        column[:] = rows.cols[key]
        out[key] = column
    return out


def encode_write(batch: dict[str, np.ndarray], settings: JobSettings) -> dict[str, np.ndarray]:
    """Encode and atomically write each ok output; returns metrics rows (no pixels)."""
    opts = settings.storage_options
    n = len(batch["uri"])
    status = [str(s) for s in batch["status"]]
    error_type = [str(s) for s in batch["error_type"]]
    error = [str(s) for s in batch["error"]]
    out_uris, encode_ms, output_bytes, alpha = [""] * n, [float("nan")] * n, [-1] * n, [""] * n
    formats = batch.get("pixfmt")
    background = background_rgb(settings.background)
    for i in range(n):
        if status[i] not in ("ok", "skipped"):
            continue
        try:
            out_uris[i] = output_key(settings, str(batch["rel_path"][i]), str(batch["style"][i]))
            if status[i] == "ok":
                start = time.perf_counter()
                fmt = PixelFormat.from_bytes(bytes(formats[i])) if formats is not None and len(formats[i]) else PixelFormat()
                data, alpha[i] = encode_image_full(unpack_pixels(np.asarray(batch["out_image"][i])), fmt, settings.format,
                                                   settings.quality, background=background)
                write_bytes_atomic(out_uris[i], data, opts)
                encode_ms[i] = (time.perf_counter() - start) * 1000
                output_bytes[i] = len(data)
        except Exception as exc:
            status[i], error_type[i], error[i] = "error", "write_error", f"{type(exc).__name__}: {exc}"
    out = {k: v for k, v in batch.items() if k not in ("out_image", "pixfmt")}
    out.update(stage_columns(
        WRITE, status=status, error_type=error_type, error=error,
        output_uri=out_uris, encode_ms=encode_ms, output_bytes=output_bytes, alpha=alpha,
    ))
    out["run_id"] = np.array([settings.run_id] * n)
    return out
