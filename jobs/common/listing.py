"""Listing inputs: the images under a prefix (local, S3, any fsspec filesystem) in pages as the
listing arrives, one image, or a manifest; each as :class:`jobs.common.storage.InputFile` with its version
(S3 ETag, local size+mtime)."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Iterator

from fsspec.implementations.local import LocalFileSystem
from stylize_core.image_io import IMAGE_EXTENSIONS

from jobs.common.manifest import iter_manifest
from jobs.common.storage import MANIFEST_SUFFIXES, InputFile, StorageOptions, get_filesystem, listed_input, redact
from jobs.common.storage_batch import list_pages


def _has_ext(name: str, exts: frozenset[str]) -> bool:
    return posixpath.splitext(name)[1].lower() in exts


def _local_file(full: str, rel: str) -> InputFile:
    st = os.stat(full)
    return InputFile(full, rel, st.st_size, f"{st.st_size}-{st.st_mtime_ns}")


def _walk_local(root: str, exts: frozenset[str]) -> Iterator[InputFile]:
    """Files under ``root`` as the directory entries arrive (no directory is held whole).

    An unreadable subdirectory fails loudly, not silently shrinking the input. Symlinked
    directories are not followed (cycles); symlinked files are."""
    stack = [root]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif _has_ext(entry.name, exts) and entry.is_file():
                    yield _local_file(entry.path, os.path.relpath(entry.path, root).replace(os.sep, "/"))


def iter_listing(
    uri: str, options: StorageOptions | None = None, extensions: Iterable[str] = IMAGE_EXTENSIONS,
    page_size: int = 10_000,
) -> Iterator[list[InputFile]]:
    """Images under a prefix (recursive) or one image, in pages of up to ``page_size`` as the listing
    arrives (unsorted). An empty S3 prefix cannot be told from a missing one: both raise
    ``FileNotFoundError``."""
    exts = frozenset(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    fs, path = get_filesystem(uri, options)
    if isinstance(fs, LocalFileSystem):
        if os.path.isfile(path):
            if not _has_ext(path, exts):
                raise ValueError(f"{path} is neither a directory, a manifest {MANIFEST_SUFFIXES} nor an image")
            yield [_local_file(path, os.path.basename(path))]
            return
        if not os.path.isdir(path):
            raise FileNotFoundError(f"input path does not exist: {path}")
        yield from _paged(_walk_local(path, exts), page_size)
        return
    fs.invalidate_cache(path)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"input prefix does not exist or is empty: {redact(uri)}") from None
    if info["type"] != "directory":
        if not _has_ext(path, exts):
            raise ValueError(f"{redact(uri)} is neither a prefix, a manifest {MANIFEST_SUFFIXES} nor an image")
        yield [listed_input(uri, fs, info, posixpath.basename(info["name"]))]
        return
    for page in list_pages(uri, options, page_size):
        if out := [f for f in page if _has_ext(f.rel_path, exts)]:
            yield out


def _paged(items: Iterable[InputFile], size: int) -> Iterator[list[InputFile]]:
    page: list[InputFile] = []
    for item in items:
        page.append(item)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def list_images(
    uri: str, options: StorageOptions | None = None, extensions: Iterable[str] = IMAGE_EXTENSIONS
) -> list[InputFile]:
    """Images under a prefix (recursive, sorted by uri), one image, or a manifest (``.parquet``/``.csv``,
    see :func:`read_manifest`), as one list. The batch job streams the same listing instead
    (:func:`iter_listing`, :mod:`jobs.manifest`)."""
    if uri.lower().rstrip("/").endswith(MANIFEST_SUFFIXES):
        return read_manifest(uri, options)
    return sorted((f for page in iter_listing(uri, options, extensions) for f in page), key=lambda f: f.uri)


def read_manifest(uri: str, options: StorageOptions | None = None) -> list[InputFile]:
    """Entries of a ``.parquet``/``.csv`` manifest as a list (see :func:`jobs.common.manifest.iter_manifest`)."""

    return [f for page in iter_manifest(uri, options) for f in page]
