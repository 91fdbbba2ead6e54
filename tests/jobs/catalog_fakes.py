"""A fake renderer and state checks for the nightly catalog's tests (no Ray, no torch).

The fake writes ``input_uri|input_version|model_sha256`` as each output, so a check can tell which
version of which input (and which model) an output was made from; inputs whose bytes start with
``BROKEN`` fail as ``unidentified`` (a permanent error), ``FLAKY`` as ``read_error`` (transient).
"""

from __future__ import annotations

import pyarrow as pa

from jobs.catalog import night as catalog
from jobs.catalog import ledger as L
from jobs.common.metrics import SCHEMA
from jobs.common.storage import get_filesystem, join_uri, read_bytes, write_bytes_atomic


class Crash(Exception):
    """A night killed at an injected point."""


class FakeRenderer:
    """``catalog._render`` stand-in; ``die_after=k``: write k outputs, report k - 1, then die."""

    def __init__(self, die_after: int | None = None, batch: int = 3) -> None:
        self.die_after, self.batch, self.rendered = die_after, batch, []

    def __call__(self, settings, todo: pa.Table, on_rows) -> dict:
        rows, written = [], 0
        for r in todo.to_pylist():
            data = read_bytes(r["input_uri"])
            status, etype = "ok", ""
            if data.startswith(b"BROKEN"):
                status, etype = "error", "unidentified"
            elif data.startswith(b"FLAKY"):
                status, etype = "error", "read_error"
            else:
                write_bytes_atomic(r["output_uri"], f"{r['input_uri']}|{r['input_version']}|{r['model_sha256']}".encode())
                written += 1
                self.rendered.append((r["input_uri"].rsplit("/", 1)[-1], r["style"]))
            rows.append({"run_id": settings.run_id, "input_uri": r["input_uri"], "rel_path": r["rel_path"],
                         "style": r["style"], "model_sha256": r["model_sha256"], "status": status,
                         "error_type": etype or None, "error": etype or None,
                         "output_uri": r["output_uri"] if status == "ok" else None})
            if self.die_after is not None and written >= self.die_after:
                on_rows(pa.Table.from_pylist(rows[:-1], schema=SCHEMA))  # the last output's row never arrives
                raise Crash(f"killed after {written} outputs")
            if len(rows) >= self.batch:
                on_rows(pa.Table.from_pylist(rows, schema=SCHEMA))
                rows = []
        if rows:
            on_rows(pa.Table.from_pylist(rows, schema=SCHEMA))
        return {"fake": True}


def fake_checkpoint(label: str) -> bytes:
    """Bytes that pass the driver's checkpoint check (a real torch.save file) and differ per label:
    the fake render never loads them; the catalog only hashes them into the model id."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"label": label}, buf)
    return buf.getvalue()


def style_outputs(output: str) -> set[str]:
    """Every file under the output prefix except the catalog's and the job's own folders."""
    fs, path = get_filesystem(output)
    fs.invalidate_cache(path)
    root = path.rstrip("/") + "/"
    try:
        found = fs.find(path)
    except FileNotFoundError:
        return set()
    rels = [f[len(root):] for f in found if f.startswith(root)]
    return {join_uri(output, r) for r in rels if r.split("/", 1)[0] not in ("_catalog", "_runs", "_metrics")}


def check_settled(output: str, listing_versions: dict[str, str]) -> pa.Table:
    """The catalog's promise after a clean night: every style output is named by a ledger row, every
    ledger row's output exists and holds what the row says, rows of listed inputs are current, no
    journal or tombstone is left. Returns the ledger."""
    ledger = L.read_ledger(output)
    named = ledger.column("output_uri").to_pylist()
    assert style_outputs(output) == set(named), "orphans or missing outputs"
    for row in ledger.to_pylist():
        body = read_bytes(row["output_uri"]).decode()
        assert body == f"{row['input_uri']}|{row['input_version']}|{row['model_sha256']}", row
        if row["input_uri"] in listing_versions:
            assert row["input_version"] == listing_versions[row["input_uri"]], row
    assert not L.read_journals(output) and not L.read_tombstones(output)
    return ledger


def versions(source: str) -> dict[str, str]:
    from jobs.common.listing import list_images

    files = list_images(source)
    return L.input_versions(files, None) | {f.uri: f.version for f in files if f.version}


def settings_for(source: str, output: str, styles: dict[str, str], run_id: str, *extra: str):
    argv = ["--source", source, "--output", output, "--run-id", run_id, "--quiet", "--contact-sheet", "0",
            *[f"--style={k}={v}" for k, v in styles.items()], *extra]
    settings = catalog.parse_args(argv)
    return settings, catalog.catalog_options(settings)
