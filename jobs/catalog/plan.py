"""Planning a night, column by column: the listing x configured styles against the ledger.

No I/O here except through the ``probe`` a caller passes (provenance and existence of the outputs a
dead night journaled), and no Python object per catalog row: the listing, ledger and plan are Arrow
tables joined with Arrow's hash join, so a 10^6-input catalog plans in seconds (see
``benchmarks/bench_nightly.py``). Only a dead night's journal entries are looked at one by one.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from jobs.catalog import ledger as L
from jobs.common.metrics import redact_columns
from jobs.common.storage import InputFile, UnsafePathError, join_uri, redact_uri, safe_rel_components

# A todo row is a ledger row to be (kind: new | changed | recheck, the last a claimed output a dead
# night may have overwritten).
PLAN_SCHEMA = pa.schema([(n, pa.string()) for n in L.ENTRY_COLUMNS[:-1]] + [("kind", pa.string())])
LISTING_SCHEMA = pa.schema([("input_uri", pa.string()), ("rel_path", pa.string()), ("input_version", pa.string())])

# probe(output uris) -> ({uri: provenance record}, {uris that exist})
Probe = Callable[[Sequence[str]], tuple[dict[str, dict], set[str]]]


class AmbiguousInputs(ValueError):
    """Two listed inputs that differ only in a secret (a signed query's value): redacted, the ledger
    could not tell them apart."""


def _named(inputs: Sequence[InputFile]) -> tuple[pa.Array, pa.Array]:
    """(uris, redacted uris) of the inputs as Arrow columns: Python sees only URIs with a secret."""
    raw = pa.array([f.uri for f in inputs], pa.string())
    return raw, redact_columns(pa.table({"u": raw}), ("u",), redact_uri).column("u").combine_chunks()


def listed_sources(inputs: Sequence[InputFile]) -> dict[str, str]:
    """``{redacted uri: uri}`` for the inputs whose URI carries a secret. The ledger, journals and
    quarantine name an input by its redacted URI (a presigned URL's new signature each night is the
    same input); :class:`AmbiguousInputs` when two inputs would share one name."""
    raw, shown = _named(inputs)
    changed = pc.not_equal(raw, shown)
    if not pc.any(changed).as_py():
        return {}
    if pc.count_distinct(shown).as_py() != pc.count_distinct(raw).as_py():
        pairs = pa.table({"s": shown, "r": raw}).group_by(["s", "r"]).aggregate([])
        counts = pairs.group_by("s").aggregate([([], "count_all")])
        name = counts.filter(pc.greater(counts.column("count_all"), 1)).column("s")[0].as_py()
        raise AmbiguousInputs(f"inputs {name} and another differ only in a secret (user:password@ or a signed "
                              "query value): the catalog names inputs by their redacted URI; list each object once")
    return dict(zip(shown.filter(changed).to_pylist(), raw.filter(changed).to_pylist()))


def listing_table(inputs: Sequence[InputFile], versions: dict[str, str]) -> pa.Table:
    """The listing as the ledger names it: inputs by their redacted URI (:func:`listed_sources`)."""
    return pa.table({"input_uri": _named(inputs)[1], "rel_path": [f.rel_path for f in inputs],
                     "input_version": [versions.get(f.uri) or f.version or "" for f in inputs]}, schema=LISTING_SCHEMA)


def _rel_out(rel_path: str, ext: str) -> str:
    """The output's key under its style prefix (as :func:`jobs.common.storage.output_uri`), "" if unsafe."""
    try:
        parts = safe_rel_components(rel_path)
    except UnsafePathError:
        return ""
    parts[-1] = posixpath.splitext(parts[-1])[0] + ext
    return "/".join(parts)


# Relative paths already in normal form (no empty, "." or ".." component, no backslash, control
# character, leading "/" or drive letter) take the vectorised path; the rest go through the
# pipeline's own Python check one by one.
_PLAIN = r"^(?:[^/\\\x00-\x1f\x7f]+/)*[^/\\\x00-\x1f\x7f]+$"
_DOT_PART = r"(?:^|/)\.\.?(?:/|$)"
_DRIVE = r"^[A-Za-z]:"
# posixpath.splitext on the last component: its last dot, if a non-dot character comes before it.
_EXT = r"^((?:.*/)?\.*[^./][^/]*)\.[^./]*$"


def _rel_outs(rel: pa.Array, ext: str) -> pa.Array:
    """:func:`_rel_out` for a whole column."""
    plain = pc.and_(pc.match_substring_regex(rel, _PLAIN),
                    pc.invert(pc.or_(pc.match_substring_regex(rel, _DOT_PART), pc.match_substring_regex(rel, _DRIVE))))
    plain = pc.fill_null(plain, False)
    has_ext = pc.match_substring_regex(rel, _EXT)
    fast = pc.if_else(has_ext, pc.replace_substring_regex(rel, _EXT, "\\1" + ext),
                      pc.binary_join_element_wise(rel, pa.scalar(ext), ""))
    odd = pc.indices_nonzero(pc.invert(plain)).to_pylist()
    if not odd:
        return fast
    slow = pa.array([_rel_out(r, ext) for r in rel.take(pa.array(odd)).to_pylist()], pa.string())
    return pc.replace_with_mask(fast, pc.invert(plain), slow)


@dataclass
class Guard:
    """The deletion guard's verdict on a plan."""

    ledger_inputs: int
    deleted_inputs: int
    allowed: int
    empty_listing: bool

    @property
    def tripped(self) -> bool:
        return (self.empty_listing and self.ledger_inputs > 0) or self.deleted_inputs > self.allowed

    def describe(self) -> str:
        if self.empty_listing and self.ledger_inputs:
            return (f"the catalog listing is empty but the ledger holds {self.ledger_inputs} inputs: "
                    "refusing to delete all their outputs")
        share = self.deleted_inputs / self.ledger_inputs if self.ledger_inputs else 0.0
        verdict = "over" if self.tripped else "within"
        return (f"{self.deleted_inputs} of {self.ledger_inputs} inputs gone ({share:.1%}), {verdict} the limit of "
                f"{self.allowed} (max_delete_fraction, max_delete_floor)")


@dataclass
class NightPlan:
    """What one night does. Tables: ``todo`` (:data:`PLAN_SCHEMA`), ``deleted`` and ``adopted``
    (:data:`jobs.catalog.ledger.LEDGER_SCHEMA`)."""

    run_id: str
    inputs: int
    style_sha256: dict[str, str]
    configured: list[str]
    todo: pa.Table
    deleted: pa.Table
    adopted: pa.Table
    unchanged: Counter = field(default_factory=Counter)
    quarantined: Counter = field(default_factory=Counter)
    guard: Guard | None = None
    full: bool = False

    def counts(self) -> dict[str, dict[str, int]]:
        """Per style: new, changed, recheck, deleted, unchanged, recovered, quarantined."""
        styles = list(self.configured) + sorted(
            {*pc.unique(self.deleted.column("style")).to_pylist(), *self.unchanged} - set(self.configured))
        out = {s: dict.fromkeys(("new", "changed", "recheck", "deleted", "unchanged", "recovered", "quarantined"), 0)
               for s in styles}
        for table, col in ((self.todo, "kind"), (self.deleted, None), (self.adopted, None)):
            if not table.num_rows:
                continue
            names = ["style", col] if col else ["style"]
            for row in table.group_by(names).aggregate([([], "count_all")]).to_pylist():
                what = row[col] if col else ("deleted" if table is self.deleted else "recovered")
                out[row["style"]][what] += row["count_all"]
        for s, n in self.unchanged.items():
            out[s]["unchanged"] += n
        for s, n in self.quarantined.items():
            out[s]["quarantined"] += n
        return out

    def total(self, what: str) -> int:
        return sum(c[what] for c in self.counts().values())


def _expected(settings, listing: pa.Table, style_sha256: dict[str, str]) -> pa.Table:
    """Listing x configured styles with the model and output each pair would have tonight."""
    from stylize_core.image_io import FORMAT_EXTENSIONS  # Pillow only

    ext = FORMAT_EXTENSIONS[settings.format]
    ext = ext if ext.startswith(".") else f".{ext}"
    rel_out = _rel_outs(listing.column("rel_path").combine_chunks(), ext)
    unsafe = pc.equal(rel_out, "")
    parts = []
    for style in settings.style_names:
        base = join_uri(settings.output, style) + "/"
        n = listing.num_rows
        out = pc.if_else(unsafe, "", pc.binary_join_element_wise(pa.array([base] * n, pa.string()), rel_out, ""))
        parts.append(pa.table({
            "input_uri": listing.column("input_uri"), "rel_path": listing.column("rel_path"),
            "style": pa.array([style] * n, pa.string()), "input_version": listing.column("input_version"),
            "model_sha256": pa.array([style_sha256[style]] * n, pa.string()), "output_uri": out}))
    return pa.concat_tables(parts) if parts else PLAN_SCHEMA.empty_table().drop(["kind"])


def _with_kind(table: pa.Table, kind: str) -> pa.Table:
    return table.select(PLAN_SCHEMA.names[:-1]).append_column("kind", pa.array([kind] * table.num_rows, pa.string()))


def build_plan(settings, listing: pa.Table, style_sha256: dict[str, str], ledger: pa.Table, *,
               quarantined: pa.Table | None = None, journal: pa.Table | None = None,
               probe: Probe | None = None, full: bool = False,
               max_delete_fraction: float = 0.1, max_delete_floor: int = 2) -> NightPlan:
    """Classify every (input, style): new, changed, unchanged, quarantined; ledger rows whose input
    is gone are ``deleted``; a dead night's journal entries are settled through ``probe``."""
    configured = list(settings.style_names)
    expected = _expected(settings, listing, style_sha256)
    side = ledger.select(["input_uri", "style", "input_version", "model_sha256", "output_uri"]).rename_columns(
        ["input_uri", "style", "l_version", "l_sha", "l_out"])
    side = side.append_column("l_present", pa.array([True] * side.num_rows, pa.bool_()))
    joined = expected.join(side, ["input_uri", "style"], join_type="left outer")
    present = pc.fill_null(joined.column("l_present"), False)
    differs = pc.fill_null(pc.or_(pc.or_(pc.not_equal(joined.column("input_version"), joined.column("l_version")),
                                         pc.not_equal(joined.column("model_sha256"), joined.column("l_sha"))),
                                  pc.not_equal(joined.column("output_uri"), joined.column("l_out"))), True)
    changed = pc.and_(present, pc.or_(pc.or_(differs, pa.scalar(full)), pc.equal(joined.column("input_version"), "")))
    held = pa.array([False] * joined.num_rows, pa.bool_())
    if quarantined is not None and quarantined.num_rows:  # held back until the input's content changes
        qkeys = pc.binary_join_element_wise(quarantined.column("input_uri"), quarantined.column("input_version"), "\x00")
        held = pc.is_in(pc.binary_join_element_wise(joined.column("input_uri"), joined.column("input_version"), "\x00"),
                        value_set=qkeys)
    plan_new = joined.filter(pc.and_(pc.invert(present), pc.invert(held)))
    plan_changed = joined.filter(pc.and_(changed, pc.invert(held)))
    unchanged_rows = joined.filter(pc.and_(pc.and_(present, pc.invert(changed)), pc.invert(held)))
    todo = pa.concat_tables([_with_kind(plan_new, "new"), _with_kind(plan_changed, "changed")])

    listed = pc.is_in(ledger.column("input_uri"), value_set=listing.column("input_uri"))
    deleted = ledger.filter(pc.invert(listed))
    kept_unconfigured = ledger.filter(pc.and_(listed, pc.invert(pc.is_in(ledger.column("style"),
                                                                         value_set=pa.array(configured, pa.string())))))
    unchanged = Counter(_count_by_style(unchanged_rows)) + Counter(_count_by_style(kept_unconfigured))
    plan = NightPlan(settings.run_id, listing.num_rows, dict(style_sha256), configured, todo, deleted,
                     L.LEDGER_SCHEMA.empty_table(), unchanged, Counter(_count_by_style(joined.filter(held))),
                     full=full)
    ledger_inputs = len(pc.unique(ledger.column("input_uri")))
    deleted_inputs = len(pc.unique(deleted.column("input_uri")))
    plan.guard = Guard(ledger_inputs, deleted_inputs, max(max_delete_floor, int(max_delete_fraction * ledger_inputs)),
                       listing.num_rows == 0)
    if journal is not None and journal.num_rows and probe is not None:
        _settle(plan, journal, ledger, unchanged_rows, probe)
    plan.todo = plan.todo.sort_by([("input_uri", "ascending"), ("style", "ascending")])
    return plan


def _count_by_style(table: pa.Table) -> dict[str, int]:
    if not table.num_rows:
        return {}
    return {r["style"]: r["count_all"] for r in table.group_by("style").aggregate([([], "count_all")]).to_pylist()}


def _settle(plan: NightPlan, journal: pa.Table, ledger: pa.Table, unchanged_rows: pa.Table, probe: Probe) -> None:
    """Each entry of a dead night's journal: adopt its output when the provenance stored with it
    matches tonight's plan; re-render ("recheck") a pair the ledger still claims whose output is
    missing or not what the ledger says; everything else is left for the commit to delete, since
    nobody claims it (the commit deletes every journaled output the new ledger does not name)."""
    jkeys = pc.unique(L.keys(journal))
    entries = {(r["input_uri"], r["style"], r["output_uri"]) for r in
               journal.select(["input_uri", "style", "output_uri"]).to_pylist()}
    todo_hit = plan.todo.filter(pc.is_in(L.keys(plan.todo), value_set=jkeys)).to_pylist()
    claimed_hit = ledger.filter(pc.is_in(L.keys(ledger), value_set=jkeys)).to_pylist()
    unchanged_hit = {(r["input_uri"], r["style"]): r for r in
                     unchanged_rows.filter(pc.is_in(L.keys(unchanged_rows), value_set=jkeys)).to_pylist()}
    records, existing = probe(sorted({u for _, _, u in entries if u}))

    def made_from(uri: str, input_uri: str, style: str, version: str, sha: str) -> dict | None:
        rec = records.get(uri)
        ok = rec and uri in existing and (rec.get("input_uri"), rec.get("style"), rec.get("input_version"),
                                          rec.get("model_sha256")) == (input_uri, style, version, sha)
        return rec if ok else None

    adopted, adopted_keys = [], set()
    for p in todo_hit:
        key = (p["input_uri"], p["style"])
        if (*key, p["output_uri"]) not in entries or not p["output_uri"] or not p["input_version"]:
            continue  # an input without a version is re-rendered every night: nothing to match against
        rec = made_from(p["output_uri"], *key, p["input_version"], p["model_sha256"])
        if rec:
            adopted.append({**{c: p[c] for c in L.ENTRY_COLUMNS[:-1]}, "run_id": rec.get("run_id", ""),
                            "updated_at": L.now_utc()})
            adopted_keys.add(key)
    recheck = []
    configured = set(plan.configured)
    for row in claimed_hit:
        key, uri = (row["input_uri"], row["style"]), row["output_uri"]
        if (*key, uri) not in entries or key in adopted_keys:
            continue
        if row["style"] not in configured:  # a dropped style: no re-render; the ledger follows the output
            rec = records.get(uri)
            if rec and uri in existing and rec.get("input_uri") == key[0] and rec.get("style") == key[1]:
                adopted.append({**row, "input_version": rec.get("input_version", ""),
                                "model_sha256": rec.get("model_sha256", ""), "run_id": rec.get("run_id", ""),
                                "updated_at": L.now_utc()})
            continue
        if key in unchanged_hit and not made_from(uri, *key, row["input_version"], row["model_sha256"]):
            recheck.append(unchanged_hit[key])
    if adopted_keys:
        akeys = pa.array([f"{u}\x00{s}" for u, s in adopted_keys], pa.string())
        plan.todo = plan.todo.filter(pc.invert(pc.is_in(L.keys(plan.todo), value_set=akeys)))
    if adopted:
        plan.adopted = pa.Table.from_pylist(adopted, schema=L.LEDGER_SCHEMA)
    if recheck:
        plan.todo = pa.concat_tables([plan.todo, _with_kind(pa.Table.from_pylist(recheck), "recheck")])
        for r in recheck:
            plan.unchanged[r["style"]] -= 1


def describe_plan(plan: NightPlan) -> str:
    """The plan as a table per style, then what the deletion guard says."""
    cols = ("new", "changed", "recheck", "deleted", "unchanged", "recovered", "quarantined")
    counts = plan.counts()
    width = max([5] + [len(s) for s in counts])
    lines = [f"plan for run {plan.run_id}: {plan.inputs} inputs listed"
             + (" (--full: re-render everything)" if plan.full else ""),
             f"  {'style':<{width}}  " + "  ".join(f"{c:>11}" for c in cols)]
    for name, c in counts.items():
        note = "" if name in plan.configured else "  (not configured: outputs kept)"
        lines.append(f"  {name:<{width}}  " + "  ".join(f"{c[k]:>11}" for k in cols) + note)
    lines.append(f"  to render: {plan.todo.num_rows} pair(s)")
    if plan.guard:
        lines.append(f"  deletion guard: {plan.guard.describe()}" + (" -> REFUSED" if plan.guard.tripped else ""))
    if plan.deleted.num_rows:
        shown = plan.deleted.column("output_uri").to_pylist()[:20]
        lines += ["  would delete:"] + [f"    {u}" for u in shown]
        if plan.deleted.num_rows > len(shown):
            lines.append(f"    ... and {plan.deleted.num_rows - len(shown)} more")
    return "\n".join(lines)
