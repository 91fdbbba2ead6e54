"""Deletion guard, quarantine, the shared error rate and the catalog's exit codes (fake renderer)."""

from __future__ import annotations

import os

import pytest

from jobs.catalog import night as catalog
from jobs.catalog import ledger as L
from jobs.catalog import quarantine as Q
from jobs.catalog.lease import Lease, LeaseError
from jobs.common.metrics import RunCounts, error_rate
from jobs.common.storage import read_bytes, write_bytes_atomic
from jobs.common.storage_batch import remove_many

from catalog_fakes import FakeRenderer, check_settled, fake_checkpoint, settings_for, style_outputs, versions


def _setup(tmp_path, n: int, *, broken: dict[str, bytes] | None = None) -> tuple[str, str, list[str]]:
    src, out = str(tmp_path / "cat"), str(tmp_path / "out")
    for i in range(n):
        write_bytes_atomic(f"{src}/img{i:02d}.png", f"image {i}".encode())
    for name, data in (broken or {}).items():
        write_bytes_atomic(f"{src}/{name}", data)
    write_bytes_atomic(str(tmp_path / "a.pth"), fake_checkpoint("model a"))
    return src, out, ["--source", src, "--output", out, f"--style=a={tmp_path / 'a.pth'}", "--quiet",
                      "--contact-sheet", "0"]


def _cli(monkeypatch, argv: list[str], run_id: str, *flags: str, renderer=None) -> int:
    monkeypatch.setattr(catalog, "_render", renderer or FakeRenderer())
    return catalog.cli([*argv, "--run-id", run_id, *flags])


def _summary(out: str, run_id: str) -> dict:
    import json

    return json.loads(read_bytes(f"{out}/_runs/{run_id}.json"))


# ---------------------------------------------------------------- the deletion guard


def test_emptied_catalog_is_refused_until_overridden(tmp_path, monkeypatch, capsys):
    src, out, argv = _setup(tmp_path, 20)
    assert _cli(monkeypatch, argv, "n1") == 0
    before = style_outputs(out)
    remove_many([f"{src}/img{i:02d}.png" for i in range(20)])  # the directory is still there, empty
    assert _cli(monkeypatch, argv, "n2") == 2
    err = capsys.readouterr().err
    assert "listing is empty but the ledger holds 20 inputs" in err and "--allow-mass-delete" in err
    assert style_outputs(out) == before and L.read_ledger(out).num_rows == 20  # nothing touched
    assert L.read_history(out).num_rows == 1 and not os.path.exists(f"{out}/_runs/n2.json")

    assert _cli(monkeypatch, argv, "n3", "--allow-mass-delete") == 0
    assert style_outputs(out) == set() and L.read_ledger(out).num_rows == 0
    assert _summary(out, "n3")["guard"]["overridden"] is True


def test_truncated_manifest_trips_the_guard_and_dry_run_says_so(tmp_path, monkeypatch, capsys):
    src, out, argv = _setup(tmp_path, 20)
    manifest = tmp_path / "manifest.csv"
    rows = [f"{src}/img{i:02d}.png,img{i:02d}.png" for i in range(20)]
    manifest.write_text("uri,rel_path\n" + "\n".join(rows) + "\n")
    argv = [a if a != src else str(manifest) for a in argv]
    assert _cli(monkeypatch, argv, "n1") == 0
    manifest.write_text("uri,rel_path\n" + "\n".join(rows[:13]) + "\n")  # a write cut short
    assert _cli(monkeypatch, argv, "dry", "--dry-run") == 0
    printed = capsys.readouterr().out
    assert "7 of 20 inputs gone (35.0%), over the limit of 2" in printed and "REFUSED" in printed
    assert f"{out}/a/img19.jpg" in printed
    assert _cli(monkeypatch, argv, "n2") == 2
    assert "7 of 20 inputs gone" in capsys.readouterr().err
    assert L.read_ledger(out).num_rows == 20


def test_a_real_five_percent_deletion_goes_through(tmp_path, monkeypatch):
    src, out, argv = _setup(tmp_path, 40)
    assert _cli(monkeypatch, argv, "n1") == 0
    remove_many([f"{src}/img00.png", f"{src}/img01.png"])
    assert _cli(monkeypatch, argv, "n2") == 0
    s = _summary(out, "n2")
    assert (s["deleted"], s["removed_outputs"], s["guard"]["tripped"]) == (2, 2, False)
    assert (s["guard"]["deleted_inputs"], s["guard"]["allowed"]) == (2, 4)
    check_settled(out, versions(src))


