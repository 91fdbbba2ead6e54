"""The nightly catalog run: ``python -m jobs.catalog --config FILE [--run-id ID] [--dry-run] [--full]``.

Each night lists the catalog (``source``), plans which (input, style) pairs need rendering against
the ledger under ``{output}/_catalog/`` (see :mod:`jobs.ledger`), renders only those with the batch
job (:func:`jobs.stylize.run`), then commits: the ledger gains the pairs whose output now exists,
deleted inputs lose their outputs and ledger rows, and the night is recorded in
``{output}/_runs/{run_id}.json`` and the run-history table.

A pair is rendered when the input is new or its version (S3 ETag, local size+mtime, else a content
hash) changed, when the style's checkpoint sha256 changed, when its output key changed (e.g. a new
``format``), or always with ``--full``. Errors stay out of the ledger, so the next night retries them.
Exit status: 0 when the night's error rate is within ``max_error_rate``, 1 when not, 2 when it could
not run (missing source or checkpoint, bad config).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq
from pydantic import model_validator

from . import cli_settings, stylize
from . import ledger as L
from .cli_settings import option
from .settings import JobSettings
from .stages import output_key, storage_options
from .storage import InputFile, StorageOptions, UnsafePathError, join_uri, list_images, read_bytes, write_bytes_atomic

JobError = stylize.JobError
# S3 LastModified has 1 s resolution and local file times lag time.time() by up to a tick: an output
# written by a dead night counts as its work if modified no earlier than this before it was planned.
MTIME_SLACK_S = 2.0
_HISTORY_COUNTS = ("processed", "skipped", "deleted", "errors", "recovered", "removed_outputs")


def _log(msg: str) -> None:
    print(f"[catalog] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Pair:
    """One (input, style) to render tonight."""

    input: InputFile
    style: str
    version: str
    model_sha256: str
    output_uri: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.input.uri, self.style)


@dataclass
class StylePlan:
    """What a night does for one style."""

    configured: bool = True
    new: list[Pair] = field(default_factory=list)
    changed: list[Pair] = field(default_factory=list)
    deleted: list[L.LedgerEntry] = field(default_factory=list)
    recovered: list[L.JournalEntry] = field(default_factory=list)
    unchanged: int = 0

    def counts(self) -> dict[str, int]:
        return {"new": len(self.new), "changed": len(self.changed), "deleted": len(self.deleted),
                "unchanged": self.unchanged, "recovered": len(self.recovered)}


@dataclass
class NightPlan:
    """The listing against the ledger, per style."""

    run_id: str
    inputs: int
    style_sha256: dict[str, str]
    styles: dict[str, StylePlan]
    full: bool = False

    def todo(self) -> list[Pair]:
        return [p for sp in self.styles.values() for p in sp.new + sp.changed]

    def total(self, what: str) -> int:
        return sum(sp.counts()[what] for sp in self.styles.values())


# ---------------------------------------------------------------- planning (reads only)


def style_digests(settings: JobSettings, options: StorageOptions) -> dict[str, str]:
    """sha256 of each style's checkpoint bytes (of its style image for optimize-only styles)."""
    out = {}
    for name in settings.style_names:
        uri = settings.styles.get(name) or settings.style_images[name]
        try:
            out[name] = hashlib.sha256(read_bytes(uri, options)).hexdigest()
        except FileNotFoundError:
            raise JobError(f"style {name!r}: checkpoint not found: {uri}") from None
    return out


def _recover(plan: NightPlan, journals: dict[str, list[L.JournalEntry]], options: StorageOptions) -> None:
    """Move pairs a dead night already rendered (same input version, model and key) out of the todo."""
    every = sorted((e for entries in journals.values() for e in entries), key=lambda e: e.planned_at)
    latest = {(e.input_uri, e.style): e for e in every}  # the last night that planned the pair wins
    matches = {}
    for p in plan.todo():
        e = latest.get(p.key)
        if e and p.version and p.output_uri and (e.input_version, e.model_sha256, e.output_uri) == (
                p.version, p.model_sha256, p.output_uri):
            matches[p.key] = e
    mtimes = L.output_mtimes([e.output_uri for e in matches.values()], options)
    for sp in plan.styles.values():
        for bucket in (sp.new, sp.changed):
            keep = []
            for p in bucket:
                e = matches.get(p.key)
                mtime = mtimes.get(e.output_uri) if e else None
                if e and mtime is not None and mtime >= e.planned_at - MTIME_SLACK_S:
                    sp.recovered.append(e)
                else:
                    keep.append(p)
            bucket[:] = keep


