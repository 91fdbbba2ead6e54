"""The metrics of several runs read as ONE table by the readers people use: the run id lives only in
the hive path (``_metrics/run_id=.../part-*.parquet``), never inside the files as well."""

from __future__ import annotations

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from jobs.common.metrics import SCHEMA, MetricsWriter, to_table

# Run ids that readers infer as strings, integers or dates, alone and mixed.
RUN_PAIRS = [("42", "2026-12-01"), ("r1", "r2"), ("42", "43"), ("2026-12-01", "2026-12-02")]


def _batch(n: int, style: str) -> dict[str, np.ndarray]:
    return {
        "uri": np.array([f"/in/{i}.jpg" for i in range(n)]), "rel_path": np.array([f"{i}.jpg" for i in range(n)]),
        "style": np.array([style] * n), "status": np.array(["ok"] * (n - 1) + ["error"]),
        "error_type": np.array([""] * (n - 1) + ["not_found"]), "width": np.arange(n), "height": np.full(n, -1),
        "content_loss": np.r_[np.linspace(0, 1, n - 1), np.nan],
    }


def _write_runs(root, runs: tuple[str, str]) -> tuple[str, dict[str, int]]:
    sizes = {runs[0]: 3, runs[1]: 2}
    for run_id, n in sizes.items():
        writer = MetricsWriter(str(root), run_id)
        writer.add(to_table(_batch(n, "mosaic")))
        writer.flush()
    return str(root / "_metrics"), sizes


def _check(run_ids: list, sizes: dict[str, int]) -> None:
    """One table: every row, with each run's id as the reader typed it (str, int or date)."""
    assert len(run_ids) == sum(sizes.values())
    assert {str(r): run_ids.count(r) for r in set(run_ids)} == sizes


def test_files_do_not_repeat_the_partition_value(tmp_path):
    metrics, _ = _write_runs(tmp_path, ("42", "43"))
    for part in pads.dataset(metrics, format="parquet").files:
        assert "run_id" not in pq.read_schema(part).names
    assert "run_id" not in SCHEMA.names


@pytest.mark.parametrize("runs", RUN_PAIRS, ids="+".join)
def test_pyarrow_pandas_duckdb_polars_read_two_runs_as_one_table(tmp_path, runs):
    import duckdb  # pinned in the test extra
    import pandas as pd
    import polars as pl

    metrics, sizes = _write_runs(tmp_path, runs)
    table = pads.dataset(metrics, format="parquet", partitioning="hive").to_table()
    _check(table["run_id"].to_pylist(), sizes)
    assert table.schema.field("content_loss").type == SCHEMA.field("content_loss").type
    _check(pq.read_table(metrics)["run_id"].to_pylist(), sizes)

    frame = pd.read_parquet(metrics)
    _check([str(r) for r in frame["run_id"]], sizes)

    rows = duckdb.sql(f"SELECT run_id FROM read_parquet('{metrics}/*/*.parquet', hive_partitioning = true)").fetchall()
    _check([r[0] for r in rows], sizes)

    _check(pl.read_parquet(metrics, hive_partitioning=True)["run_id"].to_list(), sizes)
    _check(pl.scan_parquet(f"{metrics}/**/*.parquet", hive_partitioning=True).collect()["run_id"].to_list(), sizes)


@pytest.mark.usefixtures("ray_local")
def test_ray_data_reads_two_runs_as_one_table(tmp_path):
    import ray

    metrics, sizes = _write_runs(tmp_path, ("42", "2026-12-01"))
    rows = ray.data.read_parquet(metrics).take_all()
    _check([r["run_id"] for r in rows], sizes)
    assert sorted(r["status"] for r in rows).count("error") == 2


def test_readers_given_a_string_schema_keep_run_ids_as_written(tmp_path):
    """What README documents for callers who always want strings, even for all-integer run ids."""
    import duckdb
    import pyarrow as pa
    import polars as pl

    metrics, sizes = _write_runs(tmp_path, ("42", "43"))  # integers to every reader
    string_hive = pads.partitioning(pa.schema([("run_id", pa.string())]), flavor="hive")
    assert pads.dataset(metrics, format="parquet", partitioning=string_hive).to_table()["run_id"].type == pa.string()
    rows = duckdb.sql(f"SELECT run_id FROM read_parquet('{metrics}/*/*.parquet', hive_partitioning = true, "
                      "hive_types = {'run_id': VARCHAR})").fetchall()
    assert {r[0] for r in rows} == set(sizes) and all(isinstance(r[0], str) for r in rows)
    frame = pl.read_parquet(metrics, hive_partitioning=True, hive_schema={"run_id": pl.String})
    assert frame.schema["run_id"] == pl.String and set(frame["run_id"].to_list()) == set(sizes)
