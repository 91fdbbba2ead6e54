"""Compare-and-swap on one small object (the nightly catalog's lease): read it with a tag, then
write or delete it only if it still is what that tag names, so two writers can never both win.

- S3: the tag is the ETag from a HEAD; the write is a conditional PUT ``If-None-Match: *`` (must
  not exist) or ``If-Match: <ETag>``, the delete a DELETE ``If-Match`` (:mod:`jobs.common.s3`).
- Local disk: the read-compare-write runs under ``flock`` on a lock file beside the object (the
  kernel drops the lock with the process, so a dead writer leaves no stale lock); the tag is the
  bytes themselves. The object is created with ``os.link`` (fails if it exists: the exclusive
  create) and replaced with ``os.replace`` (readers see the old or the new content, never a torn one).

Other filesystems have no compare-and-swap that fsspec exposes (:func:`supports_swap` says False).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator

from fsspec.implementations.local import LocalFileSystem

from jobs.common import s3
from jobs.common.storage import StorageOptions, get_filesystem, redact

Tag = object  # opaque to callers: None means "absent"


def _local_path(uri: str, options: StorageOptions | None) -> str | None:
    fs, path = get_filesystem(uri, options)
    return path if isinstance(fs, LocalFileSystem) else None


def supports_swap(uri: str, options: StorageOptions | None = None) -> bool:
    """True where :func:`swap` works: local disk and S3."""
    return _local_path(uri, options) is not None or s3.is_s3(uri)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _read_local(path: str) -> tuple[bytes | None, Tag]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None, None
    return data, data  # the bytes themselves are the tag: a swap compares them


def _swap_local(path: str, tag: Tag, data: bytes | None) -> bool:
    with _locked(path):
        if _read_local(path)[1] != tag:
            return False
        if data is None:
            os.unlink(path)
            return True
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            if tag is None:
                os.link(tmp, path)  # exclusive create: fails if the object exists
            else:
                os.replace(tmp, path)
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return True


def _unsupported(uri: str) -> ValueError:
    return ValueError(f"no compare-and-swap on {redact(uri)}: only s3:// and local paths have one")


def read_tagged(uri: str, options: StorageOptions | None = None) -> tuple[bytes | None, Tag]:
    """``(content, tag)``; ``(None, None)`` when the object is absent."""
    path = _local_path(uri, options)
    if path is not None:
        with _locked(path):
            return _read_local(path)
    if not s3.is_s3(uri):
        raise _unsupported(uri)
    fs, path = get_filesystem(uri, options)
    etag = s3.head_etag(fs, path)
    if etag is None:
        return None, None
    try:
        # Read after the ETag: content newer than the ETag makes the later If-Match fail (safe).
        return fs.cat_file(path), etag
    except FileNotFoundError:
        return None, None


def swap(uri: str, tag: Tag, data: bytes | None, options: StorageOptions | None = None) -> bool:
    """Write ``data`` (delete the object, when None) only if the object is still what ``tag`` names
    (tag None: only if it is absent). False when it was not: someone else changed it first."""
    path = _local_path(uri, options)
    if path is not None:
        return _swap_local(path, tag, data)
    if not s3.is_s3(uri):
        raise _unsupported(uri)
    fs, path = get_filesystem(uri, options)
    return s3.swap(fs, path, tag, data)  # type: ignore[arg-type]
