"""The nightly catalog's durable state under ``{output}/_catalog/``, as Arrow tables.

- ``ledger.parquet``: one row per (input, style) whose output exists: the input's version and the
  style model's sha256 it was rendered from. Rewritten whole and atomically, only after the outputs
  it names were written, so it never claims an output that does not exist.
- ``journal/{run_id}.parquet``: the pairs a night is about to render, written before it renders;
  removed when the night commits. A journal left behind is a night that died: the next night
  settles every entry of it (adopts, re-renders or deletes the output).
- ``provenance/{style}/{path}.json``: beside each output the night wrote, what it was made from
  (input URI and version, model sha256, run id), written as the output's row reaches the driver
  and deleted before a night overwrites the output. Recovery adopts an output only when this
  record matches tonight's plan: never by comparing clocks or ETags.
- ``tombstones/{run_id}.parquet``: output URIs to delete, written before the ledger stops claiming
  them, so a crash between the ledger update and the deletes leaves no orphan nobody knows about.
- ``history.parquet``: one row per night.

Also here: the versions the ledger records for inputs (stat'ed by :func:`jobs.common.storage.object_version`).
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.common.storage import (InputFile, StorageOptions, get_filesystem, join_uri, object_version, read_bytes,
                                 write_bytes_atomic)
from jobs.common.storage_batch import remove_many

ENTRY_COLUMNS = ("input_uri", "rel_path", "style", "input_version", "model_sha256", "output_uri", "run_id")
_ENTRY_FIELDS = [(name, pa.string()) for name in ENTRY_COLUMNS]
# What the ledger records per input x style and the journal plans per input x style: the same columns.
LEDGER_SCHEMA = pa.schema(_ENTRY_FIELDS + [("updated_at", pa.timestamp("us", tz="UTC"))])
JOURNAL_SCHEMA = pa.schema(_ENTRY_FIELDS)
TOMBSTONE_SCHEMA = pa.schema([("output_uri", pa.string())])

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
    ("quarantined", pa.int64()),
    ("recovered", pa.int64()),
    ("removed_outputs", pa.int64()),
    ("error_rate", pa.float64()),
    ("images_per_s", pa.float64()),
    ("plan_s", pa.float64()),
    ("render_s", pa.float64()),
    ("commit_s", pa.float64()),
    ("wall_s", pa.float64()),
    ("contact_sheet", pa.string()),
    ("error", pa.string()),
])
IO_THREADS = 16  # concurrent small reads/writes: S3 requests are latency-bound


def catalog_uri(output: str, *parts: str) -> str:
    return join_uri(output, "_catalog", *parts)


def ledger_uri(output: str) -> str:
    return catalog_uri(output, "ledger.parquet")


def history_uri(output: str) -> str:
    return catalog_uri(output, "history.parquet")


def journal_uri(output: str, run_id: str) -> str:
    return catalog_uri(output, "journal", f"{run_id}.parquet")


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def read_table(uri: str, schema: pa.Schema, options: StorageOptions | None) -> pa.Table:
    """A table with exactly ``schema`` (columns an older file lacks come back null); empty if absent."""
    try:
        table = pq.read_table(io.BytesIO(read_bytes(uri, options)))
    except FileNotFoundError:
        return schema.empty_table()
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names
            else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def write_table(uri: str, table: pa.Table, options: StorageOptions | None) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(uri, buf.getvalue(), options)


def keys(table: pa.Table) -> pa.Array:
    """``input_uri NUL style`` per row: one string column to join and test membership on."""
    return pc.binary_join_element_wise(table.column("input_uri"), table.column("style"), "\x00")


def read_ledger(output: str, options: StorageOptions | None = None) -> pa.Table:
    """The ledger (:data:`LEDGER_SCHEMA`); empty when the catalog never ran."""
    return read_table(ledger_uri(output), LEDGER_SCHEMA, options)


def write_ledger(output: str, ledger: pa.Table, options: StorageOptions | None = None) -> None:
    """Replace the ledger (atomically), rows sorted so that diffs between nights read well."""
    write_table(ledger_uri(output), ledger.sort_by([("style", "ascending"), ("input_uri", "ascending")]), options)


def read_history(output: str, options: StorageOptions | None = None) -> pa.Table:
    return read_table(history_uri(output), HISTORY_SCHEMA, options)


def append_history(output: str, row: dict, options: StorageOptions | None = None) -> pa.Table:
    """Append one night's row to the run-history table; returns the whole table."""
    new = pa.Table.from_pylist([{f.name: row.get(f.name) for f in HISTORY_SCHEMA}], schema=HISTORY_SCHEMA)
    table = pa.concat_tables([read_history(output, options), new])
    write_table(history_uri(output), table, options)
    return table


