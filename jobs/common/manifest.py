"""Reading a user's manifest of inputs.

A user's manifest (``.parquet``, a file or a directory of parts, or ``.csv``; a ``uri`` column, an
optional ``rel_path`` and an optional ``mask_uri``, resolved like ``uri``) is read in record batches, in its own order (the batch job stages it:
:mod:`jobs.batch.staging`).
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.dataset as pads
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from jobs.common.storage import (
    MANIFEST_SUFFIXES,
    InputFile,
    StorageOptions,
    get_filesystem,
    join_uri,
    redact,
    split_protocol,
    url_path,
)

PAGE_ROWS = 65_536  # rows per record batch read from a user's manifest
_LOCAL = frozenset({None, "file", "local"})


class ManifestError(ValueError):
    """A manifest the job cannot use; the message names the manifest and the problem."""


def is_manifest(uri: str) -> bool:
    return uri.lower().rstrip("/").endswith(MANIFEST_SUFFIXES)


# ---------------------------------------------------------------- reading a user's manifest


def _columns(uri: str, options: StorageOptions | None) -> Iterator[tuple[list, list | None, list | None, list | None]]:
    """(uris, rel_paths or None, todo_styles or None, mask_uris or None) per record batch, in the manifest's order."""
    fs, path = get_filesystem(uri, options)
    if path.lower().rstrip("/").endswith(".parquet"):
        dataset = pads.dataset(path, filesystem=fs, format="parquet")  # a file or a directory of parts
        names = dataset.schema.names
        if "uri" not in names:
            raise ManifestError(f"manifest {redact(uri)} has no 'uri' column (columns: {names})")
        cols = [c for c in ("uri", "rel_path", "todo_styles", "mask_uri") if c in names]
        # A file at a time, a row group at a time: Dataset.to_batches over an fsspec filesystem
        # decoded ~1M rows ahead of the reader (measured: +116 MiB for a 3x10^6-row manifest).
        for file in sorted(dataset.files):
            with fs.open(file, "rb") as f:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=PAGE_ROWS, columns=cols):
                    got = {c: batch.column(c).to_pylist() for c in cols}
                    yield got["uri"], got.get("rel_path"), got.get("todo_styles"), got.get("mask_uri")
        return
    with fs.open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
        reader = csv.reader(text)
        header = [h.strip() for h in next(reader, [])]
        if "uri" not in header:
            raise ManifestError(f"manifest {redact(uri)} has no 'uri' column (header: {header})")
        iu = header.index("uri")
        ir = header.index("rel_path") if "rel_path" in header else None
        im = header.index("mask_uri") if "mask_uri" in header else None
        page: list[list[str]] = []
        for row in reader:
            if any(cell.strip() for cell in row):  # skip blank lines
                page.append(row)
            if len(page) >= PAGE_ROWS:
                yield _csv_page(page, iu, ir, im)
                page = []
        if page:
            yield _csv_page(page, iu, ir, im)


def _csv_page(rows: list[list[str]], iu: int, ir: int | None, im: int | None
              ) -> tuple[list, list | None, None, list | None]:
    def col(i: int | None) -> list | None:
        return None if i is None else [row[i] if i < len(row) else None for row in rows]

    uris = [row[iu] if iu < len(row) else "" for row in rows]
    return uris, col(ir), None, col(im)


def _split(uri: str) -> tuple[str, str]:
    """(group, path) for deriving relative paths: a bucket and its key, or the local disk."""
    protocol, rest = split_protocol(url_path(uri))  # a presigned URL's query is never in an output key
    if protocol in _LOCAL:
        return "local", os.path.abspath(os.path.expanduser(rest))
    group, _, path = rest.partition("/")
    return group.rpartition("@")[2], path  # userinfo is no part of a key


class _CommonDirs:
    """The common directory of the uris within each group, found in one streaming pass."""

    def __init__(self) -> None:
        self.common: dict[str, str] = {}

    def see(self, uri: str) -> None:
        group, path = _split(uri)
        d = posixpath.dirname(path)
        common = self.common.get(group)
        if common is None:
            self.common[group] = d
        elif d != common and not d.startswith(common.rstrip("/") + "/"):
            self.common[group] = posixpath.commonpath([common, d]) if common and d else ""

    def rel(self, uri: str) -> str:
        group, path = _split(uri)
        common = self.common[group]
        prefix = f"{group}/" if len(self.common) > 1 else ""  # several buckets: keep equal keys apart
        return prefix + path[len(common):].lstrip("/")


def iter_manifest(uri: str, options: StorageOptions | None = None) -> Iterator[list[InputFile]]:
    """Entries of a manifest in pages, without holding it: two streaming passes, one to check the
    uris and find the directories relative paths are derived from, one to yield the entries.

    Entries keep the manifest's order, are not filtered by extension and are not stat'ed (size and
    version None). Relative entries resolve against the manifest's directory; missing ``rel_path``
    values are the path below the common directory of the uris (per bucket, prefixed by the bucket
    when there are several). Raises :class:`ManifestError` or ``FileNotFoundError``."""
    fs, path = get_filesystem(uri, options)
    base = os.path.dirname(path) if isinstance(fs, LocalFileSystem) else uri.rstrip("/").rsplit("/", 1)[0]

    def resolved(values: list) -> list[str]:
        out = []
        for value in values:
            u = "" if value is None else str(value).strip()
            absolute = split_protocol(u)[0] is not None or u.startswith(("/", "~"))
            out.append(u if absolute else join_uri(base, u))
        return out

    dirs, row = _CommonDirs(), 0
    for uris, _rels, _todo, _masks in _columns(uri, options):
        for value in uris:
            row += 1
            if value is None or not str(value).strip():
                raise ManifestError(f"manifest {redact(uri)}: entry {row} has an empty uri")
        for u in resolved(uris):
            dirs.see(u)
    for uris, rels, todo, masks in _columns(uri, options):
        uris = resolved(uris)
        given = rels or [None] * len(uris)
        page = [
            InputFile(u, r.strip() if isinstance(r, str) and r.strip() else dirs.rel(u), None, None)
            for u, r in zip(uris, given)
        ]
        if masks is not None:  # an empty cell: no mask for that input (or --mask-prefix's)
            page = [MaskedInput(f.uri, f.rel_path, f.size, f.version, resolved([m])[0] if str(m or "").strip() else "")
                    for f, m in zip(page, masks)]
        yield _with_todo(page, todo) if todo is not None else page


@dataclass(frozen=True)
class MaskedInput(InputFile):
    """An input with its mask, from a manifest's ``mask_uri`` column."""

    mask_uri: str = ""  # "": none given for this input


@dataclass(frozen=True)
class PlannedInput(InputFile):
    """An input with the styles still to render for it (the nightly catalog's plan)."""

    todo_styles: str = ""
    mask_uri: str = ""  # the manifest's mask for this input ("": none given)


def _with_todo(page: list[InputFile], todo: list) -> list[InputFile]:
    return [PlannedInput(f.uri, f.rel_path, f.size, f.version, t or "", getattr(f, "mask_uri", ""))
            for f, t in zip(page, todo)]
