"""The metrics row, declared once: each column's name in the Parquet files, its Arrow type, its name
in the pipeline's batches where that differs, and the stages of the batch job that set it.

The stages build their output with :func:`stage_columns` / :class:`StageRows`, which refuse any
column set other than the declared one, so a column is added in one place: here (then its stage
computes it). Documented in docs/reference/metrics.md.

The run id is not a column: it is the hive partition ``run_id=...`` in the path only, as the hive
convention has it, so pyarrow.dataset, DuckDB, Polars, pandas and Ray Data read many runs as one
table (a value both in the files and in the path makes them disagree on its type).

In a batch, "no value" is spelled ``""`` (strings), ``-1`` (sizes, counts, flags) or NaN (floats),
since NumPy columns have no nulls; the writer stores those as nulls.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

READ, STYLIZE, WRITE = "read", "stylize", "write"  # read+decode, stylize (the actor), encode+write
_ALL = (READ, STYLIZE, WRITE)


@dataclass(frozen=True)
class Column:
    name: str  # in the Parquet files
    type: pa.DataType
    stages: tuple[str, ...]  # the stages that set it (the row's outcome: every stage)
    batch_name: str = ""  # in the pipeline's batches, where it differs

    @property
    def key(self) -> str:
        return self.batch_name or self.name


COLUMNS: tuple[Column, ...] = (
    Column("input_uri", pa.string(), (READ,), batch_name="uri"),
    Column("rel_path", pa.string(), (READ,)),
    Column("input_bytes", pa.int64(), (READ,)),
    Column("style", pa.string(), (STYLIZE,)),
    Column("model_sha256", pa.string(), (STYLIZE,)),
    Column("loss_model", pa.string(), (STYLIZE,)),
    Column("status", pa.string(), _ALL),
    Column("error_type", pa.string(), _ALL),
    Column("error", pa.string(), _ALL),
    Column("output_uri", pa.string(), (WRITE,)),
    Column("output_bytes", pa.int64(), (WRITE,)),
    Column("width", pa.int32(), (READ,)),
    Column("height", pa.int32(), (READ,)),
    Column("out_width", pa.int32(), (STYLIZE,)),
    Column("out_height", pa.int32(), (STYLIZE,)),
    Column("measured", pa.bool_(), (STYLIZE,)),  # in a batch 1/0, -1: no value
    Column("forward_images", pa.int32(), (STYLIZE,)),
    Column("content_loss", pa.float64(), (STYLIZE,)),
    Column("style_loss", pa.float64(), (STYLIZE,)),
    Column("tv_loss", pa.float64(), (STYLIZE,)),
    # feature statistics (per-channel mean/std at the style layers) vs the style image's: distance, and ratio
    # to the input's distance (stylize_core.losses.stats_distance); NaN without a style image
    Column("style_stat_distance", pa.float64(), (STYLIZE,)),
    Column("style_stat_ratio", pa.float64(), (STYLIZE,)),
    Column("decode_ms", pa.float64(), (READ,)),
    Column("stylize_ms", pa.float64(), (STYLIZE,)),
    Column("metrics_ms", pa.float64(), (STYLIZE,)),
    Column("encode_ms", pa.float64(), (WRITE,)),
    Column("device", pa.string(), (STYLIZE,)),
    Column("backend", pa.string(), (STYLIZE,)),
    Column("arch", pa.string(), (STYLIZE,)),
    # --evaluate with an enhancement network: luminance PSNR (dB) / SSIM of the output and the baseline
    Column("psnr", pa.float64(), (STYLIZE,)),
    Column("ssim", pa.float64(), (STYLIZE,)),
    Column("baseline_psnr", pa.float64(), (STYLIZE,)),
    Column("baseline_ssim", pa.float64(), (STYLIZE,)),
    Column("tiles", pa.int32(), (STYLIZE,)),
    Column("mask_uri", pa.string(), (READ,)),  # the input's mask (--mask-prefix or a manifest's mask_uri); null: none
    # the input's pixel format (stylize_core.image_formats: RGB, RGBA, RGB;16, L, I;16, P, ...); null: not decoded
    Column("pixel_format", pa.string(), (READ,)),
    Column("color_profile", pa.string(), (READ,)),  # the input's ICC profile's description (converted to sRGB); null: none
    Column("alpha", pa.string(), (WRITE,)),  # kept / flattened (jpeg, on --background); null: the input had none
)
SCHEMA = pa.schema([(c.name, c.type) for c in COLUMNS])
BATCH_KEYS: dict[str, str] = {c.name: c.key for c in COLUMNS}  # Parquet name -> batch name


def stage_keys(stage: str) -> tuple[str, ...]:
    """The batch names of the columns ``stage`` sets, in schema order."""
    if stage not in _ALL:
        raise ValueError(f"unknown stage {stage!r}: one of {_ALL}")
    return tuple(c.key for c in COLUMNS if stage in c.stages)


def _no_value(typ: pa.DataType) -> object:
    if pa.types.is_string(typ):
        return ""
    return float("nan") if pa.types.is_floating(typ) else -1


def blank_rows(n: int) -> dict[str, np.ndarray]:
    """``n`` rows holding every column, each with its "no value"."""
    return {c.key: np.full(n, _no_value(c.type)) for c in COLUMNS}


def _check(stage: str, given: Iterable[str], extra: Iterable[str]) -> None:
    want, extra = set(stage_keys(stage)), set(extra)
    got = set(given) - extra
    if got != want:
        raise KeyError(f"the {stage} stage's metrics columns differ from jobs.common.metrics_schema.COLUMNS: "
                       f"missing {sorted(want - got)}, undeclared {sorted(got - want)}")


def stage_columns(stage: str, extra: Iterable[str] = (), **columns: Iterable) -> dict[str, np.ndarray]:
    """The columns ``stage`` sets, as NumPy arrays; ``KeyError`` unless they are exactly the declared
    ones (plus the stage's own non-metric ``extra`` keys)."""
    _check(stage, columns, extra)
    return {k: np.asarray(v) for k, v in columns.items()}


class StageRows:
    """Column lists a stage fills one row at a time; each row must give exactly the declared
    columns of ``stage`` plus its ``extra`` keys (pixels, plans, indices)."""

    def __init__(self, stage: str, extra: Iterable[str] = ()) -> None:
        self.stage, self.extra = stage, tuple(extra)
        _check(stage, stage_keys(stage) + self.extra, self.extra)
        self.cols: dict[str, list] = {k: [] for k in stage_keys(stage) + self.extra}

    def append(self, **row: object) -> None:
        if row.keys() != self.cols.keys():
            _check(self.stage, row, self.extra)
            raise KeyError(f"the {self.stage} stage's row must give {sorted(self.extra)} too; got {sorted(row)}")
        for k, v in row.items():
            self.cols[k].append(v)
