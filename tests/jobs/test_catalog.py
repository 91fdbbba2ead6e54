"""The nightly catalog: plan logic without Ray, then real nights on moto S3 and on local disk."""

from __future__ import annotations

import datetime as dt
import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from jobs.catalog import night as catalog
from jobs.catalog import ledger as L
from jobs.catalog.plan import build_plan, describe_plan, listing_table
from jobs.batch.settings import JobSettings
from jobs.batch.stages import output_key
from jobs.common.storage import (InputFile, StorageOptions, UnsafePathError, exists, get_filesystem, read_bytes,
                          write_bytes_atomic)
from catalog_fakes import style_outputs
from stylize_core.checkpoint import checkpoint_bytes
from stylize_core.transformer_net import TransformerNet


def _png(seed: int, shape: tuple[int, int] = (32, 40)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _checkpoint(seed: int) -> bytes:
    torch.manual_seed(seed)
    style = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return checkpoint_bytes(TransformerNet(), style_image=style)


def _config(tmp_path, source: str, output: str, styles: dict[str, str], **extra) -> str:
    cfg = {"source": source, "output": output, "styles": styles, "vgg_weights": "random:0", "no_metrics": True,
           "quiet": True, "contact_sheet": 0, "batch_size": 4, **extra}
    path = tmp_path / f"nightly-{len(list(tmp_path.glob('nightly-*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _night(cfg: str, run_id: str, *flags: str) -> dict:
    assert catalog.cli(["--config", cfg, "--run-id", run_id, *flags]) == 0
    return json.loads(read_bytes(f"{yaml.safe_load(open(cfg))['output']}/_runs/{run_id}.json"))


def _metrics(output: str, run_id: str) -> list[dict]:
    fs, path = get_filesystem(f"{output}/_metrics/run_id={run_id}")
    return [row for f in sorted(fs.ls(path, detail=False))
            for row in pq.read_table(io.BytesIO(fs.cat_file(f))).to_pylist()]


def _rendered(output: str, run_id: str) -> set[tuple[str, str]]:
    """(input file name, style) of the ok rows a night rendered."""
    return {(r["input_uri"].rsplit("/", 1)[-1], r["style"]) for r in _metrics(output, run_id) if r["status"] == "ok"}


# ---------------------------------------------------------------- plan logic, no Ray


def _settings(**kw) -> JobSettings:
    return JobSettings(input="/cat", output="/out", styles={"a": "/a.pth", "b": "/b.pth"}, run_id="r", **kw)


def _ledger(*rows: tuple[str, str, str, str, str]) -> pa.Table:
    return pa.Table.from_pylist([
        {"input_uri": u, "rel_path": u.rsplit("/", 1)[-1], "style": s, "input_version": v, "model_sha256": sha,
         "output_uri": o, "run_id": "old", "updated_at": dt.datetime.now(dt.timezone.utc)}
        for u, s, v, sha, o in rows], schema=L.LEDGER_SCHEMA)


def _names(plan, style: str, kind: str) -> list[str]:
    return sorted(r["rel_path"] for r in plan.todo.to_pylist() if r["style"] == style and r["kind"] == kind)


def test_build_plan_classifies_each_pair():
    s = _settings()
    files = [InputFile(f"/cat/{n}.png", f"{n}.png", 1, v) for n, v in (("same", "v1"), ("edited", "v2"), ("fresh", "v1"))]
    listing = listing_table(files, {f.uri: f.version for f in files})
    ledger = _ledger(
        ("/cat/same.png", "a", "v1", "shaA", "/out/a/same.jpg"),
        ("/cat/same.png", "b", "v1", "OLD", "/out/b/same.jpg"),  # b's checkpoint changed
        ("/cat/edited.png", "a", "v1", "shaA", "/out/a/edited.jpg"),  # input changed
        ("/cat/edited.png", "b", "v2", "shaB", "/out/b/edited.png"),  # output key changed (format)
        ("/cat/gone.png", "a", "v1", "shaA", "/out/a/gone.jpg"),  # input deleted
        ("/cat/same.png", "retired", "v1", "x", "/out/retired/same.jpg"),  # style dropped from config
        ("/cat/gone.png", "retired", "v1", "x", "/out/retired/gone.jpg"),
    )
    plan = build_plan(s, listing, {"a": "shaA", "b": "shaB"}, ledger)
    counts = plan.counts()
    assert (_names(plan, "a", "new"), _names(plan, "a", "changed"), counts["a"]["unchanged"]) == (["fresh.png"], ["edited.png"], 1)
    assert plan.deleted.column("input_uri").to_pylist().count("/cat/gone.png") == 2
    assert (_names(plan, "b", "new"), _names(plan, "b", "changed"), counts["b"]["unchanged"], counts["b"]["deleted"]) == (
        ["fresh.png"], ["edited.png", "same.png"], 0, 0)
    assert counts["retired"] == {"new": 0, "changed": 0, "recheck": 0, "deleted": 1, "unchanged": 1, "recovered": 0,
                                 "quarantined": 0}
    assert {r["output_uri"] for r in plan.todo.to_pylist() if r["style"] == "b"} == {
        f"/out/b/{n}.jpg" for n in ("fresh", "edited", "same")}
    assert plan.total("deleted") == 2 and plan.todo.num_rows == 5
    assert (plan.guard.ledger_inputs, plan.guard.deleted_inputs, plan.guard.tripped) == (3, 1, False)

    full = build_plan(s, listing, {"a": "shaA", "b": "shaB"}, ledger, full=True)
    assert full.todo.num_rows == 6 and full.total("unchanged") == 1  # only the unconfigured style's row stays
    text = describe_plan(plan)
    assert "retired" in text and "not configured" in text and "to render: 5" in text and "/out/a/gone.jpg" in text


def test_an_added_changed_or_removed_mask_or_new_mask_settings_re_render_their_inputs(tmp_path):
    from jobs.common.listing import list_images

    cat, masks = tmp_path / "cat", tmp_path / "masks"
    (cat / "sub").mkdir(parents=True)
    masks.mkdir()
    for n, name in enumerate(("a.png", "b.jpg", "sub/c.png")):
        (cat / name).write_bytes(_png(n))
    (masks / "a.png").write_bytes(_png(10))
    s = JobSettings(input=str(cat), output=str(tmp_path / "out"), styles={"a": "/a.pth", "b": "/b.pth"}, run_id="r",
                    mask_prefix=str(masks))
    inputs = list_images(str(cat))
    shas = {"a": "shaA", "b": "shaB"}

    def listing(settings: JobSettings) -> pa.Table:
        return listing_table(inputs, catalog._with_masks(settings, inputs, L.input_versions(inputs, None)))

    def rendered(listed: pa.Table) -> pa.Table:  # the ledger after a night that rendered every pair
        return pa.Table.from_pylist([
            {**r, "style": style, "model_sha256": shas[style], "output_uri": output_key(s, r["rel_path"], style),
             "run_id": "old", "updated_at": dt.datetime.now(dt.timezone.utc)}
            for r in listed.to_pylist() for style in shas], schema=L.LEDGER_SCHEMA)

    def changed(settings: JobSettings, ledger: pa.Table) -> list[str]:
        plan = build_plan(settings, listing(settings), shas, ledger)
        assert plan.todo.num_rows == 2 * len(set(plan.todo.column("rel_path").to_pylist()))  # both styles
        return sorted(set(plan.todo.column("rel_path").to_pylist()))

    ledger = rendered(listing(s))
    assert changed(s, ledger) == []
    (masks / "a.png").write_bytes(_png(11, (40, 40)))  # a's mask edited
    (masks / "b.png").write_bytes(_png(12))  # b gets one
    assert changed(s, ledger) == ["a.png", "b.jpg"]
    ledger = rendered(listing(s))
    (masks / "a.png").unlink()  # a's is removed
    assert changed(s, ledger) == ["a.png"]
    assert changed(s.replace(mask_feather=4), ledger) == ["a.png", "b.jpg", "sub/c.png"]
    assert changed(s.replace(mask_mode="labels"), ledger) == ["a.png", "b.jpg", "sub/c.png"]
    # without masks the versions are the plain ones: a ledger written before masks existed keeps matching
    plain = L.input_versions(inputs, None)
    assert catalog._with_masks(s.replace(mask_prefix=None), inputs, plain) is plain
    assert changed(s.replace(mask_prefix=None), rendered(listing_table(inputs, plain))) == []


ODD_PATHS = ["a.png", "sub/dir/b.PNG", "./x/../y.png", "c", "d.tar.gz", "..", "/abs.png", "é/ü.png", "a.", "..a",
             "a..b", ".hidden", "dir.v2/file", "dir.v2/.f.png", "x\\y.png", "C:/x.png", "a//b.png", "sub/./c.png",
             "trail/", "ctrl\x01.png", "sp ace/(1) [x].JPEG", "...", "x/..", ".", "a/b/c/d/e.f.g"]


def test_planned_output_keys_are_the_pipelines():
    """The planner computes output keys column-wise; they must be the pipeline's, odd paths included."""
    s = _settings(format="webp")
    files = [InputFile(f"/cat/{n}", rel, 1, "v") for n, rel in enumerate(ODD_PATHS)]
    plan = build_plan(s, listing_table(files, {}), {"a": "A", "b": "B"}, L.LEDGER_SCHEMA.empty_table())
    got = {(r["rel_path"], r["style"]): r["output_uri"] for r in plan.todo.to_pylist()}
    assert len(got) == 2 * len(ODD_PATHS)
    for (rel, style), uri in got.items():
        try:
            expected = output_key(s, rel, style)
        except UnsafePathError:
            expected = ""
        assert uri == expected, rel


def test_ledger_and_history_round_trip(tmp_path):
    out = str(tmp_path / "out")
    assert L.read_ledger(out).num_rows == 0 and L.read_history(out).num_rows == 0
    ledger = _ledger(("/cat/x.png", "a", "v", "sha", "/out/a/x.jpg"))
    L.write_ledger(out, ledger)
    assert L.read_ledger(out).to_pylist() == ledger.to_pylist()
    for n in range(2):
        L.append_history(out, {"run_id": f"r{n}", "status": "ok", "processed": n})
    assert L.read_history(out).column("run_id").to_pylist() == ["r0", "r1"]


def test_config_keys_map_onto_job_settings(tmp_path, capsys):
    cfg = _config(tmp_path, "s3://b/cat", "s3://b/out", {"mosaic": "s3://b/m.pth", "candy": "s3://b/c.pth"},
                  quality=70, max_side=64, max_error_rate=0.2, format="png")
    s = catalog.parse_args(["--config", cfg, "--dry-run", "--quality", "80"])
    assert (s.input, s.output, s.styles) == ("s3://b/cat", "s3://b/out", {"mosaic": "s3://b/m.pth", "candy": "s3://b/c.pth"})
    assert (s.quality, s.max_side, s.max_error_rate, s.format, s.vgg_weights, s.metrics) == (80, 64, 0.2, "png", "random:0", False)
    assert s.dry_run and not s.full
    no_source = tmp_path / "bad.yaml"
    no_source.write_text(yaml.safe_dump({"output": "/o", "styles": {"a": "/a.pth"}}))
    with pytest.raises(SystemExit):
        catalog.parse_args(["--config", str(no_source)])
    assert "needs source" in capsys.readouterr().err
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({"source": "/c", "output": "/o", "styles": {"a": "/a"}, "qualty": 3}))
    with pytest.raises(SystemExit):
        catalog.parse_args(["--config", str(typo)])
    assert "unknown option 'qualty'; did you mean 'quality'?" in capsys.readouterr().err