def _list_dir(uri: str, suffix: str, options: StorageOptions | None) -> list[str]:
    fs, path = get_filesystem(uri, options)
    fs.invalidate_cache(path)
    try:
        names = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return sorted(join_uri(uri, str(n).rstrip("/").rsplit("/", 1)[-1]) for n in names if str(n).endswith(suffix))


def write_journal(output: str, run_id: str, todo: pa.Table, options: StorageOptions | None = None) -> str:
    uri = journal_uri(output, run_id)
    table = todo.select(list(ENTRY_COLUMNS[:-1])).append_column("run_id", pa.array([run_id] * todo.num_rows, pa.string()))
    write_table(uri, table.cast(JOURNAL_SCHEMA), options)
    return uri


def read_journals(output: str, options: StorageOptions | None = None) -> dict[str, pa.Table]:
    """Journals left by nights that did not commit: ``{journal uri: entries}``."""
    return {uri: read_table(uri, JOURNAL_SCHEMA, options)
            for uri in _list_dir(catalog_uri(output, "journal"), ".parquet", options)}


def write_tombstones(output: str, run_id: str, uris: pa.Array, options: StorageOptions | None = None) -> str:
    uri = catalog_uri(output, "tombstones", f"{run_id}.parquet")
    write_table(uri, pa.table({"output_uri": pa.array(uris, pa.string())}), options)
    return uri


def read_tombstones(output: str, options: StorageOptions | None = None) -> dict[str, pa.Array]:
    """Pending deletes: ``{tombstone file uri: output uris}`` (left by a night that died)."""
    return {uri: read_table(uri, TOMBSTONE_SCHEMA, options).column("output_uri").combine_chunks()
            for uri in _list_dir(catalog_uri(output, "tombstones"), ".parquet", options)}


# ---------------------------------------------------------------- provenance beside each output


def provenance_uri(output: str, output_uri: str) -> str:
    """``{output}/_catalog/provenance/{style}/{path}.json`` for ``{output}/{style}/{path}``."""
    root = join_uri(output) + "/"
    if not output_uri.startswith(root):
        raise ValueError(f"{output_uri} is not under {output}")
    return catalog_uri(output, "provenance", output_uri[len(root):] + ".json")


def write_provenance(output: str, records: Sequence[dict], options: StorageOptions | None = None) -> None:
    """One small JSON per output: ``input_uri, style, input_version, model_sha256, run_id, output_uri``."""
    def one(rec: dict) -> None:
        write_bytes_atomic(provenance_uri(output, rec["output_uri"]), json.dumps(rec, sort_keys=True).encode(), options)

    with ThreadPoolExecutor(IO_THREADS) as pool:
        list(pool.map(one, records))


def read_provenance(output: str, output_uris: Iterable[str], options: StorageOptions | None = None) -> dict[str, dict]:
    """``{output uri: record}`` for the outputs that have one."""
    def one(uri: str) -> dict | None:
        try:
            return json.loads(read_bytes(provenance_uri(output, uri), options))
        except (FileNotFoundError, ValueError):
            return None

    uris = sorted(set(u for u in output_uris if u))
    with ThreadPoolExecutor(IO_THREADS) as pool:
        return {u: rec for u, rec in zip(uris, pool.map(one, uris)) if rec}


def remove_provenance(output: str, output_uris: Iterable[str], options: StorageOptions | None = None) -> None:
    """Delete the provenance records of these outputs (batched), e.g. before they are overwritten."""
    remove_many([provenance_uri(output, u) for u in set(output_uris) if u], options)


def remove_outputs(output: str, output_uris: Iterable[str], options: StorageOptions | None = None) -> int:
    """Delete outputs together with their provenance records (batched); returns how many outputs."""
    uris = sorted(set(u for u in output_uris if u))
    remove_many(uris + [provenance_uri(output, u) for u in uris], options)
    return len(uris)


# ---------------------------------------------------------------- versions of inputs


def input_versions(inputs: Sequence[InputFile], options: StorageOptions) -> dict[str, str]:
    """``{uri: version}``; inputs listed without a version are stat'ed (in parallel)."""
    out = {f.uri: f.version for f in inputs if f.version}
    missing = [f.uri for f in inputs if not f.version]
    with ThreadPoolExecutor(IO_THREADS) as pool:
        out.update(zip(missing, pool.map(lambda u: object_version(u, options), missing)))
    return out  # type: ignore[return-value]
