"""A night's rows as they stream from the pipeline, and the commit that settles the night.

:class:`NightRows` receives each batch of metrics rows on the driver while the night renders: it
writes the provenance record of every output reported written, and keeps only the few columns the
commit needs, as Arrow (no re-reading of the night's metrics from storage).

:func:`commit` then, in this order: the new ledger is computed; every output that a removed ledger
row, a journal entry (tonight's or a dead night's) or an older tombstone names, and that the new
ledger does not claim, is written to a tombstone; the lease is checked; the ledger is written; the
tombstoned outputs are deleted (batched) and the journals and tombstones removed. A crash at any
point leaves state the next night settles: before the ledger write, the journals still name every
output this night may have written; after it, the tombstone names every output to delete.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from jobs.catalog import ledger as L
from jobs.catalog import quarantine as Q
from jobs.common.metrics import redact_columns
from jobs.common.storage import StorageOptions, join_uri, redact_uri
from jobs.common.storage_batch import existing_files, remove_many

ROW_COLUMNS = ("input_uri", "style", "status", "error_type", "error", "output_uri", "model_sha256")


class NightRows:
    """The consumer handed to the pipeline: ``rows.add(table)`` per batch of metrics rows."""

    def __init__(self, output: str, todo: pa.Table, run_id: str, options: StorageOptions | None) -> None:
        self.output, self.run_id, self.options = output, run_id, options
        self._todo_keys = L.keys(todo)
        # One entry per planned pair: the night's own work, already materialised for the pipeline.
        self._version = {(r["input_uri"], r["style"]): (r["input_version"], r["model_sha256"], r["output_uri"])
                         for r in todo.select(["input_uri", "style", "input_version", "model_sha256",
                                               "output_uri"]).to_pylist()}
        self._parts: list[pa.Table] = []

    def add(self, table: pa.Table) -> None:
        cols = [table.column(c).cast(pa.string()) if c in table.column_names else pa.nulls(table.num_rows, pa.string())
                for c in ROW_COLUMNS]
        # The plan names inputs by their redacted URI (jobs.catalog.plan.listed_sources), as the ledger will.
        part = redact_columns(pa.Table.from_arrays(cols, names=list(ROW_COLUMNS)), ("input_uri", "output_uri"), redact_uri)
        part = redact_columns(part, ("error",))
        ok = part.filter(pc.and_(pc.equal(part.column("status"), "ok"), pc.is_in(L.keys(part), value_set=self._todo_keys)))
        records = []
        for r in ok.select(["input_uri", "style", "output_uri", "model_sha256"]).to_pylist():
            version, sha, planned_out = self._version[(r["input_uri"], r["style"])]
            if r["output_uri"] != planned_out:
                continue  # not where the plan expected: the commit will not claim it either
            records.append({"input_uri": r["input_uri"], "style": r["style"], "input_version": version,
                            "model_sha256": r["model_sha256"] or sha, "run_id": self.run_id,
                            "output_uri": r["output_uri"]})
        L.write_provenance(self.output, records, self.options)
        self._parts.append(part.filter(pc.is_in(L.keys(part), value_set=self._todo_keys)))

    def table(self) -> pa.Table:
        if not self._parts:
            return pa.schema([(c, pa.string()) for c in ROW_COLUMNS]).empty_table()
        return pa.concat_tables(self._parts)


def _rendered_rows(todo: pa.Table, rows: pa.Table, existing: set[str], run_id: str) -> pa.Table:
    """Ledger rows for the pairs rendered ok whose output is where the plan put it and exists."""
    ok = rows.filter(pc.equal(rows.column("status"), "ok")).select(["input_uri", "style", "output_uri"])
    ok = ok.rename_columns(["input_uri", "style", "r_out"])
    joined = todo.join(ok, ["input_uri", "style"], join_type="inner")
    good = pc.and_(pc.equal(joined.column("output_uri"), joined.column("r_out")),
                   pc.is_in(joined.column("output_uri"), value_set=pa.array(sorted(existing), pa.string())))
    done = joined.filter(good)
    n = done.num_rows
    return pa.Table.from_arrays(
        [done.column(c) for c in L.ENTRY_COLUMNS[:-1]] + [pa.array([run_id] * n, pa.string()),
                                                          pa.array([L.now_utc()] * n, L.LEDGER_SCHEMA.field("updated_at").type)],
        schema=L.LEDGER_SCHEMA)


def _expected_per_style(out: str, ledger: pa.Table, todo: pa.Table) -> dict[str, int]:
    """What each style's prefix holds, about: last night's outputs plus tonight's (picks listing vs HEADs)."""
    expected = _style_counts(ledger)
    for s, n in _style_counts(todo).items():
        expected[s] = expected.get(s, 0) + n
    return {join_uri(out, s): n for s, n in expected.items()}


