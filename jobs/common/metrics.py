"""Metrics rows (their schema: :mod:`jobs.common.metrics_schema`): batches to Arrow tables, a
streaming writer, exactly-once accounting, and the counts behind the run summary."""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.common.metrics_schema import BATCH_KEYS, SCHEMA
from jobs.common.outcome import error_rate
from jobs.common.storage import StorageOptions, join_uri, redact_text, redact_uri, remove_prefix, write_bytes_atomic

ROWS_PER_FILE = 100_000
# Rows the writer holds as Arrow before encoding them into the open part file (see MetricsWriter).
ROWS_PER_GROUP = 8_192
URI_COLUMNS = ("input_uri", "output_uri", "mask_uri")  # redacted when written, as URIs (redact_uri); "error" as text
_MAY_HOLD_SECRET = r"[@?#&;]"  # no userinfo, query or fragment: nothing to redact


def redact_columns(table: pa.Table, names: tuple[str, ...] = ("error",),
                   redact: Callable[[str], str] = redact_text) -> pa.Table:
    """``table`` with :func:`jobs.common.storage.redact_text` (or ``redact``) applied to its string
    columns ``names``; only the values that could hold a secret go through Python, so a plain
    catalog costs a scan."""
    for name in names:
        if name not in table.column_names:
            continue
        col = table.column(name).combine_chunks()
        hit = pc.fill_null(pc.match_substring_regex(col, _MAY_HOLD_SECRET), False)
        if not pc.any(hit).as_py():
            continue
        values = [None if v is None else redact(v) for v in col.filter(hit).to_pylist()]
        col = pc.replace_with_mask(col, hit, pa.array(values, col.type))
        table = table.set_column(table.column_names.index(name), name, col)
    return table


def _nullable(values: list, typ: pa.DataType) -> list:
    """-1 sizes, empty strings and NaN losses are 'no value': store them as nulls."""
    if pa.types.is_string(typ):
        return [None if v in ("", None) else str(v) for v in values]
    if pa.types.is_boolean(typ):
        return [None if v is None or int(v) < 0 else bool(int(v)) for v in values]
    if pa.types.is_integer(typ):
        return [None if v is None or int(v) < 0 else int(v) for v in values]
    return [None if v is None or math.isnan(float(v)) else float(v) for v in values]


