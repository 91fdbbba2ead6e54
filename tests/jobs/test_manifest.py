"""Inputs staged as Parquet parts a page at a time, and rows counted exactly once in bounded memory
(no Ray: the pieces the batch job streams through)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.batch import staging as M
from jobs.common import manifest
from jobs.common.metrics import PairLedger, RunCounts, _nullable, to_table
from jobs.common.listing import iter_listing, list_images
from jobs.common.storage import InputFile


def _staged(staged: M.StagedManifest) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in staged.parts])


def test_listing_is_staged_in_parts_with_a_stable_index(tmp_path: Path) -> None:
    for n in range(23):
        (tmp_path / "in" / f"d{n % 3}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / f"d{n % 3}" / f"{n}.jpg").write_bytes(b"x")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    staged = M.stage_inputs(str(tmp_path / "in"), str(tmp_path / "stage"), part_rows=10)
    assert staged.rows == 23 and len(staged.parts) == 3 and not staged.planned
    table = _staged(staged)
    assert table.column_names == ["idx", "uri", "rel_path"]
    assert table["idx"].to_pylist() == list(range(23))
    listed = {(f.uri, f.rel_path) for f in list_images(str(tmp_path / "in"))}
    assert set(zip(table["uri"].to_pylist(), table["rel_path"].to_pylist())) == listed
    # restaging the same prefix replaces its parts
    again = M.stage_inputs(str(tmp_path / "in" / "d0"), str(tmp_path / "stage"), part_rows=10)
    assert again.rows == 8 and sorted(p.name for p in (tmp_path / "stage").iterdir()) == ["part-00000.parquet"]


def test_local_listing_arrives_in_bounded_pages(tmp_path: Path) -> None:
    for n in range(25):
        (tmp_path / f"{n:02d}.png").write_bytes(b"x")
    pages = list(iter_listing(str(tmp_path), page_size=10))
    assert [len(p) for p in pages] == [10, 10, 5]


def test_s3_listing_arrives_page_by_page(s3_client: Any, s3_bucket: str, tmp_path: Path) -> None:
    keys = [f"many/{n % 4}/{n:03d}.jpg" for n in range(25)]
    for k in keys:
        s3_client.put_object(Bucket=s3_bucket, Key=k, Body=b"x")
    s3_client.put_object(Bucket=s3_bucket, Key="many/readme.txt", Body=b"x")
    pages = list(iter_listing(f"s3://{s3_bucket}/many", page_size=10))
    assert [len(p) for p in pages] == [10, 10, 5]  # the .txt key is dropped from its page
    assert sorted(f.uri for p in pages for f in p) == sorted(f"s3://{s3_bucket}/{k}" for k in keys)
    staged = M.stage_inputs(f"s3://{s3_bucket}/many", f"s3://{s3_bucket}/out/_manifests/r", part_rows=10)
    assert staged.rows == 25 and staged.parts[0] == f"s3://{s3_bucket}/out/_manifests/r/part-00000.parquet"


def test_user_manifest_streams_in_pages_and_keeps_its_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest, "PAGE_ROWS", 4)
    uris = [f"imgs/{'a' if n % 2 else 'b/c'}/{n}.png" for n in range(11)]
    (tmp_path / "m.csv").write_text("uri,rel_path\n" + "".join(f"{u},{'own.png' if n == 3 else ''}\n" for n, u in enumerate(uris)))
    pages = list(manifest.iter_manifest(str(tmp_path / "m.csv")))
    assert [len(p) for p in pages] == [4, 4, 3]
    files = [f for p in pages for f in p]
    assert [f.uri for f in files] == [str(tmp_path / u) for u in uris]  # relative to the manifest
    assert files[3].rel_path == "own.png" and files[0].rel_path == "b/c/0.png" and files[1].rel_path == "a/1.png"
    staged = M.stage_inputs(str(tmp_path / "m.csv"), str(tmp_path / "stage"), part_rows=5)
    assert _staged(staged)["uri"].to_pylist() == [f.uri for f in files]
    # an empty uri on a later page still names its row, before anything is staged
    (tmp_path / "hole.csv").write_text("uri,n\n" + "x.png,1\n" * 9 + "\n,10\n")  # blank lines are no entries
    with pytest.raises(manifest.ManifestError, match="entry 10 has an empty uri"):
        M.stage_inputs(str(tmp_path / "hole.csv"), str(tmp_path / "stage2"))
    assert not (tmp_path / "stage2").exists()


def test_a_plan_is_staged_with_its_styles(tmp_path: Path) -> None:
    inputs = [InputFile(f"/in/{n}.jpg", f"{n}.jpg", None, None) for n in range(3)]
    staged = M.stage_inputs(inputs, str(tmp_path / "s"), todo={"/in/0.jpg": ["a", "b"], "/in/2.jpg": ["b"]})
    assert staged.planned and _staged(staged)["todo_styles"].to_pylist() == ["a,b", "", "b"]
    # the same plan as a Parquet manifest with a todo_styles column (a directory of parts)
    (tmp_path / "plan.parquet").mkdir()
    pq.write_table(pa.table({"uri": ["/in/0.jpg", "/in/2.jpg"], "todo_styles": ["a", "a,b"]}),
                   tmp_path / "plan.parquet" / "p0.parquet")
    staged = M.stage_inputs(str(tmp_path / "plan.parquet"), str(tmp_path / "s2"))
    assert staged.planned and _staged(staged)["todo_styles"].to_pylist() == ["a", "a,b"]


def test_pair_ledger_keeps_the_first_of_every_pair() -> None:
    ledger = PairLedger(rows=5, styles=["a", "b"])
    first = ledger.first_seen(np.array([0, 1, 1, 4]), pa.array(["a", "a", "a", "b"]))
    assert first.tolist() == [True, True, False, True] and ledger.seen == 3
    # a retried block comes back: only the pairs not seen yet count
    again = ledger.first_seen(np.array([0, 1, 2, 4, 0]), pa.array(["a", "b", "b", "b", "b"]))
    assert again.tolist() == [False, True, True, False, True] and ledger.seen == 6
    assert ledger.bits.nbytes == 2  # 10 pairs, one bit each
    with pytest.raises(ValueError, match="outside this run's plan"):
        ledger.first_seen(np.array([5]), pa.array(["a"]))
    with pytest.raises(ValueError, match="outside this run's plan"):
        ledger.first_seen(np.array([0]), pa.array(["c"]))


def test_vectorised_rows_equal_the_per_value_conversion() -> None:
    batch = {
        "uri": np.array(["/a.jpg", "/b.jpg", "/c.jpg"]), "rel_path": np.array(["a.jpg", "b.jpg", "c.jpg"]),
        "style": np.array(["s", "s", "t"]), "status": np.array(["ok", "error", "ok"]),
        "error_type": np.array(["", "not_found", ""]), "error": np.array(["", "gone", ""]),
        "output_uri": np.array(["/o/a.jpg", "", "/o/c.jpg"]), "width": np.array([40, -1, 8]),
        "height": np.array([30, -1, 6]), "out_width": np.array([40, -1, 8]), "out_height": np.array([30, -1, 6]),
        "input_bytes": np.array([100, -1, 7]), "content_loss": np.array([1.5, np.nan, 2.0]),
        "stylize_ms": np.array([3.0, np.nan, 1.0]), "metrics_ms": np.array([0.5, np.nan, 0.25]),
        "device": np.array(["cpu", "cpu", "cpu"], dtype=object),
    }
    table = to_table(batch)
    for name in table.column_names:
        typ = table.schema.field(name).type
        raw = batch.get("uri" if name == "input_uri" else name)
        expected = [None] * 3 if raw is None else _nullable(list(raw), typ)
        assert table[name].to_pylist() == expected, name
    # the Arrow table Ray Data hands the driver converts to the same rows
    assert to_table(pa.table({k: list(v) for k, v in batch.items()})).equals(table)
    counts = RunCounts()
    counts.add(table, keep_examples=1)
    assert counts.rows == 3 and counts.by_status == {"ok": 2, "error": 1}
    assert counts.by_style == {"s": {"ok": 1, "error": 1}, "t": {"ok": 1}}
    assert counts.by_error_type == {"not_found": 1} and counts.ok_pixels == 40 * 30 + 8 * 6
    assert counts.stylize_ms == 4.0 and counts.metrics_ms == 0.75
    assert counts.examples == {"s": [("/a.jpg", "/o/a.jpg")], "t": [("/c.jpg", "/o/c.jpg")]}