def _new_ledger(plan, rows: pa.Table, ledger: pa.Table, run_id: str, options: StorageOptions | None,
                per_style: dict[str, int]) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(tonight's rendered ledger rows, the new ledger, the old ledger rows it replaces or drops)."""
    ok_uris = pc.unique(rows.filter(pc.equal(rows.column("status"), "ok")).column("output_uri")).to_pylist()
    existing = existing_files(ok_uris, options, prefixes=per_style)
    rendered = _rendered_rows(plan.todo, rows, existing, run_id)
    upserts = pa.concat_tables([plan.adopted, rendered])
    gone = pa.concat_arrays([L.keys(plan.deleted).combine_chunks() if plan.deleted.num_rows else pa.array([], pa.string()),
                             L.keys(upserts).combine_chunks() if upserts.num_rows else pa.array([], pa.string())])
    removed = pc.is_in(L.keys(ledger), value_set=gone) if ledger.num_rows else pa.array([], pa.bool_())
    return rendered, pa.concat_tables([ledger.filter(pc.invert(removed)), upserts]), ledger.filter(removed)


def _doomed_outputs(released: pa.Table, journals: dict[str, pa.Table], todo: pa.Table, leftover: dict[str, pa.Array],
                    new_ledger: pa.Table, options: StorageOptions | None, per_style: dict[str, int]) -> pa.Array:
    """Outputs that a released ledger row, a journal entry or an older tombstone names, that the new
    ledger does not claim, and that exist."""
    candidates = [released.column("output_uri").combine_chunks()]
    candidates += [t.column("output_uri").combine_chunks() for t in journals.values()]
    candidates += [todo.column("output_uri").combine_chunks()] + list(leftover.values())
    everything = pc.unique(pa.concat_arrays([c.cast(pa.string()) for c in candidates]))
    unclaimed = everything.filter(pc.and_(pc.not_equal(everything, ""),
                                          pc.invert(pc.is_in(everything, value_set=new_ledger.column("output_uri")))))
    # Most unclaimed journal entries are pairs that failed and never wrote: delete only what exists.
    present = existing_files(unclaimed.to_pylist(), options, prefixes=per_style)
    return unclaimed.filter(pc.is_in(unclaimed, value_set=pa.array(sorted(present), pa.string())))


def _errors_by_type(rows: pa.Table, errors_rows: pa.Table, rendered: pa.Table) -> dict[str, int]:
    errors_by_type: dict[str, int] = {}
    for r in errors_rows.group_by("error_type").aggregate([([], "count_all")]).to_pylist():
        errors_by_type[r["error_type"] or "unknown"] = r["count_all"]
    missing = rows.filter(pc.equal(rows.column("status"), "ok")).num_rows - rendered.num_rows
    if missing:  # reported written but absent (or elsewhere than planned): retried next night
        errors_by_type["output_missing"] = missing
    return errors_by_type


def _permanent_failures(todo: pa.Table, errors_rows: pa.Table) -> dict[str, tuple[str, str, str]]:
    """Inputs whose every failure tonight was permanent: (input version, error type, error) each."""
    versions = {r["input_uri"]: r["input_version"] for r in todo.filter(
        pc.is_in(todo.column("input_uri"), value_set=errors_rows.column("input_uri"))).select(
        ["input_uri", "input_version"]).to_pylist()}
    failures = {}
    for r in errors_rows.to_pylist():
        if r["error_type"] in Q.PERMANENT_ERRORS and r["input_uri"] not in failures:
            failures[r["input_uri"]] = (versions.get(r["input_uri"], ""), r["error_type"], r["error"])
    transient = {r["input_uri"] for r in errors_rows.to_pylist() if r["error_type"] not in Q.PERMANENT_ERRORS}
    for uri in transient:
        failures.pop(uri, None)  # a transient failure says nothing about the file: the streak ends
    return failures


def commit(settings, plan, rows: pa.Table, ledger: pa.Table, journals: dict[str, pa.Table], own_journal: str | None,
           *, check_lease: Callable[[], None], options: StorageOptions | None,
           quarantine: pa.Table, listing_uris: pa.Array, quarantine_after: int) -> dict:
    """Settle the night (see the module docstring). Returns its counts."""
    out, run_id = settings.output, settings.run_id
    per_style = _expected_per_style(out, ledger, plan.todo)
    rendered, new_ledger, released = _new_ledger(plan, rows, ledger, run_id, options, per_style)
    leftover = L.read_tombstones(out, options)
    doomed = _doomed_outputs(released, journals, plan.todo, leftover, new_ledger, options, per_style)
    errors_rows = rows.filter(pc.equal(rows.column("status"), "error"))
    errors_by_type = _errors_by_type(rows, errors_rows, rendered)
    new_quarantine, newly = Q.update(quarantine, pc.unique(plan.todo.column("input_uri")), listing_uris,
                                     _permanent_failures(plan.todo, errors_rows), run_id, quarantine_after)

    tombstone = L.write_tombstones(out, run_id, doomed, options) if len(doomed) else None
    check_lease()
    L.write_ledger(out, new_ledger, options)
    Q.write(out, new_quarantine, options)
    removed_outputs = L.remove_outputs(out, doomed.to_pylist(), options)
    remove_many([*leftover, *([tombstone] if tombstone else []), *journals, *([own_journal] if own_journal else [])], options)
    return {"processed": rendered.num_rows, "deleted": plan.deleted.num_rows,
            "errors": sum(errors_by_type.values()), "errors_by_type": errors_by_type,
            "removed_outputs": removed_outputs, "ledger_rows": new_ledger.num_rows,
            "newly_quarantined": newly, "quarantined_inputs": Q.held(new_quarantine).num_rows}


def _style_counts(table: pa.Table) -> dict[str, int]:
    if not table.num_rows:
        return {}
    return {r["style"]: r["count_all"] for r in table.group_by("style").aggregate([([], "count_all")]).to_pylist()}