def _arrow_column(col: pa.Array | pa.ChunkedArray, typ: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """An Arrow column with the 'no value' markers as nulls, cast to ``typ``."""
    if pa.types.is_string(typ) and (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return pc.if_else(pc.equal(col, ""), pa.scalar(None, col.type), col).cast(typ)
    if pa.types.is_boolean(typ) and pa.types.is_integer(col.type):  # 1/0, -1: no value
        return pc.if_else(pc.less(col, 0), pa.scalar(None, pa.bool_()), pc.not_equal(col, 0))
    if pa.types.is_integer(typ) and pa.types.is_integer(col.type):
        return pc.if_else(pc.less(col, 0), pa.scalar(None, col.type), col).cast(typ)
    if pa.types.is_floating(typ) and (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        col = col.cast(pa.float64())
        return pc.if_else(pc.is_nan(col), pa.scalar(None, pa.float64()), col).cast(typ)
    if pa.types.is_null(col.type):
        return pa.nulls(len(col), typ)
    return pa.array(_nullable(col.to_pylist(), typ), type=typ)


def _column(col: np.ndarray, typ: pa.DataType) -> pa.Array:
    """One numpy batch column as Arrow, with the 'no value' markers as nulls; vectorised, since the
    driver converts every row of the run (the per-value path is kept for odd dtypes)."""
    col = np.asarray(col)
    if col.dtype.kind in "US" and pa.types.is_string(typ):
        return pa.array(col, type=typ, mask=col == "")
    if col.dtype.kind in "iu" and pa.types.is_boolean(typ):  # 1/0, -1: no value
        return pa.array(col != 0, mask=col < 0)
    if col.dtype.kind in "iu" and pa.types.is_integer(typ):
        return pa.array(col, mask=col < 0).cast(typ)
    if col.dtype.kind in "fiu" and pa.types.is_floating(typ):
        col = col.astype(np.float64)
        return pa.array(col, type=typ, mask=np.isnan(col))
    return pa.array(_nullable(list(col), typ), type=typ)


def to_table(batch: dict[str, np.ndarray] | pa.Table) -> pa.Table:
    """A batch from the encode stage (numpy columns, or the Arrow table Ray Data holds them in)
    -> a table with exactly :data:`SCHEMA`. The driver takes Arrow: no per-batch numpy copies of
    every string column."""
    if isinstance(batch, pa.Table):
        names = set(batch.column_names)
        arrays = []
        for f in SCHEMA:
            name = BATCH_KEYS[f.name]
            arrays.append(_arrow_column(batch[name], f.type) if name in names else pa.nulls(batch.num_rows, f.type))
        return pa.Table.from_arrays(arrays, schema=SCHEMA)
    n = len(batch[BATCH_KEYS["input_uri"]])
    arrays = []
    for f in SCHEMA:
        col = batch.get(BATCH_KEYS[f.name])
        arrays.append(pa.nulls(n, f.type) if col is None else _column(col, f.type))
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
    tiled_rows: int = 0  # ok rows whose image ran in more than one tile
    tiles: int = 0  # tiles of those rows

    def add(self, table: pa.Table, keep_examples: int = 0) -> None:
        self.rows += table.num_rows
        for row in table.group_by(["style", "status"]).aggregate([([], "count_all")]).to_pylist():
            self.by_status[row["status"]] += row["count_all"]
            self.by_style.setdefault(row["style"], Counter())[row["status"]] += row["count_all"]
        errors = table.filter(pc.equal(table["status"], "error"))
        for row in errors.group_by("error_type").aggregate([([], "count_all")]).to_pylist():
            self.by_error_type[row["error_type"]] += row["count_all"]
        ok = table.filter(pc.equal(table["status"], "ok"))
        if not ok.num_rows:
            return
        pixels = pc.multiply(pc.fill_null(ok["out_width"], 0).cast(pa.int64()), pc.fill_null(ok["out_height"], 0).cast(pa.int64()))
        self.ok_pixels += pc.sum(pixels).as_py() or 0
        self.stylize_ms += pc.sum(ok["stylize_ms"]).as_py() or 0.0
        self.metrics_ms += pc.sum(ok["metrics_ms"]).as_py() or 0.0
        if "forward_images" in ok.column_names:
            for row in ok.group_by("forward_images").aggregate([([], "count_all")]).to_pylist():
                if row["forward_images"]:
                    self.forward_images[row["forward_images"]] += row["count_all"]
        if "tiles" in ok.column_names:
            tiled = ok.filter(pc.greater(pc.fill_null(ok["tiles"], 0), 1))
            self.tiled_rows += tiled.num_rows
            self.tiles += pc.sum(tiled["tiles"]).as_py() or 0
        wanting = [s for s in set(ok["style"].to_pylist()) if len(self.examples.get(s, [])) < keep_examples]
        for style in wanting:  # only while the contact sheet still needs examples
            ex = self.examples.setdefault(style, [])
            mine = ok.filter(pc.equal(ok["style"], style)).slice(0, keep_examples - len(ex))
            ex.extend(zip(mine["input_uri"].to_pylist(), mine["output_uri"].to_pylist()))

    def forward_summary(self) -> dict:
        """Images per forward pass: mean and histogram ({images: passes}) over the ok rows' passes."""
        passes = {k: -(-rows // k) for k, rows in sorted(self.forward_images.items())}
        total = sum(passes.values())
        images = sum(self.forward_images.values())
        return {"images_per_forward_mean": round(images / total, 3) if total else None,
                "images_per_forward_hist": {str(k): v for k, v in passes.items()}}

    def tile_summary(self) -> dict:
        """Rows stylised in tiles (large images, --tile, --tileable) and their tiles."""
        return {"tiled_rows": self.tiled_rows, "tiles": self.tiles}

    @property
    def error_rate(self) -> float:
        """See :func:`error_rate`."""
        return error_rate(self.by_status)


class PairLedger:
    """Which (manifest row, style) pairs have come back: one bit each, so 10^7 inputs x 4 styles
    take 5 MB. Rows of a retried block that were already counted are dropped, never counted twice."""

    def __init__(self, rows: int, styles: list[str]) -> None:
        self.styles = pa.array(styles, pa.string())
        self.size = rows * len(styles)
        self.bits = np.zeros((self.size + 7) // 8, dtype=np.uint8)
        self.seen = 0

    def first_seen(self, idx: np.ndarray, style: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Boolean mask over the rows: True for pairs not seen before (first of any repeats)."""
        pos = pc.index_in(style, value_set=self.styles).to_numpy(zero_copy_only=False)
        keys = np.asarray(idx, dtype=np.int64) * len(self.styles) + pos
        if len(keys) and (np.isnan(pos).any() or keys.min() < 0 or keys.max() >= self.size):
            raise ValueError("a metrics row names an input index or style outside this run's plan")
        keys = keys.astype(np.int64)
        fresh = np.zeros(len(keys), dtype=bool)
        fresh[np.unique(keys, return_index=True)[1]] = True  # repeats within the batch
        byte, mask = keys >> 3, np.left_shift(1, keys & 7).astype(np.uint8)
        fresh &= (self.bits[byte] & mask) == 0
        np.bitwise_or.at(self.bits, byte[fresh], mask[fresh])
        self.seen += int(fresh.sum())
        return fresh


class MetricsWriter:
    """Streams metrics tables to ``{output}/_metrics/run_id={run_id}/part-NNNNN.parquet``, their URIs
    and errors redacted (the tables handed to it stay as they are: the contact sheet reads them).

    The run's partition is cleared first, so rerunning a run id replaces its rows instead of
    duplicating them; each part file is written atomically.

    A part holds about :data:`ROWS_PER_FILE` rows, but the writer never holds that many as Arrow: every
    :data:`ROWS_PER_GROUP` rows are encoded into the open part's compressed Parquet (a row group) in
    memory, and the part is written out whole when it is full. Holding a part's rows as Arrow tables
    until then cost the driver ~1.7 KB of RSS per row, ~170 MB at 10^5 rows: most of its growth from
    2x10^4 to 2x10^5 inputs (docs/benchmarks.md, "Catalog scale: driver memory").
    """

    def __init__(self, output: str, run_id: str, options: StorageOptions | None = None, enabled: bool = True) -> None:
        self.prefix = metrics_prefix(output, run_id)
        self.options = options
        self.enabled = enabled
        self._pending: list[pa.Table] = []  # rows not yet encoded: fewer than ROWS_PER_GROUP, but for one large table
        self._pending_rows = 0
        self._part: tuple[io.BytesIO, pq.ParquetWriter] | None = None  # the open part's Parquet, in memory
        self._part_rows = 0
        self.files: list[str] = []
        if enabled:
            remove_prefix(self.prefix, options)

    @property
    def pending_rows(self) -> int:
        """Rows held as Arrow tables, not yet encoded."""
        return self._pending_rows

    def add(self, table: pa.Table) -> None:
        if not self.enabled or not table.num_rows:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= ROWS_PER_GROUP:
            self._encode()
            if self._part_rows >= ROWS_PER_FILE:
                self._write_part()

    def flush(self) -> None:
        """Write every row added so far (the last part may be short)."""
        self._encode()
        self._write_part()

    def _encode(self) -> None:
        """The pending rows, redacted, as row groups of the open part."""
        if not self._pending:
            return
        table = redact_columns(pa.concat_tables(self._pending), URI_COLUMNS, redact_uri)
        table = redact_columns(table, ("error",))
        self._pending, self._pending_rows = [], 0
        if self._part is None:
            buf = io.BytesIO()
            self._part = buf, pq.ParquetWriter(buf, table.schema, compression="zstd")
        self._part[1].write_table(table, row_group_size=ROWS_PER_GROUP)
        self._part_rows += table.num_rows

    def _write_part(self) -> None:
        if self._part is None:
            return
        buf, parquet = self._part
        parquet.close()
        uri = join_uri(self.prefix, f"part-{len(self.files):05d}.parquet")
        write_bytes_atomic(uri, buf.getvalue(), self.options)
        self.files.append(uri)
        self._part, self._part_rows = None, 0
