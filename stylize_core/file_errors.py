"""Why a file a run depends on cannot be used, said one way by every program.

A checkpoint, style image, VGG weights file or input prefix that cannot be read or used stops a
run before any work (exit status 2) with one line::

    style 'mosaic': cannot use checkpoint s3://models/mosaic.pth: access denied; grant read access ...

:func:`read_failure` classifies what reading raised (local OSErrors, S3's AccessDenied as s3fs's
PermissionError, an HTTP status from fsspec's HTTP filesystem); :func:`sniff_checkpoint` classifies
bytes that cannot be a checkpoint (empty, an HTML page, a cut-short archive) without torch, so
drivers that never import torch fail as early as the loaders do. Torch-free by design.
"""

from __future__ import annotations

import io
import zipfile

# reason -> what to do, by cause. The reasons are part of the message contract (docs/reference/exit-status.md).
HINTS = {
    "not found": "check the URI (a typo, or the file was never uploaded)",
    "directory": "name the file itself, not the folder that holds it",
    "denied": "grant this job read access to it (local file mode; S3: s3:GetObject, s3:ListBucket; HTTP: the "
              "server's rules) or run with credentials that have it",
    "empty": "upload the file again (the copy is empty)",
    "truncated": "upload the file again (the copy was cut short)",
    "not a checkpoint": "point at the .pth file itself (a URL to a web page, or another kind of file, is no "
                        "checkpoint)",
    "wrong network": "use a checkpoint saved by this project's training or pytorch/examples fast_neural_style",
    "unsafe": "use a checkpoint that holds only tensors (re-save it with torch.save(state_dict))",
    "unreadable": "check that the storage is reachable and retry",
    "not an image": "point at a JPEG, PNG or WebP image",
    "wrong weights": "pass a torchvision VGG state dict of the chosen --vgg architecture, or imagenet",
}


class FileUnusable(ValueError):
    """``what`` (checkpoint, style image, VGG weights, input) at ``uri`` cannot be used: ``cause``
    (a key of :data:`HINTS`), ``reason`` (what was found), ``hint`` (what to do)."""

    def __init__(self, what: str, uri: str, cause: str, reason: str, hint: str | None = None) -> None:
        self.what, self.uri, self.cause, self.reason = what, uri, cause, reason
        self.hint = hint if hint is not None else HINTS.get(cause, HINTS["unreadable"])
        super().__init__(self.line())

    def line(self, subject: str = "") -> str:
        """The one-line message; ``subject`` (e.g. ``style 'mosaic'``) leads it when given."""
        head = f"{subject}: " if subject else ""
        return f"{head}cannot use {self.what} {self.uri}: {self.reason}; {self.hint}"


def _status(exc: BaseException) -> int | None:
    """An HTTP status carried by the error (aiohttp's ClientResponseError, botocore's ClientError)."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code if isinstance(code, int) else None
    return None


def read_failure(exc: BaseException) -> tuple[str, str]:
    """``(cause, reason)`` of an error raised while reading or listing a file."""
    status = _status(exc)
    if isinstance(exc, IsADirectoryError):
        return "directory", "it is a directory"
    if isinstance(exc, FileNotFoundError) or status == 404:
        return "not found", "not found"
    if isinstance(exc, PermissionError) or status in (401, 403):
        where = f" (HTTP {status})" if status in (401, 403) else ""
        return "denied", f"access denied{where}"
    detail = str(exc).splitlines()[0][:200] if str(exc) else ""
    return "unreadable", f"cannot read it ({type(exc).__name__}{': ' + detail if detail else ''})"


def unusable(what: str, uri: str, exc: BaseException) -> FileUnusable:
    """The :class:`FileUnusable` for an error raised while reading ``uri``."""
    cause, reason = read_failure(exc)
    return FileUnusable(what, uri, cause, reason)


def _looks(head: bytes) -> str:
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "an HTML/XML page"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "a text file"
    return "a binary file"


def sniff_checkpoint(data: bytes) -> tuple[str, str] | None:
    """``(cause, reason)`` when ``data`` cannot be a torch checkpoint, else None. torch.save writes a
    zip archive (current) or a protocol-2 pickle (legacy); anything else cannot load."""
    if not data:
        return "empty", "it is empty (0 bytes)"
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                if not any(n.endswith("data.pkl") for n in zf.namelist()):
                    return "not a checkpoint", "it is not a PyTorch checkpoint: a zip archive without data.pkl"
        except zipfile.BadZipFile:
            return "truncated", f"it is truncated ({len(data)} bytes: the end of its zip archive is missing)"
        return None
    if data.startswith(b"\x80"):
        return None
    head = data[:24]
    return "not a checkpoint", f"it is not a PyTorch checkpoint: it is {_looks(head)} starting with {head!r}"