def test_small_catalog_can_lose_two_but_not_three(tmp_path, monkeypatch):
    src, out, argv = _setup(tmp_path, 5)
    assert _cli(monkeypatch, argv, "n1") == 0
    remove_many([f"{src}/img00.png", f"{src}/img01.png", f"{src}/img02.png"])
    assert _cli(monkeypatch, argv, "n2") == 2  # 3 > max(2, 0.1 x 5)
    assert _cli(monkeypatch, argv, "n3", "--max-delete-floor", "3") == 0


def test_format_change_replaces_every_output_without_tripping(tmp_path, monkeypatch):
    src, out, argv = _setup(tmp_path, 20)
    assert _cli(monkeypatch, argv, "n1") == 0
    assert _cli(monkeypatch, argv, "n2", "--format", "png") == 0
    s = _summary(out, "n2")
    assert (s["processed"], s["deleted"], s["removed_outputs"]) == (20, 0, 20)
    assert all(u.endswith(".png") for u in style_outputs(out))
    check_settled(out, versions(src))


# ---------------------------------------------------------------- lease at the command line


def test_second_night_exits_2_naming_the_holder(tmp_path, monkeypatch, capsys):
    src, out, argv = _setup(tmp_path, 3)
    with Lease(out, "the-other-night").acquire():
        assert _cli(monkeypatch, argv, "n1") == 2
        assert "another night holds the lease" in capsys.readouterr().err
        assert _cli(monkeypatch, argv, "n2", "--break-lease") == 0


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_nights_started_together_one_runs(tmp_path, monkeypatch, where, request):
    import threading

    root = str(tmp_path) if where == "local" else f"s3://{request.getfixturevalue('s3_bucket')}"
    src, out = f"{root}/cat", f"{root}/out"
    for i in range(3):
        write_bytes_atomic(f"{src}/img{i}.png", f"image {i}".encode())
    write_bytes_atomic(f"{root}/a.pth", fake_checkpoint("model a"))
    refused = threading.Event()

    class Waits(FakeRenderer):  # the winner keeps the lease until the loser has been turned away
        def __call__(self, *a, **kw):
            refused.wait(30)
            return super().__call__(*a, **kw)

    monkeypatch.setattr(catalog, "_render", Waits())
    barrier, outcomes = threading.Barrier(2), {}

    def night(run_id: str) -> None:
        settings, copts = settings_for(src, out, {"a": f"{root}/a.pth"}, run_id)
        barrier.wait()
        try:
            outcomes[run_id] = catalog.run_night(settings, copts)["processed"]
        except LeaseError as exc:
            outcomes[run_id] = str(exc)
            refused.set()

    threads = [threading.Thread(target=night, args=(r,)) for r in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(map(type, outcomes.values()), key=str) == [int, str]
    loser = next(v for v in outcomes.values() if isinstance(v, str))
    assert "another night holds the lease" in loser and "until" in loser
    assert L.read_history(out).num_rows == 1 and L.read_ledger(out).num_rows == 3


def test_night_that_lost_its_lease_stops_before_the_ledger(tmp_path, monkeypatch, capsys):
    src, out, argv = _setup(tmp_path, 4)
    stolen = []

    class Stolen(FakeRenderer):
        def __call__(self, settings, todo, on_rows):
            result = super().__call__(settings, todo, on_rows)
            stolen.append(Lease(out, "operator-night").acquire(break_lease=True))  # mid-night takeover
            return result

    assert _cli(monkeypatch, argv, "n1", renderer=Stolen()) == 2
    assert "lost the lease" in capsys.readouterr().err and "operator-night" in str(stolen[0].run_id)
    assert L.read_ledger(out).num_rows == 0 and L.read_journals(out)  # nothing committed
    stolen[0].release()
    assert _cli(monkeypatch, argv, "n2") == 0
    assert _summary(out, "n2")["recovered"] == 4  # the interrupted night's outputs, vouched for by provenance
    check_settled(out, versions(src))


# ---------------------------------------------------------------- quarantine and the error budget


def test_permanent_failure_is_quarantined_after_three_nights_and_released_by_a_change(tmp_path, monkeypatch):
    src, out, argv = _setup(tmp_path, 9, broken={"bad.png": b"BROKEN 1", "flaky.png": b"FLAKY"})
    argv += ["--max-error-rate", "0.25"]
    for night in ("n1", "n2", "n3"):
        assert _cli(monkeypatch, argv, night) == 0
    table = Q.read(out)
    bad = {r["input_uri"].rsplit("/", 1)[-1]: r for r in table.to_pylist()}
    assert list(bad) == ["bad.png"]  # the transient read_error never enters the table
    assert (bad["bad.png"]["streak"], bad["bad.png"]["error_type"]) == (3, "unidentified")
    assert bad["bad.png"]["quarantined_at"] is not None
    assert _summary(out, "n3")["newly_quarantined"] == [f"{src}/bad.png"]

    renderer = FakeRenderer()
    assert _cli(monkeypatch, argv, "n4", "--max-error-rate", "0.1", renderer=renderer) == 0
    s = _summary(out, "n4")
    assert (s["quarantined"], s["errors"], s["errors_by_type"]) == (1, 1, {"read_error": 1})
    assert s["error_rate"] == pytest.approx(1 / 10)  # flaky / (9 skipped + 1 error); bad.png in neither part
    assert ("bad.png", "a") not in renderer.rendered
    assert L.read_history(out).column("quarantined").to_pylist() == [0, 0, 0, 1]

    write_bytes_atomic(f"{src}/bad.png", b"fixed now")  # new content: retried, rendered, out of quarantine
    renderer = FakeRenderer()
    assert _cli(monkeypatch, argv, "n5", renderer=renderer) == 0
    assert ("bad.png", "a") in renderer.rendered and Q.read(out).num_rows == 0


def test_release_flags_and_streak_resets(tmp_path, monkeypatch):
    src, out, argv = _setup(tmp_path, 4, broken={"x.png": b"BROKEN", "y.png": b"BROKEN"})
    argv += ["--max-error-rate", "1", "--quarantine-after", "2"]
    for night in ("n1", "n2"):
        assert _cli(monkeypatch, argv, night) == 0
    assert Q.held(Q.read(out)).num_rows == 2
    assert _cli(monkeypatch, argv, "n3", "--release", f"{src}/x.png") == 0
    n3 = _summary(out, "n3")
    assert (n3["released"], n3["errors"], n3["quarantined"]) == (1, 1, 1)  # x retried (and failed), y held
    rows = {r["input_uri"].rsplit("/", 1)[-1]: r for r in Q.read(out).to_pylist()}
    assert rows["x.png"]["streak"] == 1 and rows["x.png"]["quarantined_at"] is None  # retried, streak anew
    assert rows["y.png"]["quarantined_at"] is not None
    assert _cli(monkeypatch, argv, "n4", "--release-all") == 0
    assert _summary(out, "n4")["released"] == 2 and _summary(out, "n4")["errors"] == 2


def test_changing_error_type_restarts_the_streak():
    table = Q.SCHEMA.empty_table()
    listed = attempted = __import__("pyarrow").array(["u"])
    table, _ = Q.update(table, attempted, listed, {"u": ("v1", "truncated", "")}, "r1", 2)
    table, newly = Q.update(table, attempted, listed, {"u": ("v1", "corrupt", "")}, "r2", 2)
    assert newly == [] and table.to_pylist()[0]["streak"] == 1
    table, newly = Q.update(table, attempted, listed, {"u": ("v1", "corrupt", "")}, "r3", 2)
    assert newly == ["u"] and table.to_pylist()[0]["first_run_id"] == "r2"
    table, _ = Q.update(table, attempted, listed, {}, "r4", 2)  # attempted and fine: out
    assert table.num_rows == 0


def test_one_error_rate_definition():
    import pyarrow as pa

    counts = RunCounts()
    counts.add(pa.table({"status": ["ok", "error", "skipped", "skipped"], "style": ["a"] * 4,
                         "error_type": [None, "corrupt", None, None], "out_width": [1, None, None, None],
                         "out_height": [1, None, None, None], "stylize_ms": [1.0, None, None, None],
                         "metrics_ms": [1.0, None, None, None], "input_uri": ["u"] * 4, "output_uri": ["o"] * 4}))
    assert counts.error_rate == error_rate({"ok": 1, "error": 1, "skipped": 2}) == 0.25
    assert error_rate({}) == 0.0
