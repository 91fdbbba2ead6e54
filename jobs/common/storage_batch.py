"""Batched storage calls at the nightly catalog's scale: deleting many files (S3 DeleteObjects, 1000
keys a request) and asking which of many files exist (one listing of a prefix or one HEAD per key,
whichever costs fewer requests). Same URIs and :class:`~jobs.common.storage.StorageOptions` as
:mod:`jobs.storage`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping

from fsspec.implementations.local import LocalFileSystem

from jobs.common.storage import _S3_PROTOCOLS, StorageOptions, get_filesystem, join_uri, split_protocol

S3_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys per request
# Existence by listing costs one request per 1000 keys under the prefix, by HEAD one per key: list a
# prefix when the keys asked about outnumber its expected size / LIST_PAGE.
LIST_PAGE = 1000
_HEAD_THREADS = 16


def _is_s3(uri: str) -> bool:
    return split_protocol(uri)[0] in _S3_PROTOCOLS


def remove_many(uris: Iterable[str], options: StorageOptions | None = None) -> int:
    """Delete files, absent ones included without error; returns how many were asked for.

    S3: one DeleteObjects request per 1000 keys (per bucket); a key S3 reports as not deleted
    raises ``OSError``. Elsewhere: one delete per file. Keys are taken literally (no globbing)."""
    todo = sorted(set(u for u in uris if u))
    by_bucket: dict[str, list[str]] = {}
    for uri in todo:
        if _is_s3(uri):
            bucket, _, key = split_protocol(uri)[1].partition("/")
            by_bucket.setdefault(bucket, []).append(key)
            continue
        fs, path = get_filesystem(uri, options)
        if isinstance(fs, LocalFileSystem):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(path)
    for bucket, keys in by_bucket.items():
        fs, _ = get_filesystem(f"s3://{bucket}", options)
        for i in range(0, len(keys), S3_DELETE_BATCH):
            chunk = keys[i:i + S3_DELETE_BATCH]
            out = fs.call_s3("delete_objects", Bucket=bucket,
                             Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
            if out.get("Errors"):
                first = out["Errors"][0]
                raise OSError(f"S3 refused to delete {len(out['Errors'])} key(s), e.g. "
                              f"s3://{bucket}/{first.get('Key')}: {first.get('Code')} {first.get('Message')}")
            fs.invalidate_cache(bucket)
    return len(todo)


def _listed_files(prefix: str, options: StorageOptions | None) -> set[str]:
    """Every file under ``prefix`` as a URI in the same spelling as :func:`join_uri` makes."""
    fs, path = get_filesystem(prefix, options)
    if isinstance(fs, LocalFileSystem):
        out = set()
        for dirpath, _dirs, files in os.walk(path):
            rel = os.path.relpath(dirpath, path).replace(os.sep, "/")
            out.update(join_uri(prefix, *(() if rel == "." else (rel,)), name) for name in files)
        return out
    fs.invalidate_cache(path)
    root = path.rstrip("/") + "/"
    try:
        found = fs.find(path)
    except FileNotFoundError:
        return set()
    return {join_uri(prefix, name[len(root):]) for name in found if name.startswith(root)}


def _exists_file(uri: str, options: StorageOptions | None) -> bool:
    fs, path = get_filesystem(uri, options)
    if isinstance(fs, LocalFileSystem):
        return os.path.isfile(path)
    try:
        return fs.info(path).get("type") != "directory"
    except FileNotFoundError:
        return False


def existing_files(uris: Iterable[str], options: StorageOptions | None = None,
                   prefixes: Mapping[str, int] | None = None) -> set[str]:
    """The subset of ``uris`` that exist as files, in as few requests as the counts allow.

    ``prefixes`` maps a prefix URI to the number of files expected under it (e.g. a style's ledger
    rows): the URIs under a prefix are checked with one listing of it when they outnumber
    ``expected / LIST_PAGE`` (what the listing costs in requests), else with one HEAD (stat) each."""
    todo = sorted(set(u for u in uris if u))
    found: set[str] = set()
    rest = set(todo)
    for prefix, expected in sorted((prefixes or {}).items(), key=lambda kv: -len(kv[0])):
        root = prefix.rstrip("/") + "/"
        under = [u for u in rest if u.startswith(root)]
        if under and len(under) > max(1, expected) / LIST_PAGE:
            listed = _listed_files(prefix, options)
            found.update(u for u in under if u in listed)
            rest.difference_update(under)
    if rest:
        from concurrent.futures import ThreadPoolExecutor

        ordered = sorted(rest)
        with ThreadPoolExecutor(_HEAD_THREADS) as pool:
            found.update(u for u, ok in zip(ordered, pool.map(lambda u: _exists_file(u, options), ordered)) if ok)
    return found
