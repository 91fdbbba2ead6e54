"""Metrics rows: their Parquet schema, a streaming writer, and the counts behind the run summary."""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .storage import StorageOptions, join_uri, remove_prefix, write_bytes_atomic

# One row per input x style. Documented in README.md ("Metrics schema"); keep both in step.
SCHEMA = pa.schema([
    # Dictionary-typed like the hive partition column `run_id=...` that readers infer from the
    # directory, so reading all of `_metrics/` at once merges instead of failing on the type.
    ("run_id", pa.dictionary(pa.int32(), pa.string())),
    ("input_uri", pa.string()),
    ("rel_path", pa.string()),
    ("input_bytes", pa.int64()),
    ("style", pa.string()),
    ("model_sha256", pa.string()),
    ("loss_model", pa.string()),
    ("status", pa.string()),
    ("error_type", pa.string()),
    ("error", pa.string()),
    ("output_uri", pa.string()),
    ("output_bytes", pa.int64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("out_width", pa.int32()),
    ("out_height", pa.int32()),
    ("measured", pa.bool_()),
    ("forward_images", pa.int32()),
    ("content_loss", pa.float64()),
    ("style_loss", pa.float64()),
    ("tv_loss", pa.float64()),
    ("decode_ms", pa.float64()),
    ("stylize_ms", pa.float64()),
    ("metrics_ms", pa.float64()),
    ("encode_ms", pa.float64()),
    ("device", pa.string()),
    ("backend", pa.string()),
    ("arch", pa.string()),
])
_RENAMED = {"input_uri": "uri"}
ROWS_PER_FILE = 100_000


def _nullable(values: list, typ: pa.DataType) -> list:
    """-1 sizes, empty strings and NaN losses are 'no value': store them as nulls."""
    if pa.types.is_string(typ) or pa.types.is_dictionary(typ):
        return [None if v in ("", None) else str(v) for v in values]
    if pa.types.is_boolean(typ):
        return [None if v is None or int(v) < 0 else bool(int(v)) for v in values]
    if pa.types.is_integer(typ):
        return [None if v is None or int(v) < 0 else int(v) for v in values]
    return [None if v is None or math.isnan(float(v)) else float(v) for v in values]


def to_table(batch: dict[str, np.ndarray]) -> pa.Table:
    """A batch from the encode stage -> a table with exactly :data:`SCHEMA`."""
    n = len(batch["uri"])
    arrays = []
    for f in SCHEMA:
        col = batch.get(_RENAMED.get(f.name, f.name))
        values = [None] * n if col is None else list(col)
        arrays.append(pa.array(_nullable(values, f.type), type=f.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def metrics_prefix(output: str, run_id: str) -> str:
    return join_uri(output, "_metrics", f"run_id={run_id}")


@dataclass
class RunCounts:
    """Counters for the summary, kept while rows stream past."""

    by_status: Counter = field(default_factory=Counter)
    by_error_type: Counter = field(default_factory=Counter)
    by_style: dict[str, Counter] = field(default_factory=dict)
    rows: int = 0
    ok_pixels: int = 0
    stylize_ms: float = 0.0
    metrics_ms: float = 0.0
    forward_images: Counter = field(default_factory=Counter)  # images in a forward pass -> ok rows from such passes
    examples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # style -> [(input, output)]

    def add(self, table: pa.Table, keep_examples: int = 0) -> None:
        cols = table.to_pydict()
        self.rows += table.num_rows
        for i in range(table.num_rows):
            status, style = cols["status"][i], cols["style"][i]
            self.by_status[status] += 1
            self.by_style.setdefault(style, Counter())[status] += 1
            if status == "error":
                self.by_error_type[cols["error_type"][i]] += 1
            if status == "ok":
                self.ok_pixels += (cols["out_width"][i] or 0) * (cols["out_height"][i] or 0)
                self.stylize_ms += cols["stylize_ms"][i] or 0.0
                self.metrics_ms += cols["metrics_ms"][i] or 0.0
                if cols.get("forward_images", [None] * table.num_rows)[i]:
                    self.forward_images[cols["forward_images"][i]] += 1
                ex = self.examples.setdefault(style, [])
                if len(ex) < keep_examples:
                    ex.append((cols["input_uri"][i], cols["output_uri"][i]))

    def forward_summary(self) -> dict:
        """Images per forward pass: mean and histogram ({images: passes}) over the ok rows' passes."""
        passes = {k: -(-rows // k) for k, rows in sorted(self.forward_images.items())}
        total = sum(passes.values())
        images = sum(self.forward_images.values())
        return {"images_per_forward_mean": round(images / total, 3) if total else None,
                "images_per_forward_hist": {str(k): v for k, v in passes.items()}}

    @property
    def error_rate(self) -> float:
        """See :func:`error_rate`."""
        return error_rate(self.by_status)


def error_rate(by_status: Mapping[str, int]) -> float:
    """The one error-rate definition of every job: ``error / (ok + error + skipped)``.

    The denominator holds every input x style pair the run accounted for, skipped ones included (a
    skipped pair is an output already rendered well by an earlier run: part of what the run stands
    for). Quarantined inputs of the nightly catalog are in neither part: they are reported apart.
    """
    rows = sum(by_status.get(s, 0) for s in ("ok", "error", "skipped"))
    return by_status.get("error", 0) / rows if rows else 0.0


class MetricsWriter:
    """Streams metrics tables to ``{output}/_metrics/run_id={run_id}/part-NNNNN.parquet``.

    The run's partition is cleared first, so rerunning a run id replaces its rows instead of
    duplicating them; each part file is written atomically.
    """

    def __init__(self, output: str, run_id: str, options: StorageOptions | None = None, enabled: bool = True) -> None:
        self.prefix = metrics_prefix(output, run_id)
        self.options = options
        self.enabled = enabled
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.files: list[str] = []
        if enabled:
            remove_prefix(self.prefix, options)

    def add(self, table: pa.Table) -> None:
        if not self.enabled:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= ROWS_PER_FILE:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        buf = io.BytesIO()
        pq.write_table(pa.concat_tables(self._pending), buf, compression="zstd")
        uri = join_uri(self.prefix, f"part-{len(self.files):05d}.parquet")
        write_bytes_atomic(uri, buf.getvalue(), self.options)
        self.files.append(uri)
        self._pending, self._pending_rows = [], 0
