"""Staging: the run's inputs as Parquet parts, so neither the driver nor Ray Data holds a list of them.

The batch job *stages* whatever it was given (a listing, a user manifest, or the nightly catalog's
plan) as ``{output}/_manifests/{run_id}/part-NNNNN.parquet`` with a stable row index ``idx``, written
a part at a time as the listing pages arrive; Ray Data reads those parts as blocks, and the driver
counts results by ``idx`` (see :class:`jobs.common.metrics.PairLedger`).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.common.listing import iter_listing
from jobs.common.manifest import PlannedInput, is_manifest, iter_manifest
from jobs.common.storage import InputFile, StorageOptions, join_uri, remove_prefix, write_bytes_atomic

PART_ROWS = 100_000  # rows per staged part file: a few MB of Parquet


@dataclass(frozen=True)
class StagedManifest:
    """The run's inputs as Parquet parts: ``rows`` rows, ``idx`` 0..rows-1 in order."""

    prefix: str
    parts: tuple[str, ...]
    rows: int
    planned: bool  # has a todo_styles column (only those styles are rendered per input)


def _schema(planned: bool, masked: bool = False) -> pa.Schema:
    fields = [("idx", pa.int64()), ("uri", pa.string()), ("rel_path", pa.string())]
    fields += [("todo_styles", pa.string())] if planned else []
    return pa.schema(fields + ([("mask_uri", pa.string())] if masked else []))


def staging_prefix(output: str, run_id: str) -> str:
    return join_uri(output, "_manifests", run_id)


def stage_inputs(
    source: str | Iterable[InputFile],
    prefix: str,
    options: StorageOptions | None = None,
    *,
    todo: Mapping[str, Sequence[str]] | None = None,
    part_rows: int = PART_ROWS,
    on_listed: Callable[[], None] | None = None,
) -> StagedManifest:
    """Write ``source`` (a prefix, an image or a manifest URI, or InputFiles) as numbered parts under
    ``prefix`` (cleared first), a part at a time as the listing arrives. ``todo`` maps an input uri
    to the styles to render for it (the others become ``skipped`` rows). ``on_listed`` is called once
    the listing has answered (its first page, or its end): a prefix that cannot be listed has raised
    by then."""
    if isinstance(source, str):
        pages: Iterable[Iterable[InputFile]] = (
            iter_manifest(source, options) if is_manifest(source) else iter_listing(source, options)
        )
    else:
        pages = [source]
    remove_prefix(prefix, options)
    parts: list[str] = []
    cols: dict[str, list] = {}
    rows = 0
    planned: bool | None = None if todo is None else True
    masked = False  # entries carry a mask_uri (a manifest's column)

    def flush() -> None:
        if not cols or not cols["uri"]:
            return
        table = pa.table({**cols, "idx": pa.array(range(rows - len(cols["uri"]), rows), pa.int64())})
        buf = io.BytesIO()
        schema = _schema(bool(planned), masked)
        pq.write_table(table.select(schema.names).cast(schema), buf, compression="zstd")
        uri = join_uri(prefix, f"part-{len(parts):05d}.parquet")
        write_bytes_atomic(uri, buf.getvalue(), options)
        parts.append(uri)
        for values in cols.values():
            values.clear()

    for page in pages:
        if on_listed is not None:
            on_listed()
            on_listed = None
        for f in page:
            if planned is None:  # a manifest carrying its own plan (the catalog's) is planned throughout
                planned = isinstance(f, PlannedInput)
            if not cols:
                masked = hasattr(f, "mask_uri")
                cols = {"uri": [], "rel_path": []} | ({"todo_styles": []} if planned else {}) | (
                    {"mask_uri": []} if masked else {})
            cols["uri"].append(f.uri)
            cols["rel_path"].append(f.rel_path)
            if planned:
                styles = todo.get(f.uri, ()) if todo is not None else (getattr(f, "todo_styles", "") or "").split(",")
                cols["todo_styles"].append(",".join(s for s in styles if s))
            if masked:
                cols["mask_uri"].append(getattr(f, "mask_uri", ""))
            rows += 1
            if len(cols["uri"]) >= part_rows:
                flush()
    if on_listed is not None:
        on_listed()
    flush()
    return StagedManifest(prefix, tuple(parts), rows, bool(planned))