def test_missing_source_or_checkpoint_exit_2(tmp_path, capsys):
    ckpt = tmp_path / "a.pth"
    ckpt.write_bytes(_checkpoint(0))
    (tmp_path / "cat").mkdir()
    assert catalog.cli(["--source", str(tmp_path / "nope"), "--output", str(tmp_path / "o"), "--style", f"a={ckpt}"]) == 2
    assert catalog.cli(["--source", str(tmp_path / "cat"), "--output", str(tmp_path / "o"),
                        "--style", f"a={tmp_path / 'missing.pth'}"]) == 2
    assert "cannot use checkpoint" in capsys.readouterr().err
    # Nothing written but the lease's lock file (kept: unlinking a flock file races with its waiters).
    assert [str(p.relative_to(tmp_path / "o")) for p in (tmp_path / "o").rglob("*") if p.is_file()] == [
        "_catalog/lease.json.lock"]


# ---------------------------------------------------------------- real nights


@pytest.mark.usefixtures("ray_local")
def test_incremental_nights_on_s3(s3_bucket, s3_client, tmp_path, capsys):
    root = f"s3://{s3_bucket}"
    src, out = f"{root}/catalog", f"{root}/out"
    for n, name in enumerate(["a.png", "b.png", "sub/c.png", "sub/d.png"]):
        write_bytes_atomic(f"{src}/{name}", _png(n))
    write_bytes_atomic(f"{root}/models/a.pth", _checkpoint(0))
    cfg = _config(tmp_path, src, out, {"a": f"{root}/models/a.pth"}, contact_sheet=2)

    def keys(prefix: str) -> set[str]:
        pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket, Prefix=prefix)
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    def modified(key: str) -> dt.datetime:
        return s3_client.head_object(Bucket=s3_bucket, Key=key)["LastModified"]

    # Dry run: the plan is printed, nothing is written.
    assert catalog.cli(["--config", cfg, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "new" in printed and "to render: 4 pair(s)" in printed
    assert keys("out/") == set()

    n1 = _night(cfg, "n1")
    assert (n1["processed"], n1["skipped"], n1["deleted"], n1["errors"]) == (4, 0, 0, 0)
    assert {"plan_s", "render_s", "commit_s", "wall_s"} <= set(n1["timings"])
    assert {f"out/a/{n}.jpg" for n in ("a", "b", "sub/c", "sub/d")} <= keys("out/a/")
    assert {"out/_catalog/report.html", "out/_catalog/report.png"} <= keys("out/_catalog/")
    assert n1["contact_sheet"] == f"{out}/_runs/n1_contact.png" and n1["images_per_s"] > 0

    n2 = _night(cfg, "n2")
    assert (n2["processed"], n2["skipped"], n2["deleted"], n2["errors"], n2["pipeline"]) == (0, 4, 0, 0, None)
    assert not keys("out/_metrics/run_id=n2/")

    # The catalog changes and a new style arrives the same night: style a renders only what changed,
    # the new style b renders every input.
    before = {k: modified(f"out/a/{k}.jpg") for k in ("a", "sub/d")}
    write_bytes_atomic(f"{src}/e.png", _png(10))
    write_bytes_atomic(f"{src}/sub/f.png", _png(11))
    write_bytes_atomic(f"{src}/b.png", _png(12))  # changed content -> new ETag
    s3_client.delete_object(Bucket=s3_bucket, Key="catalog/sub/c.png")
    write_bytes_atomic(f"{root}/models/b.pth", _checkpoint(1))
    cfg2 = _config(tmp_path, src, out, {"a": f"{root}/models/a.pth", "b": f"{root}/models/b.pth"})
    n3 = _night(cfg2, "n3")
    assert (n3["processed"], n3["skipped"], n3["deleted"], n3["errors"]) == (3 + 5, 2, 1, 0)
    assert (n3["plan"]["a"]["unchanged"], n3["plan"]["b"]["new"]) == (2, 5)
    current = ("a.png", "b.png", "d.png", "e.png", "f.png")
    assert _rendered(out, "n3") == {("e.png", "a"), ("f.png", "a"), ("b.png", "a")} | {(n, "b") for n in current}
    # a.png and d.png went through the pipeline for style b; for style a their outputs stand (skipped rows).
    assert {(r["input_uri"].rsplit("/", 1)[-1], r["style"]) for r in _metrics(out, "n3") if r["status"] != "ok"} == {
        ("a.png", "a"), ("d.png", "a")}
    assert "out/a/sub/c.jpg" not in keys("out/a/")
    assert {k: modified(f"out/a/{k}.jpg") for k in before} == before  # untouched outputs not rewritten
    ledger = {(r["input_uri"], r["style"]): r for r in L.read_ledger(out).to_pylist()}
    assert sorted((uri.rsplit("/", 1)[-1], style) for uri, style in ledger) == sorted(
        (n, style) for n in current for style in "ab")
    b_etag = s3_client.head_object(Bucket=s3_bucket, Key="catalog/b.png")["ETag"].strip('"')
    assert ledger[(f"{src}/b.png", "a")]["input_version"] == b_etag
    for style in "ab":
        assert keys(f"out/_catalog/provenance/{style}/") == {f"out/_catalog/provenance/{style}/{n}.jpg.json" for n in
                                                             ("a", "b", "sub/d", "e", "sub/f")}

    # A changed checkpoint re-renders that style only.
    write_bytes_atomic(f"{root}/models/a.pth", _checkpoint(2))
    n4 = _night(cfg2, "n4")
    assert (n4["processed"], n4["plan"]["a"]["changed"], n4["plan"]["b"]["unchanged"]) == (5, 5, 5)
    assert {style for _, style in _rendered(out, "n4")} == {"a"}
    ledger = L.read_ledger(out).to_pylist()
    assert len(ledger) == 10 and {e["model_sha256"] for e in ledger if e["style"] == "a"} == {n4["style_sha256"]["a"]}
    assert all(exists(e["output_uri"]) for e in ledger)
    assert style_outputs(out) == {e["output_uri"] for e in ledger}

    history = L.read_history(out).to_pydict()
    assert history["run_id"] == ["n1", "n2", "n3", "n4"]
    assert history["processed"] == [4, 0, 8, 5] and history["deleted"] == [0, 0, 1, 0]
    assert set(history["status"]) == {"ok"}


@pytest.mark.usefixtures("ray_local")
def test_crashed_night_is_finished_by_the_next(tmp_path, monkeypatch):
    src, out = tmp_path / "cat", str(tmp_path / "out")
    src.mkdir()
    for n in range(6):
        (src / f"img{n}.png").write_bytes(_png(n))
    (src / "broken.png").write_bytes(b"not an image")  # fails every night, never enters the ledger
    ckpt = tmp_path / "a.pth"
    ckpt.write_bytes(_checkpoint(0))
    cfg = _config(tmp_path, str(src), out, {"a": str(ckpt)}, max_error_rate=0.5)
    real_render = catalog._render

    def dies_midway(settings, todo, on_rows):
        real_render(settings, todo.filter(pc.is_in(todo.column("rel_path"), value_set=pa.array(
            ["img0.png", "img1.png", "img2.png"]))), on_rows)
        raise RuntimeError("node lost")

    monkeypatch.setattr(catalog, "_render", dies_midway)
    with pytest.raises(RuntimeError, match="node lost"):
        catalog.run_night((catalog.parse_args(["--config", cfg, "--run-id", "dead"])))
    monkeypatch.undo()
    assert L.read_ledger(out).num_rows == 0  # nothing claimed: the night never committed
    assert sorted(os.listdir(f"{out}/a")) == ["img0.jpg", "img1.jpg", "img2.jpg"]
    assert os.path.exists(f"{out}/_catalog/journal/dead.parquet")
    assert L.read_history(out).to_pydict()["status"] == ["failed"]

    n2 = _night(cfg, "n2")
    assert (n2["recovered"], n2["processed"], n2["errors"], n2["passed"]) == (3, 3, 1, True)
    assert _rendered(out, "n2") == {(f"img{n}.png", "a") for n in (3, 4, 5)}
    ledger = L.read_ledger(out).to_pylist()
    assert sorted((e["input_uri"], e["style"]) for e in ledger) == sorted((str(src / f"img{n}.png"), "a") for n in range(6))
    assert {e["run_id"] for e in ledger} == {"dead", "n2"}
    assert sorted(os.listdir(f"{out}/a")) == [f"img{n}.jpg" for n in range(6)]  # once each, no temp files
    assert os.listdir(f"{out}/_catalog/journal") == []

    # A night dying between its ledger write and its deletes leaves a tombstone, not an orphan. It also
    # retries the broken input (errors never enter the ledger).
    os.remove(src / "img5.png")
    calls = []

    def dies_deleting(output, uris, options=None):
        calls.append(list(uris))
        raise OSError("lost the store")

    monkeypatch.setattr(L, "remove_outputs", dies_deleting)
    with pytest.raises(OSError):
        catalog.run_night(catalog.parse_args(["--config", cfg, "--run-id", "dead2"]))
    monkeypatch.undo()
    assert (str(src / "img5.png"), "a") not in {(e["input_uri"], e["style"]) for e in L.read_ledger(out).to_pylist()}
    assert os.path.exists(f"{out}/a/img5.jpg") and calls == [[f"{out}/a/img5.jpg"]]
    assert os.listdir(f"{out}/_catalog/tombstones") == ["dead2.parquet"]
    assert [(r["input_uri"].rsplit("/", 1)[-1], r["status"]) for r in _metrics(out, "dead2")] == [("broken.png", "error")]
    os.remove(src / "broken.png")
    n4 = _night(cfg, "n4")  # nothing to render; the orphan dead2 left is cleaned up
    assert (n4["processed"], n4["errors"], n4["deleted"], n4["removed_outputs"], n4["pipeline"]) == (0, 0, 0, 1, None)
    assert not os.path.exists(f"{out}/a/img5.jpg") and os.listdir(f"{out}/_catalog/tombstones") == []
    assert L.read_ledger(out).num_rows == 5
    assert style_outputs(out) == {e["output_uri"] for e in L.read_ledger(out).to_pylist()}


def test_input_versions(tmp_path, s3_bucket):
    local = tmp_path / "x.png"
    local.write_bytes(b"abc")
    s3 = f"s3://{s3_bucket}/k/x.png"
    write_bytes_atomic(s3, b"abc")
    opts = StorageOptions()
    versions = L.input_versions([InputFile(str(local), "x.png", None, None), InputFile(s3, "x.png", None, None),
                                 InputFile(str(tmp_path / "gone.png"), "gone.png", None, None)], opts)
    st = os.stat(local)
    assert versions[str(local)] == f"{st.st_size}-{st.st_mtime_ns}"
    assert versions[s3] == "900150983cd24fb0d6963f7d28e17f72"  # md5("abc"): the S3 ETag
    assert versions[str(tmp_path / "gone.png")] == ""
