"""Storage calls over many objects at catalog scale: listing a remote prefix in pages as the listing
arrives, deleting many files (S3 DeleteObjects, 1000 keys a request) and asking which of many files
exist (one listing of a prefix or one HEAD per key, whichever costs fewer requests). Same URIs and
:class:`~jobs.common.storage.StorageOptions` as :mod:`jobs.common.storage`; the S3 calls themselves
are :mod:`jobs.common.s3`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping

from fsspec.implementations.local import LocalFileSystem

from jobs.common import s3
from jobs.common.storage import InputFile, StorageOptions, get_filesystem, join_uri, listed_input, split_protocol

# Existence by listing costs one request per 1000 keys under the prefix, by HEAD one per key: list a
# prefix when the keys asked about outnumber its expected size / LIST_PAGE.
LIST_PAGE = 1000
_HEAD_THREADS = 16


def list_pages(uri: str, options: StorageOptions | None = None, page_size: int = 10_000) -> Iterator[list[InputFile]]:
    """The files under a remote prefix (recursive, unsorted) as the listing arrives: on S3 one
    ListObjectsV2 round of up to ``page_size`` keys a page (a prefix of millions of keys is never
    held whole), on other fsspec filesystems one directory a page. Local directories are walked by
    :mod:`jobs.common.listing`, which stats only the files it keeps."""
    fs, path = get_filesystem(uri, options)
    root = path.rstrip("/") + "/"
    if s3.is_s3(uri):
        pages: Iterable[Iterable[dict]] = s3.iter_pages(fs, root, page_size)
    else:  # other fsspec filesystems: a directory at a time
        pages = (entries.values() for _dir, _sub, entries in fs.walk(path, detail=True))
    for page in pages:
        yield [listed_input(uri, fs, entry, entry["name"][len(root):])
               for entry in page if entry.get("type") == "file" and entry["name"].startswith(root)]


def remove_many(uris: Iterable[str], options: StorageOptions | None = None) -> int:
    """Delete files, absent ones included without error; returns how many were asked for.

    S3: one DeleteObjects request per 1000 keys (per bucket); a key S3 reports as not deleted
    raises ``OSError``. Elsewhere: one delete per file. Keys are taken literally (no globbing)."""
    todo = sorted(set(u for u in uris if u))
    by_bucket: dict[str, list[str]] = {}
    for uri in todo:
        if s3.is_s3(uri):
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
        s3.delete_keys(get_filesystem(f"s3://{bucket}", options)[0], bucket, keys)
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
