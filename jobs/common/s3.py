"""Everything that speaks S3's own API through s3fs: paged listing, batched deletes, conditional
writes and deletes. Callers use the storage layer (:mod:`jobs.common.storage`,
:mod:`jobs.common.storage_batch`, :mod:`jobs.common.storage_swap`), which dispatches here for
``s3://``/``s3a://`` URIs; nothing else in the project calls ``call_s3`` or knows S3's schemes.

Functions take an ``s3fs.S3FileSystem`` and its paths (``bucket/key``): this module never builds
filesystems from options, so it imports nothing of the storage layer above it.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from typing import Any

import fsspec
import fsspec.asyn

PROTOCOLS = frozenset({"s3", "s3a"})
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys per request
# The same scheme grammar as storage.split_protocol: a chained URL ("simplecache::s3://") is not S3.
_S3_URI_RE = re.compile(r"^(?:s3|s3a)://", re.IGNORECASE)


def is_s3(uri: str) -> bool:
    """True for ``s3://`` and ``s3a://`` URIs (any case)."""
    return bool(_S3_URI_RE.match(uri))


def filesystem(kwargs: dict[str, Any]) -> fsspec.AbstractFileSystem:
    """A fresh ``s3fs.S3FileSystem``; the caller caches it per process."""
    import s3fs  # local import: local-only jobs need not load botocore

    # No listings cache: other workers and processes write the same prefixes concurrently.
    return s3fs.S3FileSystem(**kwargs, use_listings_cache=False, skip_instance_cache=True)


def iter_pages(fs: fsspec.AbstractFileSystem, root: str, page_size: int) -> Iterator[list[dict]]:
    """Object infos under ``root`` (``bucket/prefix/``) one ListObjectsV2 round at a time, so a
    prefix of millions of keys is never held whole (``find`` collects the full listing first).
    s3fs's page iterator is async and private: without it, fall back to ``find``."""
    iterdir = getattr(fs, "_iterdir", None)
    if iterdir is None:
        yield list(fs.find(root, detail=True).values())
        return
    bucket, _, key = root.partition("/")
    pages = iterdir(bucket, delimiter="", prefix=key)

    async def take() -> list[dict]:
        out: list[dict] = []
        async for info in pages:
            out.append(info)
            if len(out) >= page_size:
                break
        return out

    while page := fsspec.asyn.sync(fs.loop, take):
        yield page


def delete_keys(fs: fsspec.AbstractFileSystem, bucket: str, keys: list[str]) -> None:
    """Delete keys of one bucket, :data:`DELETE_BATCH` a request; absent keys are no error. A key S3
    reports as not deleted raises ``OSError``."""
    for i in range(0, len(keys), DELETE_BATCH):
        chunk = keys[i:i + DELETE_BATCH]
        out = fs.call_s3("delete_objects", Bucket=bucket,
                         Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
        if out.get("Errors"):
            first = out["Errors"][0]
            raise OSError(f"S3 refused to delete {len(out['Errors'])} key(s), e.g. "
                          f"s3://{bucket}/{first.get('Key')}: {first.get('Code')} {first.get('Message')}")
        fs.invalidate_cache(bucket)


def head_etag(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    """The object's ETag as S3 sends it (quoted, as ``If-Match`` wants it); None when absent."""
    bucket, _, key = path.partition("/")
    try:
        return fs.call_s3("head_object", Bucket=bucket, Key=key)["ETag"]
    except FileNotFoundError:
        return None


def swap(fs: fsspec.AbstractFileSystem, path: str, etag: str | None, data: bytes | None) -> bool:
    """Write ``data`` (delete, when None) only if the object still has ``etag`` (None: only if it is
    absent), by a conditional PUT/DELETE. False when S3 refused: a 412 (``If-Match``/``If-None-Match``
    failed) or a 409 (a concurrent conditional write won)."""
    bucket, _, key = path.partition("/")
    try:
        if data is None:
            fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag)
        elif etag is None:
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        else:
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfMatch=etag)
    except (FileExistsError, FileNotFoundError):
        return False
    except OSError as exc:  # s3fs maps 412 (If-Match) and 409 (concurrent conditional write) to OSError
        if exc.errno == errno.EINVAL or any(s in str(exc).lower() for s in ("condition", "conflict")):
            return False
        raise
    finally:
        fs.invalidate_cache(path)
    return True
