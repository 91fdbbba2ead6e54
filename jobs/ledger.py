"""The nightly catalog's durable state under ``{output}/_catalog/``.

- ``ledger.parquet``: one row per (input, style) whose output exists and is current: the input's
  version and the style model's sha256 it was rendered from. Rewritten whole and atomically, only
  after the outputs it names were written (so it never claims an output that does not exist).
- ``history.parquet``: one row per night (read, append, rewrite atomically).
- ``journal/{run_id}.parquet``: the pairs a night is about to render, written before it renders;
  removed when the night commits. A journal left behind is a night that died: the next night
  adopts the outputs that night finished instead of rendering them again.
- ``tombstones/{run_id}.json``: output URIs to delete, written before the ledger stops claiming
  them, so a crash between the ledger update and the deletes leaves no orphan nobody knows about.

Also here: the versions the ledger records (inputs) and the modified times it checks (outputs).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import io
import json
from collections.abc import Iterable
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from .storage import InputFile, StorageOptions, get_filesystem, join_uri, read_bytes, remove, write_bytes_atomic

# What the ledger records per input x style and the journal plans per input x style: the same columns.
_ENTRY_FIELDS = [
    (name, pa.string())
    for name in ("input_uri", "rel_path", "style", "input_version", "model_sha256", "output_uri", "run_id")
]

LEDGER_SCHEMA = pa.schema(_ENTRY_FIELDS + [("updated_at", pa.timestamp("us", tz="UTC"))])

JOURNAL_SCHEMA = pa.schema(_ENTRY_FIELDS + [("planned_at", pa.float64())])  # epoch seconds, driver clock

HISTORY_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("status", pa.string()),  # ok | failed
    ("full", pa.bool_()),
    ("started_at", pa.timestamp("us", tz="UTC")),
    ("finished_at", pa.timestamp("us", tz="UTC")),
    ("inputs", pa.int64()),
    ("styles", pa.int64()),
    ("processed", pa.int64()),
    ("skipped", pa.int64()),
    ("deleted", pa.int64()),
    ("errors", pa.int64()),
    ("recovered", pa.int64()),
    ("removed_outputs", pa.int64()),
    ("plan_s", pa.float64()),
    ("render_s", pa.float64()),
    ("commit_s", pa.float64()),
    ("wall_s", pa.float64()),
    ("error", pa.string()),
])


@dataclass(frozen=True)
class LedgerEntry:
    """One rendered, current output: what it was made from."""

    input_uri: str
    rel_path: str
    style: str
    input_version: str
    model_sha256: str
    output_uri: str
    run_id: str
    updated_at: dt.datetime

    @property
    def key(self) -> tuple[str, str]:
        return (self.input_uri, self.style)


@dataclass(frozen=True)
class JournalEntry:
    """A pair a night planned to render (the ledger row it would become, plus when it was planned)."""

    input_uri: str
    rel_path: str
    style: str
    input_version: str
    model_sha256: str
    output_uri: str
    run_id: str
    planned_at: float


Ledger = dict[tuple[str, str], LedgerEntry]
IO_THREADS = 16  # concurrent stat calls: S3 HEADs are latency-bound


def ledger_uri(output: str) -> str:
    return join_uri(output, "_catalog", "ledger.parquet")


def history_uri(output: str) -> str:
    return join_uri(output, "_catalog", "history.parquet")


def _journal_dir(output: str) -> str:
    return join_uri(output, "_catalog", "journal")


def _tombstone_dir(output: str) -> str:
    return join_uri(output, "_catalog", "tombstones")


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _read_table(uri: str, schema: pa.Schema, options: StorageOptions | None) -> pa.Table:
    try:
        table = pq.read_table(io.BytesIO(read_bytes(uri, options)))
    except FileNotFoundError:
        return schema.empty_table()
    return table.select(schema.names).cast(schema)


def _write_table(uri: str, table: pa.Table, options: StorageOptions | None) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(uri, buf.getvalue(), options)


def _rows_to_table(rows: Iterable[object], schema: pa.Schema) -> pa.Table:
    dicts = [asdict(r) for r in rows]  # type: ignore[call-overload]
    return pa.Table.from_pylist(dicts, schema=schema) if dicts else schema.empty_table()


def read_ledger(output: str, options: StorageOptions | None = None) -> Ledger:
    """The ledger as ``{(input_uri, style): entry}``; empty when the catalog never ran."""
    table = _read_table(ledger_uri(output), LEDGER_SCHEMA, options)
    entries = (LedgerEntry(**row) for row in table.to_pylist())
    return {e.key: e for e in entries}


def write_ledger(output: str, ledger: Ledger, options: StorageOptions | None = None) -> None:
    """Replace the ledger (atomically), rows sorted so that diffs between nights read well."""
    rows = sorted(ledger.values(), key=lambda e: (e.style, e.input_uri))
    _write_table(ledger_uri(output), _rows_to_table(rows, LEDGER_SCHEMA), options)


def read_history(output: str, options: StorageOptions | None = None) -> pa.Table:
    return _read_table(history_uri(output), HISTORY_SCHEMA, options)


def append_history(output: str, row: dict, options: StorageOptions | None = None) -> None:
    """Append one night's row to the run-history table."""
    names = {f.name for f in HISTORY_SCHEMA}
    new = pa.Table.from_pylist([{k: v for k, v in row.items() if k in names}], schema=HISTORY_SCHEMA)
    _write_table(history_uri(output), pa.concat_tables([read_history(output, options), new]), options)