def build_plan(
    settings: JobSettings,
    inputs: Sequence[InputFile],
    versions: dict[str, str],
    style_sha256: dict[str, str],
    ledger: L.Ledger,
    *,
    full: bool = False,
) -> NightPlan:
    """Listing x configured styles vs the ledger (no I/O)."""
    configured = settings.style_names
    plans = {s: StylePlan() for s in configured}
    for style in configured:
        sp, sha = plans[style], style_sha256[style]
        for f in inputs:
            version = versions.get(f.uri, "")
            try:
                out = output_key(settings, f.rel_path, style)
            except UnsafePathError:
                out = ""  # the pipeline turns it into an error row
            entry = ledger.get((f.uri, style))
            pair = Pair(f, style, version, sha, out)
            if entry is None:
                sp.new.append(pair)
            elif full or not version or (entry.input_version, entry.model_sha256, entry.output_uri) != (version, sha, out):
                sp.changed.append(pair)
            else:
                sp.unchanged += 1
    present = {f.uri for f in inputs}
    for entry in ledger.values():
        sp = plans.setdefault(entry.style, StylePlan(configured=False))
        if entry.input_uri not in present:
            sp.deleted.append(entry)
        elif not sp.configured:
            sp.unchanged += 1  # a style dropped from the config: its outputs are kept, not re-rendered
    return NightPlan(settings.run_id, len(inputs), style_sha256, plans, full)


def plan_night(settings: JobSettings, *, full: bool = False) -> NightPlan:
    """List the catalog, hash the checkpoints, read the ledger and journals; writes nothing."""
    opts = storage_options(settings)
    try:
        inputs = list_images(settings.input, opts)
    except FileNotFoundError as exc:
        # An empty S3 prefix looks missing; treating it as empty would delete every output.
        raise JobError(f"source not found (or an empty prefix): {exc}") from None
    plan = build_plan(settings, inputs, L.input_versions(inputs, opts), style_digests(settings, opts),
                      L.read_ledger(settings.output, opts), full=full)
    if not full:
        _recover(plan, L.read_journals(settings.output, opts), opts)
    return plan


def describe_plan(plan: NightPlan) -> str:
    """The plan as a table: per style, new / changed / deleted / unchanged (and recovered)."""
    cols = ("new", "changed", "deleted", "unchanged", "recovered")
    width = max([5] + [len(s) for s in plan.styles])
    lines = [f"plan for run {plan.run_id}: {plan.inputs} inputs listed"
             + (" (--full: re-render everything)" if plan.full else ""),
             f"  {'style':<{width}}  " + "  ".join(f"{c:>9}" for c in cols)]
    for name, sp in plan.styles.items():
        counts = sp.counts()
        note = "" if sp.configured else "  (not configured: outputs kept)"
        lines.append(f"  {name:<{width}}  " + "  ".join(f"{counts[c]:>9}" for c in cols) + note)
    lines.append(f"  to render: {len(plan.todo())} pair(s)")
    return "\n".join(lines)


# ---------------------------------------------------------------- rendering and commit


def _render(settings: JobSettings, pairs: Sequence[Pair]) -> dict:
    """Run the batch job on exactly these pairs; returns its summary."""
    styles = {p.style for p in pairs}  # styles with no work tonight: no model load, no skipped rows
    sub = settings.replace(styles={s: u for s, u in settings.styles.items() if s in styles},
                              style_images={s: u for s, u in settings.style_images.items() if s in styles})
    todo: dict[str, list[str]] = {}
    inputs: dict[str, InputFile] = {}
    for p in pairs:
        todo.setdefault(p.input.uri, []).append(p.style)
        inputs.setdefault(p.input.uri, p.input)
    return stylize.run(sub, inputs=list(inputs.values()), todo=todo)


def _metrics_rows(summary: dict, options: StorageOptions) -> list[dict]:
    cols = ["input_uri", "style", "status", "error_type", "output_uri", "model_sha256"]
    rows: list[dict] = []
    for uri in summary.get("metrics_files", []):
        rows += pq.read_table(io.BytesIO(read_bytes(uri, options)), columns=cols).to_pylist()
    return rows


