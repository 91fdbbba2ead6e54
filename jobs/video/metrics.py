"""Metrics rows of the video job: one per video (or sequence) x style, as Parquet.

Written to ``{output}/_metrics_video/run_id={run_id}/part-00000.parquet``. The run id lives only
in the hive path (readers such as pyarrow.dataset with partitioning="hive" or Ray Data add it as a
column), not inside the files. Documented in docs/reference/metrics.md ("Video metrics"); keep both in step.
"""

from __future__ import annotations

import io
import math

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.common.metrics import redact_columns
from jobs.common.storage import StorageOptions, join_uri, redact_uri, remove_prefix, write_bytes_atomic

_S, _I, _F = pa.string(), pa.int64(), pa.float64()
SCHEMA = pa.schema([
    ("input_uri", _S), ("rel_path", _S), ("kind", _S), ("input_bytes", _I), ("style", _S), ("model_sha256", _S),
    ("loss_model", _S), ("status", _S), ("error_type", _S), ("error", _S), ("output_uri", _S), ("output_bytes", _I),
    ("width", pa.int32()), ("height", pa.int32()), ("out_width", pa.int32()), ("out_height", pa.int32()),
    ("rotation", pa.int32()), ("frames", _I), ("duration_s", _F), ("fps", _F), ("audio_streams", pa.int32()),
    ("segments", pa.int32()), ("scene_cuts", pa.int32()), ("temporal", _S),
    ("ewarp_output", _F), ("ewarp_inside", _F), ("ewarp_seams", _F), ("seam_pairs", pa.int32()), ("ewarp_per_frame", _F),
    ("content_loss", _F), ("style_loss", _F), ("content_loss_per_frame", _F), ("style_loss_per_frame", _F),
    ("style_stat_distance", _F), ("style_stat_ratio", _F),
    ("decode_ms", _F), ("flow_ms", _F), ("stylize_ms", _F), ("blend_ms", _F), ("encode_ms", _F), ("measure_ms", _F),
    ("join_ms", _F), ("segment_wall_s", _F), ("device", _S), ("mask_uri", _S),
])


def _value(v, typ: pa.DataType):
    """Empty strings, negative sizes/counts and NaN are 'no value': nulls."""
    if v is None:
        return None
    if pa.types.is_string(typ):
        return str(v) if v != "" else None
    if pa.types.is_integer(typ):
        return int(v) if int(v) >= 0 else None
    return None if math.isnan(float(v)) else float(v)


def to_table(rows: list[dict]) -> pa.Table:
    table = pa.table({f.name: pa.array([_value(r.get(f.name), f.type) for r in rows], type=f.type) for f in SCHEMA},
                     schema=SCHEMA)
    return redact_columns(redact_columns(table, ("input_uri", "output_uri", "mask_uri"), redact_uri), ("error",))


def metrics_prefix(output: str, run_id: str) -> str:
    return join_uri(output, "_metrics_video", f"run_id={run_id}")


def write_metrics(rows: list[dict], output: str, run_id: str, options: StorageOptions | None = None) -> str:
    """Replace the run's partition with ``rows``; returns the file's URI."""
    prefix = metrics_prefix(output, run_id)
    remove_prefix(prefix, options)
    buf = io.BytesIO()
    pq.write_table(to_table(rows), buf, compression="zstd")
    uri = join_uri(prefix, "part-00000.parquet")
    write_bytes_atomic(uri, buf.getvalue(), options)
    return uri
