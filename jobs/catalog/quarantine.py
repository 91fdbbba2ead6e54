"""Inputs that keep failing for their own fault: ``{output}/_catalog/quarantine.parquet``.

The table sits beside the ledger (which keeps meaning "this output exists"). One row per input
whose last attempts failed with a *permanent* error (the file's own fault): the error type, the
input version it failed at, how many nights in a row (``streak``), and ``quarantined_at`` once the
streak reaches ``quarantine_after``. A quarantined input is not retried while its version stays
the same; a new version (its content changed), a success, a different error or a transient error
(storage, out of memory: never the file's fault) ends the streak. Operators release inputs with
``--release URI`` / ``--release-all``.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from jobs.catalog import ledger as L
from jobs.common.storage import StorageOptions

PERMANENT_ERRORS = frozenset({"empty", "truncated", "unidentified", "corrupt", "too_large", "unsafe_path"})
DEFAULT_AFTER = 3

SCHEMA = pa.schema([
    ("input_uri", pa.string()),
    ("input_version", pa.string()),
    ("error_type", pa.string()),
    ("error", pa.string()),
    ("streak", pa.int64()),
    ("first_run_id", pa.string()),
    ("last_run_id", pa.string()),
    ("quarantined_at", pa.timestamp("us", tz="UTC")),
])


def uri(output: str) -> str:
    return L.catalog_uri(output, "quarantine.parquet")


def read(output: str, options: StorageOptions | None = None) -> pa.Table:
    return L.read_table(uri(output), SCHEMA, options)


def write(output: str, table: pa.Table, options: StorageOptions | None = None) -> None:
    L.write_table(uri(output), table.sort_by("input_uri"), options)


def held(table: pa.Table) -> pa.Table:
    """The rows in quarantine (not merely on a streak)."""
    return table.filter(pc.is_valid(table.column("quarantined_at")))


def release(table: pa.Table, uris: Iterable[str] = (), everything: bool = False) -> tuple[pa.Table, int]:
    """Drop the named inputs (or all) from the table: they are retried tonight. Returns (table, how many)."""
    if everything:
        return SCHEMA.empty_table(), table.num_rows
    gone = pc.is_in(table.column("input_uri"), value_set=pa.array(sorted(set(uris)), pa.string()))
    return table.filter(pc.invert(gone)), int(pc.sum(gone).as_py() or 0)


def update(table: pa.Table, attempted: pa.Array, listed: pa.Array, failures: dict[str, tuple[str, str, str]],
           run_id: str, after: int) -> tuple[pa.Table, list[str]]:
    """Tonight's outcome folded in. ``attempted``: input URIs rendered tonight; ``listed``: every input
    in tonight's listing; ``failures``: ``{input_uri: (version, error_type, error)}`` for attempted
    inputs with a permanent error. Returns the new table and the inputs quarantined tonight."""
    keep = pc.and_(pc.invert(pc.is_in(table.column("input_uri"), value_set=attempted)),
                   pc.is_in(table.column("input_uri"), value_set=listed))
    untouched = table.filter(keep)
    previous = {r["input_uri"]: r for r in table.filter(pc.is_in(table.column("input_uri"),
                value_set=pa.array(sorted(failures), pa.string()))).to_pylist()}
    rows, newly = [], []
    now = L.now_utc()
    for input_uri, (version, error_type, error) in sorted(failures.items()):
        prev = previous.get(input_uri)
        same = prev and (prev["input_version"], prev["error_type"]) == (version, error_type)
        streak = prev["streak"] + 1 if same else 1
        quarantined_at = prev["quarantined_at"] if same and prev["quarantined_at"] else None
        if quarantined_at is None and streak >= after:
            quarantined_at = now
            newly.append(input_uri)
        rows.append({"input_uri": input_uri, "input_version": version, "error_type": error_type,
                     "error": (error or "")[:500], "streak": streak,
                     "first_run_id": prev["first_run_id"] if same else run_id, "last_run_id": run_id,
                     "quarantined_at": quarantined_at})
    return pa.concat_tables([untouched, pa.Table.from_pylist(rows, schema=SCHEMA)]), newly
