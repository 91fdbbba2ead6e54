"""What the batch job's driver holds stays bounded however large the catalog (issue 16, "Scale as a
user runs it"; measured in docs/benchmarks.md, "Catalog scale: driver memory"): the metrics writer
keeps at most a row group of rows as Arrow, and each block (one task's metrics table, which reaches
the driver whole) has a bounded number of rows."""

from __future__ import annotations

import gc

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from jobs.common import metrics, ray_runtime
from jobs.common.metrics import MetricsWriter, to_table


def _rows(start: int, n: int) -> pa.Table:
    """``n`` error rows, as the driver gets them for inputs that are not found."""
    uris = np.array([f"/catalog/{i:08d}.jpg" for i in range(start, start + n)])
    return to_table({
        "uri": uris, "rel_path": uris, "style": np.array(["demo"] * n), "status": np.array(["error"] * n),
        "error_type": np.array(["not_found"] * n),
        "error": np.array([f"input disappeared before it was read: {u}" for u in uris]),
        "width": np.full(n, -1), "height": np.full(n, -1),
    })


def test_metrics_writer_holds_a_row_group_not_a_file_of_arrow_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "ROWS_PER_FILE", 6000)
    monkeypatch.setattr(metrics, "ROWS_PER_GROUP", 500)
    gc.collect()
    base = pa.total_allocated_bytes()
    row_bytes = _rows(0, 1000).nbytes / 1000
    writer = MetricsWriter(str(tmp_path), "r")
    held, added = [], 0
    for n in [8] * 200 + [37, 1200, 3, 900] * 5:  # windows' tables and larger blocks
        writer.add(_rows(added, n))  # the driver drops each table once it is added
        added += n
        held.append(pa.total_allocated_bytes() - base)
        assert writer.pending_rows < metrics.ROWS_PER_GROUP
    # The tables handed in are not kept: Arrow holds about a row group's worth (and one large table while
    # it is encoded), never the ~5000 rows of a part still open (which the writer held before).
    assert max(held) < 1300 * row_bytes < 5000 * row_bytes
    writer.flush()
    assert pa.total_allocated_bytes() - base < 50 * row_bytes
    table = pads.dataset(str(tmp_path / "_metrics"), format="parquet").to_table()
    assert table.num_rows == added == len(set(table["input_uri"].to_pylist()))
    parts = [pads.dataset(f, format="parquet").count_rows() for f in writer.files]
    assert len(parts) >= 2 and all(6000 <= n < 6000 + 1200 for n in parts[:-1])  # parts as large as before
    assert table["input_uri"].to_pylist() == [f"/catalog/{i:08d}.jpg" for i in range(added)]  # order kept


@pytest.mark.parametrize("rows_per_call, actors", [(8, 1), (16, 1), (64, 8), (1024, 1)])
def test_blocks_have_bounded_rows_at_any_catalog_size(rows_per_call, actors):
    for rows in (10**5, 10**6, 10**7, 10**8):
        blocks = ray_runtime.read_blocks(rows, rows_per_call, actors)
        assert -(-rows // blocks) <= max(ray_runtime.MAX_BLOCK_ROWS, rows_per_call)
        assert blocks >= min(64 * actors, -(-rows // rows_per_call))  # still spread over the pool
    # a call larger than the cap keeps its rows in one block
    assert ray_runtime.read_blocks(10**6, 10**4, 1) == 100
