"""The run's style checkpoints: read once on the driver, checked where torch is."""

from __future__ import annotations

from jobs.common.outcome import JobError
from jobs.common.run_settings import RunSettings
from jobs.common.storage import read_bytes


def read_style_blobs(settings: RunSettings) -> dict[str, bytes]:
    """Read every checkpoint once on the driver (fail fast, and actors need not hit storage again)."""
    opts = settings.storage_options
    blobs: dict[str, bytes] = {}
    for name, uri in settings.styles.items():
        try:
            blobs[name] = read_bytes(uri, opts)
        except FileNotFoundError:
            raise JobError(f"style {name!r}: checkpoint not found: {uri}") from None
    return blobs


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