def write_journal(output: str, run_id: str, entries: list[JournalEntry], options: StorageOptions | None = None) -> None:
    _write_table(join_uri(_journal_dir(output), f"{run_id}.parquet"), _rows_to_table(entries, JOURNAL_SCHEMA), options)


def _list_dir(uri: str, suffix: str, options: StorageOptions | None) -> list[str]:
    fs, path = get_filesystem(uri, options)
    try:
        names = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return sorted(join_uri(uri, str(n).rstrip("/").rsplit("/", 1)[-1]) for n in names if str(n).endswith(suffix))


def read_journals(output: str, options: StorageOptions | None = None) -> dict[str, list[JournalEntry]]:
    """Journals left by nights that did not commit: ``{journal uri: entries}``."""
    out: dict[str, list[JournalEntry]] = {}
    for uri in _list_dir(_journal_dir(output), ".parquet", options):
        table = _read_table(uri, JOURNAL_SCHEMA, options)
        out[uri] = [JournalEntry(**row) for row in table.to_pylist()]
    return out


def journal_uri(output: str, run_id: str) -> str:
    return join_uri(_journal_dir(output), f"{run_id}.parquet")


def write_tombstones(output: str, run_id: str, uris: list[str], options: StorageOptions | None = None) -> str:
    uri = join_uri(_tombstone_dir(output), f"{run_id}.json")
    write_bytes_atomic(uri, json.dumps(sorted(uris)).encode(), options)
    return uri


def read_tombstones(output: str, options: StorageOptions | None = None) -> dict[str, list[str]]:
    """Pending deletes: ``{tombstone file uri: [output uris]}`` (left by a night that died, or ours)."""
    return {uri: json.loads(read_bytes(uri, options)) for uri in _list_dir(_tombstone_dir(output), ".json", options)}


def remove_files(uris: Iterable[str], options: StorageOptions | None = None) -> None:
    for uri in uris:
        remove(uri, options)


# ---------------------------------------------------------------- versions of inputs and outputs


def _epoch(value: object) -> float | None:
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)  # type: ignore[arg-type]


def _stat_version(uri: str, options: StorageOptions) -> str:
    """A version for an input the listing did not stat (manifest entries); "" when it is missing."""
    fs, path = get_filesystem(uri, options)
    try:
        if isinstance(fs, LocalFileSystem):
            st = os.stat(path)
            return f"{st.st_size}-{st.st_mtime_ns}"  # the same form list_images gives
        info = fs.info(path)
    except FileNotFoundError:
        return ""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag).strip('"')
    mtime = _epoch(info.get("mtime") or info.get("LastModified") or info.get("last_modified"))
    if info.get("size") is not None and mtime is not None:
        return f"{info['size']}-{mtime}"
    return "sha256:" + hashlib.sha256(fs.cat_file(path)).hexdigest()


def input_versions(inputs: Sequence[InputFile], options: StorageOptions) -> dict[str, str]:
    """``{uri: version}``; inputs listed without a version are stat'ed (in parallel)."""
    out = {f.uri: f.version for f in inputs if f.version}
    missing = [f.uri for f in inputs if not f.version]
    with ThreadPoolExecutor(IO_THREADS) as pool:
        out.update(zip(missing, pool.map(lambda u: _stat_version(u, options), missing)))
    return out  # type: ignore[return-value]


def output_mtimes(uris: Sequence[str], options: StorageOptions) -> dict[str, float | None]:
    """``{uri: modified time}`` for each output, None where it does not exist."""
    def one(uri: str) -> float | None:
        fs, path = get_filesystem(uri, options)
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return None
        if info.get("type") == "directory":
            return None
        return _epoch(info.get("mtime") or info.get("LastModified") or info.get("last_modified")) or 0.0

    unique = sorted(set(u for u in uris if u))
    with ThreadPoolExecutor(IO_THREADS) as pool:
        return dict(zip(unique, pool.map(one, unique)))
