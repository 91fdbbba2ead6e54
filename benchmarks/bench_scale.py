"""The driver's memory at catalog scale: runs over a 10^5- and a 10^6-row manifest, as a user runs the job
and tuned.

    python benchmarks/bench_scale.py [--sizes 100000,1000000] [--batch-size 0,1024] [--workdir /tmp/stylize-scale]

Every row names a file that does not exist, so each is a cheap `not_found` error row and the run
passes with `--max-error-rate 1`; that keeps the cost in the driver's planning, streaming and
counting, which is what this measures. Each size runs in a fresh process that is the job's driver
(`jobs.batch.driver.run`, local Ray). Printed per size: wall time, rows/s, the driver process's own
peak RSS (getrusage RUSAGE_SELF: Ray's and the workers' processes are not in it), whether torch was
imported on the driver, and the check, from the metrics read back afterwards in this process, that
every input was accounted exactly once. Then the peak RSS growth between the sizes. Goals (issue 9):
peak < 1 GiB, growth from 10^5 to 10^6 rows < 200 MB. Asserts nothing about speed.

Each size runs with each ``--batch-size``: 0 is the job's own default (CPU actors' windows of 8 rows,
what a user runs), 1024 the tuned setting. Exits non-zero when a run fails, when any input is not
accounted exactly once, or when torch was imported on the driver.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_manifest(path: str, rows: int) -> None:
    """A Parquet manifest of `rows` URIs under a directory that does not exist."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    numbers = pc.cast(pa.array(range(rows), pa.int64()), pa.string())
    uris = pc.binary_join_element_wise("/nonexistent/scale/", pc.utf8_lpad(numbers, 8, "0"), ".jpg", "")
    pq.write_table(pa.table({"uri": uris}), path, row_group_size=100_000)


def child(manifest: str, output: str, run_id: str, batch_size: int) -> None:
    """The driver: run the job, then report this process's own peak RSS."""
    from jobs.batch import driver
    from jobs.batch.settings import parse_args
    from jobs.common.run_settings import demo_checkpoint

    # One style, named: the default is two demo styles, which would double the rows per input.
    settings = parse_args([
        "--input", manifest, "--output", output, "--run-id", run_id, "--max-error-rate", "1",
        "--style", f"demo={demo_checkpoint()}",
        "--no-metrics", "--contact-sheet", "0", "--quiet", *(["--batch-size", str(batch_size)] if batch_size else []),
    ])
    started = time.time()
    summary = driver.run(settings)
    print(json.dumps({
        "wall_s": time.time() - started,
        "rows": summary["rows"],
        "counts": summary["counts"],
        "errors_by_type": summary["errors_by_type"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "torch_on_driver": "torch" in sys.modules,
    }), flush=True)


def verify(output: str, run_id: str, rows: int) -> tuple[bool, str]:
    """Exactly once: `rows` metrics rows (one style), `rows` distinct inputs, all not_found."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    table = pads.dataset(os.path.join(output, "_metrics", f"run_id={run_id}"), format="parquet").to_table(
        columns=["input_uri", "status", "error_type"])
    distinct = pc.count_distinct(table["input_uri"]).as_py()
    not_found = pc.sum(pc.equal(table["error_type"], "not_found")).as_py()
    ok = table.num_rows == distinct == not_found == rows
    return ok, f"{'yes' if ok else 'NO'} ({table.num_rows} rows, {distinct} distinct inputs, {not_found} not_found)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000,1000000", help="manifest sizes, comma-separated")
    p.add_argument("--workdir", default="/tmp/stylize-scale")
    p.add_argument("--batch-size", default="0,1024",
                   help="rows per actor call, comma-separated: each size runs with each; 0: the job's own default "
                        "(as a user runs it), 1024: tuned. Default: both")
    p.add_argument("--child", nargs=3, metavar=("MANIFEST", "OUTPUT", "RUN_ID"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child, batch_size=int(args.batch_size))
        return
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    sizes = [int(s) for s in args.sizes.split(",")]
    failed = []
    print(f"{'batch size':>12} {'rows':>9} {'wall s':>8} {'rows/s':>8} {'driver peak RSS MiB':>20} {'torch on driver':>16}"
          "  exactly once")
    for batch_size in (int(b) for b in args.batch_size.split(",")):
        label = str(batch_size) if batch_size else "default"
        results = {}
        for rows in sizes:
            manifest = os.path.join(args.workdir, f"manifest-{rows}.parquet")
            if not os.path.exists(manifest):
                write_manifest(manifest, rows)
            output, run_id = os.path.join(args.workdir, f"out-{rows}-{label}"), f"scale-{rows}"
            proc = subprocess.run([sys.executable, __file__, "--batch-size", str(batch_size), "--child",
                                   manifest, output, run_id], env=env, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"run over {rows} rows (batch size {label}) failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results[rows] = res
            once, text = verify(output, run_id, rows)
            if not once or res["torch_on_driver"]:
                failed.append(f"{rows} rows, batch size {label}")
            print(f"{label:>12} {rows:>9} {res['wall_s']:>8.1f} {rows / res['wall_s']:>8.0f} {res['peak_rss_mib']:>20.0f} "
                  f"{str(res['torch_on_driver']):>16}  {text}", flush=True)
            shutil.rmtree(output, ignore_errors=True)
        if len(results) > 1:
            lo, hi = min(results), max(results)
            growth = results[hi]["peak_rss_mib"] - results[lo]["peak_rss_mib"]
            print(f"batch size {label}: driver peak RSS growth {lo} -> {hi} rows: {growth:.0f} MiB "
                  f"({growth * 1.048576:.0f} MB, {growth * 2**20 / (hi - lo):.0f} bytes per input); goal < 200 MB. "
                  f"Peak at {hi}: {results[hi]['peak_rss_mib']:.0f} MiB; goal < 1024 MiB", flush=True)
    if failed:  # the benchmark's own invariants: exactly once, and no torch on the driver
        sys.exit(f"invariant failed ({'; '.join(failed)}): see the table above")


if __name__ == "__main__":
    main()
