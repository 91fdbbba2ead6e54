"""The run's style checkpoints: read once on the driver, checked where torch is.

Every file a run depends on (checkpoint, style image, VGG weights) and its input prefix fail the
same way when unusable: :class:`JobError` (exit status 2) with the one line of
:mod:`stylize_core.file_errors`, its URIs redacted. The driver checks what it can without torch
(reading, empty, an HTML page, a cut-short archive) before Ray starts; what needs torch (the wrong
network) is found by the builder in a Ray task or the actors, with the same message.
"""

from __future__ import annotations

from typing import Any

from stylize_core.file_errors import FileUnusable, sniff_checkpoint, unusable
from stylize_core.style_encoding import ENCODED_METHODS, StyleEncodings

from jobs.common.outcome import JobError
from jobs.common.run_settings import RunSettings
from jobs.common.storage import StorageOptions, read_bytes, redact


def one_line(text: str) -> str:
    """``text`` on one line with its URIs redacted, word by word: a signed URL's query, redacted
    whole, would swallow the ``:`` that ends the URI in ``cannot use checkpoint URI: reason``."""
    return " ".join(redact(w[:-1]) + ":" if w.endswith(":") else redact(w) for w in text.split())


def stop(problem: FileUnusable | str, subject: str = "") -> JobError:
    """The JobError for an unusable file (or a builder's one-line message), its URIs redacted."""
    return JobError(one_line(problem.line(subject) if isinstance(problem, FileUnusable) else problem))


def read_file(what: str, uri: str, options: StorageOptions | None, subject: str = "") -> bytes:
    """The bytes of ``uri`` or JobError saying why they cannot be read (``what``: checkpoint, style image...)."""
    try:
        return read_bytes(uri, options)
    except Exception as exc:  # OSErrors, and what remote filesystems raise (an HTTP 403 is no OSError)
        raise stop(unusable(what, uri, exc), subject) from None


def read_checkpoint(name: str, uri: str, options: StorageOptions | None) -> bytes:
    """Style ``name``'s checkpoint bytes, or JobError when they cannot be read or cannot be a checkpoint."""
    data = read_file("checkpoint", uri, options, f"style {name!r}")
    if problem := sniff_checkpoint(data):
        raise stop(FileUnusable("checkpoint", uri, *problem), f"style {name!r}")
    return data


def input_unusable(uri: str, exc: BaseException) -> JobError:
    """JobError for an input prefix, image or manifest that cannot be listed or read: the storage's
    error classified, or what the listing or manifest reader objected to."""
    if isinstance(exc, OSError) or not isinstance(exc, ValueError):
        return stop(unusable("input", uri, exc))
    return stop(FileUnusable("input", uri, "unreadable", str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                             "pass a prefix of images, one image, or a .parquet/.csv manifest"))


def read_style_blobs(settings: RunSettings) -> dict[str, bytes]:
    """Read every checkpoint once on the driver (fail fast, and actors need not hit storage again)."""
    opts = settings.storage_options
    return {name: read_checkpoint(name, uri, opts) for name, uri in settings.styles.items()}


def check_style_blobs(settings: RunSettings, blobs: dict[str, bytes]) -> str | None:
    """The first checkpoint that cannot be loaded (or a multi-style one without its --mix), as the
    builder's one-line message; None when all load.

    Runs as a Ray task: loading needs torch, which would add ~470 MiB to the driver's RSS (measured)."""
    from stylize_core.builder import SetupError, load_checkpoints

    by_uri = {settings.styles[name]: data for name, data in blobs.items()}
    try:
        load_checkpoints(settings.styles, by_uri.__getitem__, getattr(settings, "mixes", None))
    except SetupError as exc:
        return str(exc)
    return None


def encode_style_images(settings: RunSettings) -> StyleEncodings | str | None:
    """What the run's method derives from its style images (AdaIN's statistics, the predictor's
    embeddings, the metrics' Gram targets), computed once for the whole run; the builder's one-line
    message when a model or style image is unusable; None when the method derives nothing.

    Runs as a Ray task (torch): the driver passes the result to every actor (Ray keeps one copy in its
    object store) and records it in the run summary. It runs on CPU whatever ``--device`` says: the
    encodings are numpy arrays, and the task may land on a node without a GPU."""
    import dataclasses

    from stylize_core.builder import SetupError
    from stylize_core.registry import encode_styles

    from jobs.common.stylizer_spec import run_stylizer_spec

    spec = dataclasses.replace(run_stylizer_spec(settings, 1), device="cpu")
    try:
        return encode_styles(spec, lambda uri: read_bytes(uri, settings.storage_options))
    except SetupError as exc:
        return str(exc)


def start_style_encoding(settings: RunSettings) -> Any:
    """Start :func:`encode_style_images` as a Ray task when the run's method encodes its style images
    (a handle for :func:`style_encodings`), else None. Ray must be started."""
    from jobs.common import ray_runtime

    return ray_runtime.call_remote(encode_style_images, settings) if settings.method in ENCODED_METHODS else None


def style_encodings(handle: Any) -> StyleEncodings | None:
    """The encodings the task behind ``handle`` made (None for no task), or JobError (exit 2) with the
    builder's one line when a model or style image is unusable."""
    from jobs.common import ray_runtime

    encodings = ray_runtime.result(handle) if handle is not None else None
    if isinstance(encodings, str):
        raise stop(encodings)
    return encodings
