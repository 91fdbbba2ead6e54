"""Plan and commit one night of a large catalog: ``python benchmarks/bench_nightly.py [--rows 1000000]``.

A ledger of ``--rows`` (input, style) rows and a listing of as many inputs, ``--changed`` of them
with a new version: prints the planning time, the driver's peak RSS, and the commit time (ledger
rewrite on local disk, existence check of the rendered outputs, tombstones) for a night that
rendered every changed pair. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_tables(rows: int, changed: float, src: str, out: str, sha: str) -> tuple[pa.Table, pa.Table]:
    """(listing, ledger) built column-wise: the benchmark itself keeps no Python object per row."""
    from jobs.catalog import ledger as L

    ids = pc.cast(pa.array(np.arange(rows)), pa.string())
    rel = pc.binary_join_element_wise(pc.utf8_lpad(ids, 7, "0"), pa.scalar(".png"), "")
    uri = pc.binary_join_element_wise(pa.scalar(src + "/"), rel, "")
    version = pc.binary_join_element_wise(pa.scalar("etag-"), ids, "")
    listing = pa.table({"input_uri": uri, "rel_path": rel, "input_version": version})
    n_changed = int(rows * changed)
    rng = np.random.default_rng(0)
    flip = np.zeros(rows, dtype=bool)
    flip[rng.choice(rows, n_changed, replace=False)] = True
    old_version = pc.if_else(pa.array(flip), pc.binary_join_element_wise(version, pa.scalar("-old"), ""), version)
    output = pc.binary_join_element_wise(pa.scalar(out + "/a/"), pc.utf8_replace_slice(rel, 7, 11, ".jpg"), "")
    n = rows
    ledger = pa.Table.from_arrays([uri, rel, pa.array(["a"] * n), old_version, pa.array([sha] * n), output,
                                   pa.array(["old"] * n),
                                   pa.array(np.full(n, np.datetime64(dt.datetime(2026, 1, 1), "us")),
                                            pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))],
                                  schema=L.LEDGER_SCHEMA)
    return listing, ledger


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--changed", type=float, default=0.01)
    args = p.parse_args()

    from jobs.catalog import ledger as L
    from jobs.catalog.commit import commit
    from jobs.catalog.plan import build_plan
    from jobs.batch.settings import JobSettings

    work = tempfile.mkdtemp(prefix="bench-nightly-")
    src, out, sha = "s3://bucket/catalog", os.path.join(work, "out"), "f" * 64
    settings = JobSettings(input=src, output=out, styles={"a": "/a.pth"}, run_id="bench")
    base = rss_mib()
    t = time.perf_counter()
    listing, ledger = make_tables(args.rows, args.changed, src, out, sha)
    print(f"built listing + ledger of {args.rows:,} rows in {time.perf_counter() - t:.1f}s "
          f"(RSS {rss_mib():.0f} MiB, {base:.0f} MiB before)")

    # The listing as jobs.common.listing.list_images returns it today (one InputFile per input) -> Arrow.
    from jobs.catalog.plan import listing_table
    from jobs.common.storage import InputFile

    t = time.perf_counter()
    files = [InputFile(u, r, None, v) for u, r, v in zip(*(listing.column(c).to_pylist() for c in listing.column_names))]
    made = time.perf_counter() - t
    t = time.perf_counter()
    assert listing_table(files, {}).num_rows == args.rows
    print(f"listing: {made:.1f}s to hold {len(files):,} InputFile objects (as list_images returns them), "
          f"{time.perf_counter() - t:.1f}s to turn them into Arrow; RSS {rss_mib():.0f} MiB")
    del files

    t = time.perf_counter()
    plan = build_plan(settings, listing, {"a": sha}, ledger)
    plan_s = time.perf_counter() - t
    print(f"plan: {plan_s:.1f}s for {args.rows:,} inputs x 1 style vs a {ledger.num_rows:,}-row ledger; "
          f"to render {plan.todo.num_rows:,}, unchanged {plan.total('unchanged'):,}; peak RSS so far {peak_mib():.0f} MiB")

    L.write_ledger(out, ledger)  # last night's state on disk
    todo_out = plan.todo.column("output_uri").to_pylist()
    for u in todo_out:  # the night's renders
        os.makedirs(os.path.dirname(u), exist_ok=True)
        with open(u, "wb") as f:
            f.write(b"x")
    rows = pa.table({"input_uri": plan.todo.column("input_uri"), "style": plan.todo.column("style"),
                     "status": pa.array(["ok"] * plan.todo.num_rows), "error_type": pa.nulls(plan.todo.num_rows, pa.string()),
                     "error": pa.nulls(plan.todo.num_rows, pa.string()), "output_uri": plan.todo.column("output_uri"),
                     "model_sha256": plan.todo.column("model_sha256")})
    t = time.perf_counter()
    journal = L.write_journal(out, "bench", plan.todo)
    journal_s = time.perf_counter() - t
    t = time.perf_counter()
    counts = commit(settings, plan, rows, ledger, {}, journal, check_lease=lambda: None, options=None,
                    quarantine=__import__("jobs.quarantine", fromlist=["SCHEMA"]).SCHEMA.empty_table(),
                    listing_uris=listing.column("input_uri"), quarantine_after=3)
    commit_s = time.perf_counter() - t
    size = os.path.getsize(L.ledger_uri(out)) / 2**20
    print(f"journal: {journal_s:.2f}s; commit: {commit_s:.1f}s ({counts['processed']:,} rendered, ledger "
          f"{counts['ledger_rows']:,} rows, {size:.1f} MiB Parquet on local disk)")
    print(f"driver peak RSS: {peak_mib():.0f} MiB")


if __name__ == "__main__":
    main()