def _commit(settings: JobSettings, plan: NightPlan, rows: list[dict], ledger: L.Ledger,
            journals: list[str], options: StorageOptions) -> dict:
    """Ledger += rendered pairs whose output exists; deleted inputs' outputs go. Returns counts."""
    out, run_id, now = settings.output, settings.run_id, L.now_utc()
    planned = {p.key: p for p in plan.todo()}
    new = dict(ledger)
    garbage: list[str] = []
    deleted = 0
    for sp in plan.styles.values():
        for entry in sp.deleted:
            new.pop(entry.key, None)
            garbage.append(entry.output_uri)
            deleted += 1
        for e in sp.recovered:
            old = new.get((e.input_uri, e.style))
            if old and old.output_uri != e.output_uri:
                garbage.append(old.output_uri)
            new[(e.input_uri, e.style)] = L.LedgerEntry(e.input_uri, e.rel_path, e.style, e.input_version,
                                                        e.model_sha256, e.output_uri, e.run_id, now)
    ok = [r for r in rows if r["status"] == "ok" and (r["input_uri"], r["style"]) in planned]
    mtimes = L.output_mtimes([r["output_uri"] for r in ok], options)
    errors = Counter(r["error_type"] or "unknown" for r in rows if r["status"] == "error")
    processed = 0
    for r in ok:
        if mtimes.get(r["output_uri"]) is None:  # reported written but absent: retry next night
            errors["output_missing"] += 1
            continue
        p = planned[(r["input_uri"], r["style"])]
        old = new.get(p.key)
        if old and old.output_uri != r["output_uri"]:
            garbage.append(old.output_uri)  # e.g. the format changed: the old file is no one's now
        new[p.key] = L.LedgerEntry(p.input.uri, p.input.rel_path, p.style, p.version,
                                   r["model_sha256"] or p.model_sha256, r["output_uri"], run_id, now)
        processed += 1
    claimed = {e.output_uri for e in new.values()}
    leftover = L.read_tombstones(out, options)  # a night that died between its ledger write and deletes
    doomed = sorted({u for u in garbage + [u for us in leftover.values() for u in us] if u and u not in claimed})
    tombstone = L.write_tombstones(out, run_id, doomed, options) if doomed else None
    L.write_ledger(out, new, options)
    L.remove_files(doomed, options)
    L.remove_files([*leftover, *([tombstone] if tombstone else []), *journals, L.journal_uri(out, run_id)], options)
    return {"processed": processed, "deleted": deleted, "errors": sum(errors.values()),
            "errors_by_type": dict(errors), "removed_outputs": len(doomed), "ledger_rows": len(new)}


def run_night(settings: JobSettings, *, full: bool = False, dry_run: bool = False) -> dict:
    """Plan, render, commit one night; returns its summary (also ``{output}/_runs/{run_id}.json``)."""
    opts = storage_options(settings)
    settings = settings.replace(skip_existing=False)  # the ledger decides, not existence
    started, t0 = L.now_utc(), time.time()
    plan = plan_night(settings, full=full)
    plan_s = time.time() - t0
    base = {"run_id": settings.run_id, "source": settings.input, "output": settings.output, "full": full,
            "inputs": plan.inputs, "plan": {s: sp.counts() for s, sp in plan.styles.items()},
            "style_sha256": plan.style_sha256}
    if dry_run:
        return base | {"dry_run": True, "to_render": len(plan.todo()), "plan_text": describe_plan(plan)}
    _log(describe_plan(plan))
    timings = {"plan_s": plan_s, "render_s": 0.0, "commit_s": 0.0}
    history = {"run_id": settings.run_id, "full": full, "started_at": started, "inputs": plan.inputs,
               "styles": len(settings.style_names)}
    try:
        todo = plan.todo()
        journals = list(L.read_journals(settings.output, opts))
        pipeline = None
        if todo:
            planned_at = time.time()
            L.write_journal(settings.output, settings.run_id, [
                L.JournalEntry(p.input.uri, p.input.rel_path, p.style, p.version, p.model_sha256, p.output_uri,
                               settings.run_id, planned_at) for p in todo], opts)
            t = time.time()
            pipeline = _render(settings, todo)
            timings["render_s"] = time.time() - t
        t = time.time()
        rows = _metrics_rows(pipeline, opts) if pipeline else []
        counts = _commit(settings, plan, rows, L.read_ledger(settings.output, opts), journals, opts)
        timings["commit_s"] = time.time() - t
    except BaseException as exc:
        _record_failure(settings, history, timings, t0, exc, opts)
        raise
    attempted = counts["processed"] + counts["errors"]
    error_rate = counts["errors"] / attempted if attempted else 0.0
    timings["wall_s"] = time.time() - t0
    summary = base | counts | {
        "status": "ok", "dry_run": False,
        "skipped": plan.total("unchanged"), "recovered": plan.total("recovered"),
        "error_rate": error_rate, "max_error_rate": settings.max_error_rate,
        "passed": error_rate <= settings.max_error_rate,
        "started_at": started.isoformat(), "finished_at": L.now_utc().isoformat(),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "pipeline": pipeline,
    }
    summary["summary_uri"] = join_uri(settings.output, "_runs", f"{settings.run_id}.json")
    write_bytes_atomic(summary["summary_uri"], json.dumps(summary, indent=2, sort_keys=True, default=str).encode(), opts)
    L.append_history(settings.output, history | timings | {k: summary[k] for k in _HISTORY_COUNTS} | {
        "status": "ok", "finished_at": L.now_utc(), "error": None}, opts)
    return summary


