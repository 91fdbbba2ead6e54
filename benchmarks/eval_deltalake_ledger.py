"""Delta Lake (delta-rs) as the nightly ledger, measured against the current Parquet rewrite.

``pip install deltalake==1.6.6`` (not a project dependency: this is the evaluation behind the README's
"why not a table format"), then ``python benchmarks/eval_deltalake_ledger.py [--rows N] [--s3]``.
``--s3`` starts moto's S3 server on 127.0.0.1 and runs the same steps there, plus two writers
committing against the same table version (what two nights at once would do).

Prints: the initial write, a night's MERGE of ``--changed`` rows (upsert by input_uri+style, delete
of gone inputs), and the same night as the current read + Arrow filter/concat + atomic rewrite.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, os.path.dirname(__file__))
from bench_nightly import make_tables  # noqa: E402


def _timed(label: str, fn):
    t = time.perf_counter()
    out = fn()
    print(f"  {label}: {time.perf_counter() - t:.2f}s")
    return out


def run(uri: str, storage: dict | None, rows: int, changed: float) -> None:
    from deltalake import DeltaTable, write_deltalake

    from jobs.catalog import ledger as L

    _, ledger = make_tables(rows, changed, "s3://bucket/catalog", "/out", "f" * 64)
    ledger = ledger.set_column(ledger.schema.get_field_index("updated_at"), "updated_at",
                               pc.cast(ledger.column("updated_at"), pa.timestamp("us", tz="UTC")))
    changes = ledger.slice(0, int(rows * changed))
    changes = changes.set_column(3, "input_version", pc.binary_join_element_wise(changes.column(3), pa.scalar("-new"), ""))
    gone = ledger.slice(rows - int(rows * changed) // 10, int(rows * changed) // 10).column("input_uri")
    print(f"{uri}: {rows:,} ledger rows, {changes.num_rows:,} upserts, {len(gone):,} deletes")

    delta = f"{uri}/ledger_delta"
    _timed("delta: initial write", lambda: write_deltalake(delta, ledger, storage_options=storage))
    dt = DeltaTable(delta, storage_options=storage)

    def merge() -> None:
        (dt.merge(changes, "t.input_uri = s.input_uri AND t.style = s.style", source_alias="s", target_alias="t")
           .when_matched_update_all().when_not_matched_insert_all().execute())
        dt.delete(f"input_uri IN ({', '.join(repr(u) for u in gone.to_pylist())})")

    _timed("delta: night (MERGE + DELETE)", merge)
    _timed("delta: read whole ledger", lambda: DeltaTable(delta, storage_options=storage).to_pyarrow_table())
    print(f"  delta: versions {DeltaTable(delta, storage_options=storage).version() + 1}, "
          f"files {len(DeltaTable(delta, storage_options=storage).file_uris())}")

    if uri.startswith("s3://"):
        a = DeltaTable(delta, storage_options=storage)
        b = DeltaTable(delta, storage_options=storage)
        write_deltalake(a, changes.slice(0, 10), mode="append", storage_options=storage)
        try:
            b.delete("style = 'a'")  # planned on the version before a's commit
            print("  delta: a stale second writer's DELETE: COMMITTED")
        except Exception as exc:
            print(f"  delta: a stale second writer's DELETE: refused ({type(exc).__name__}: {str(exc)[:80]})")

    out = f"{uri}/parquet_out"
    opts = None
    _timed("parquet: initial write", lambda: L.write_ledger(out, ledger, opts))

    def rewrite() -> None:
        current = L.read_ledger(out, opts)
        keys = pc.binary_join_element_wise(changes.column("input_uri"), changes.column("style"), "\x00")
        keep = pc.invert(pc.or_(pc.is_in(L.keys(current), value_set=keys), pc.is_in(current.column("input_uri"), value_set=gone)))
        L.write_ledger(out, pa.concat_tables([current.filter(keep), changes.cast(current.schema)]), opts)

    _timed("parquet: night (read, filter, concat, atomic rewrite)", rewrite)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--changed", type=float, default=0.01)
    p.add_argument("--s3", action="store_true")
    args = p.parse_args()
    run(tempfile.mkdtemp(prefix="eval-delta-"), None, args.rows, args.changed)
    if args.s3:
        import logging

        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        os.environ.update(AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_DEFAULT_REGION="us-east-1",
                          AWS_ENDPOINT_URL=endpoint)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="eval")
        storage = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
                   "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
        try:
            run("s3://eval", storage, args.rows, args.changed)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
