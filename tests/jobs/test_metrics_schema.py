"""The metrics row is declared once (jobs.common.metrics_schema.COLUMNS): the rows the batch job's
stages and actor build carry exactly those columns, and a column added in one place only fails."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from stylize_core.checkpoint import save_style_model
from stylize_core.transformer_net import TransformerNet

from jobs.batch.actor import StylizeActor
from jobs.batch.settings import JobSettings
from jobs.batch.stages import encode_write, read_decode
from jobs.common import metrics_schema
from jobs.common.planning import ActorPlan
from jobs.common.metrics import SCHEMA, to_table
from jobs.common.metrics_schema import BATCH_KEYS, STYLIZE, WRITE, Column, StageRows, stage_columns, stage_keys

NOT_METRICS = {"idx", "run_id"}  # the driver's row index; the run id (a path partition, not a column)


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> JobSettings:
    root = tmp_path_factory.mktemp("schema")
    torch.manual_seed(0)
    style = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    save_style_model(TransformerNet(), str(root / "s.pth"), style_image=style, style="s")
    (root / "in").mkdir()
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    (root / "in" / "ok.png").write_bytes(buf.getvalue())
    (root / "in" / "bad.png").write_bytes(b"not an image")
    return JobSettings(input=str(root / "in"), output=str(root / "out"), styles={"s": str(root / "s.pth")},
                       vgg_weights="random:0", metrics_sample=1.0, run_id="schema", format="png")


PLAN = ActorPlan(1, 1, 0.0, 1.0, 1, "test: one CPU actor", 8)  # the actor's share of a one-actor pool


def _batch(settings: JobSettings) -> dict[str, np.ndarray]:
    rels = ["ok.png", "bad.png", "missing.png"]
    return {"idx": np.arange(3), "uri": np.array([f"{settings.input}/{r}" for r in rels]), "rel_path": np.array(rels)}


def test_the_declaration_is_the_parquet_schema():
    assert SCHEMA.names == [c.name for c in metrics_schema.COLUMNS]
    assert BATCH_KEYS["input_uri"] == "uri" and BATCH_KEYS["style"] == "style"
    # every column is set by some stage, so a finished row holds them all
    assert set().union(*(stage_keys(s) for s in ("read", "stylize", "write"))) == set(BATCH_KEYS.values())


def test_rows_of_the_stages_and_the_actor_carry_exactly_the_declared_columns(settings):
    actor = StylizeActor(settings, PLAN)
    split = encode_write(actor(read_decode(_batch(settings), settings)), settings)
    fused = StylizeActor(settings, PLAN, fused=True)(_batch(settings))
    for out in (split, fused):
        assert set(out) - NOT_METRICS == set(BATCH_KEYS.values())
        table = to_table(out)
        assert table.schema == SCHEMA
        by_rel = {r["rel_path"]: r for r in table.to_pylist()}
        assert by_rel["ok.png"]["status"] == "ok" and by_rel["ok.png"]["out_width"] == 16
        assert by_rel["bad.png"]["error_type"] == "unidentified"
        assert by_rel["missing.png"]["error_type"] == "not_found"
        ok = by_rel["ok.png"]
        assert ok["tiles"] == 1 and by_rel["bad.png"]["tiles"] is None  # one pass; not stylised
        evaluation = ("psnr", "ssim", "baseline_psnr", "baseline_ssim")  # --evaluate, enhancement networks only
        # no mask, ICC profile or alpha in this run, and no --metrics-ratio
        unset = (*evaluation, "mask_uri", "color_profile", "alpha", "style_stat_ratio")
        assert ok["pixel_format"] == "RGB"
        assert all(ok[c.name] is not None for c in metrics_schema.COLUMNS if c.name not in ("error_type", "error",
                                                                                            *unset)), ok
        assert all(ok[k] is None for k in unset)


def test_setup_error_rows_carry_the_declared_columns(settings):
    actor = StylizeActor(settings, PLAN)
    actor.setup_error = "no weights"
    out = actor(_batch(settings))
    assert set(out) == set(BATCH_KEYS.values())
    assert to_table(out)["error"].to_pylist() == ["no weights"] * 3


def test_a_column_declared_but_not_built_fails(settings, monkeypatch):
    monkeypatch.setattr(metrics_schema, "COLUMNS", metrics_schema.COLUMNS + (Column("new", pa.string(), (STYLIZE,)),))
    with pytest.raises(KeyError, match=r"missing \['new'\]"):
        StylizeActor(settings, PLAN, fused=True)(_batch(settings))


def test_a_column_built_but_not_declared_fails():
    rows = StageRows(STYLIZE, extra=("row",))
    declared = {k: "" for k in stage_keys(STYLIZE)}
    with pytest.raises(KeyError, match=r"undeclared \['new'\]"):
        rows.append(row=0, new=1, **declared)
    with pytest.raises(KeyError, match="row"):
        rows.append(**declared)
    write = {k: [""] for k in stage_keys(WRITE)}
    assert set(stage_columns(WRITE, **write)) == set(write)
    with pytest.raises(KeyError, match=r"undeclared \['new'\]"):
        stage_columns(WRITE, new=[1], **write)
    with pytest.raises(KeyError, match=r"missing \['output_uri'\]"):
        stage_columns(WRITE, **{k: v for k, v in write.items() if k != "output_uri"})