def _record_failure(settings: JobSettings, history: dict, timings: dict, t0: float, exc: BaseException,
                    opts: StorageOptions) -> None:
    """Best effort: a night that fails in-process still leaves a history row saying so."""
    try:
        L.append_history(settings.output, history | timings | {
            "status": "failed", "finished_at": L.now_utc(), "wall_s": time.time() - t0,
            "error": f"{type(exc).__name__}: {exc}"[:2000]}, opts)
    except Exception as inner:  # the store may be what failed; the original error matters more
        _log(f"could not record the failure in the history: {inner}")


# ---------------------------------------------------------------- command line


class CatalogSettings(JobSettings):
    """The batch job's settings (every option works here too) plus the catalog's own."""

    input: str | None = option(None, "catalog prefix URI (the job's --input; `source:` in YAML)", flag="--source",
                               group="nightly catalog", min_length=1)
    output: str | None = option(None, "output prefix URI: outputs, _metrics/, _runs/ and the _catalog/ ledger",
                                group="nightly catalog", min_length=1)
    dry_run: bool = option(False, "print the plan per style and write nothing", group="nightly catalog")
    full: bool = option(False, "re-render every input x style", group="nightly catalog")

    @model_validator(mode="before")
    @classmethod
    def _required(cls, data: Any) -> Any:
        if isinstance(data, dict):
            missing = [n for n, k in (("source", "input"), ("output", "output")) if not data.get(k)]
            if not (data.get("styles") or data.get("style_images")):
                missing.append("styles")
            if missing:
                raise ValueError(f"the nightly catalog needs {', '.join(missing)} (in --config or as flags)")
            if data.get("skip_existing"):
                _log("ignoring skip_existing: the ledger decides what to render")
                data = {**data, "skip_existing": False}
        return data


def build_parser() -> argparse.ArgumentParser:
    return cli_settings.build_parser(
        CatalogSettings, "python -m jobs.catalog",
        "Nightly incremental run: render only new or changed (input, style) pairs of the catalog under --source, "
        "remove outputs of deleted inputs, keep a ledger under {output}/_catalog/. A YAML --config takes every "
        "option with underscores, `source` and `styles: {name: uri}`.")


def parse_args(argv: Sequence[str] | None = None) -> CatalogSettings:
    """Validated settings from flags and ``--config``; exits 2 with one line when they are invalid."""
    return cli_settings.parse(CatalogSettings, argv, build_parser())


def main(settings: CatalogSettings) -> int:
    try:
        summary = run_night(settings, full=settings.full, dry_run=settings.dry_run)
    except JobError as exc:
        _log(f"error: {exc}")
        return 2
    if summary["dry_run"]:
        print(summary["plan_text"])
        return 0
    print(f"night {summary['run_id']}: processed {summary['processed']}, skipped {summary['skipped']}, "
          f"deleted {summary['deleted']}, recovered {summary['recovered']}, errors {summary['errors']} "
          f"in {summary['timings']['wall_s']:.1f}s; summary {summary['summary_uri']}")
    return 0 if summary["passed"] else 1


def cli(argv: Sequence[str] | None = None) -> int:
    return main(parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
