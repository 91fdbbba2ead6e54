"""The crash matrix: a night killed at each step, the catalog changed, the next night settles all.

Runs the real planning and commit against local disk and the moto S3 server with a fake renderer
(tests/jobs/catalog_fakes.py); tests/jobs/test_catalog.py keeps end-to-end nights on real Ray.
"""

from __future__ import annotations

import pytest

from jobs.catalog import night as catalog
from jobs.catalog import ledger as L
from jobs.common.storage import write_bytes_atomic
from jobs.common.storage_batch import remove_many

from catalog_fakes import Crash, FakeRenderer, check_settled, fake_checkpoint, settings_for, style_outputs, versions


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path)
    return f"s3://{request.getfixturevalue('s3_bucket')}"


def _catalog(root: str, n: int = 10) -> tuple[str, str, dict[str, str]]:
    src, out = f"{root}/catalog", f"{root}/out"
    for i in range(n):
        write_bytes_atomic(f"{src}/img{i}.png", f"image {i}".encode())
    write_bytes_atomic(f"{src}/sub/broken.png", b"BROKEN")
    styles = {}
    for s in ("a", "b"):
        write_bytes_atomic(f"{root}/models/{s}.pth", fake_checkpoint(f"model {s}"))
        styles[s] = f"{root}/models/{s}.pth"
    return src, out, styles


def _night(monkeypatch, src, out, styles, run_id, renderer=None, *flags):
    monkeypatch.setattr(catalog, "_render", renderer or FakeRenderer())
    settings, copts = settings_for(src, out, styles, run_id, "--max-error-rate", "0.5", "--max-delete-floor", "5", *flags)
    return catalog.run_night(settings, copts)


def _crash_after(monkeypatch, module, name):
    real = getattr(module, name)

    def dies(*a, **kw):
        real(*a, **kw)
        raise Crash(f"killed after {name}")

    monkeypatch.setattr(module, name, dies)


def _crash_before(monkeypatch, module, name):
    def dies(*a, **kw):
        raise Crash(f"killed before {name}")

    monkeypatch.setattr(module, name, dies)


CRASH_POINTS = ["after_journal", "after_some_outputs", "after_tombstone", "after_ledger", "during_deletes"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crashed_night_then_changed_catalog_settles(root, point, monkeypatch):
    src, out, styles = _catalog(root)
    n1 = _night(monkeypatch, src, out, styles, "n1")
    assert (n1["processed"], n1["errors"]) == (20, 2)
    check_settled(out, versions(src))

    # Night 2 has deletes, changes and new inputs to do, and dies at `point`.
    remove_many([f"{src}/img0.png", f"{src}/img1.png"])
    write_bytes_atomic(f"{src}/img2.png", b"image 2, retouched")
    write_bytes_atomic(f"{src}/img10.png", b"image 10")
    write_bytes_atomic(f"{src}/img11.png", b"image 11")
    renderer = FakeRenderer()
    if point == "after_journal":
        renderer = FakeRenderer(die_after=0)
    elif point == "after_some_outputs":
        renderer = FakeRenderer(die_after=4)
    elif point == "after_tombstone":
        _crash_after(monkeypatch, L, "write_tombstones")
    elif point == "after_ledger":
        _crash_after(monkeypatch, L, "write_ledger")
    elif point == "during_deletes":
        _crash_before(monkeypatch, L, "remove_outputs")
    with pytest.raises(Crash):
        _night(monkeypatch, src, out, styles, "dead", renderer)
    monkeypatch.undo()
    assert L.read_history(out).column("status").to_pylist() == ["ok", "failed"]

    # Before the next night: an input the dead night rendered is deleted (its outputs would be
    # orphans), another changes, an untouched one goes.
    remove_many([f"{src}/img10.png", f"{src}/img3.png"])
    write_bytes_atomic(f"{src}/img4.png", b"image 4, recropped")
    n3 = _night(monkeypatch, src, out, styles, "n3")
    ledger = check_settled(out, versions(src))
    names = sorted({u.rsplit("/", 1)[-1] for u in ledger.column("input_uri").to_pylist()})
    assert names == ["img11.png", "img2.png", "img4.png", "img5.png", "img6.png", "img7.png", "img8.png", "img9.png"]
    assert ledger.num_rows == 16 and n3["errors"] == 2  # broken.png, both styles, every night
    if point == "after_some_outputs":
        assert n3["recovered"] >= 1  # outputs with a provenance record matching tonight's plan were adopted


def test_two_dead_nights_in_a_row_then_recovery(root, monkeypatch):
    src, out, styles = _catalog(root, n=6)
    with pytest.raises(Crash):
        _night(monkeypatch, src, out, styles, "dead1", FakeRenderer(die_after=5))
    write_bytes_atomic(f"{src}/img0.png", b"image 0 v2")  # rendered by dead1, now stale
    with pytest.raises(Crash):
        _night(monkeypatch, src, out, styles, "dead2", FakeRenderer(die_after=3))
    remove_many([f"{src}/img1.png"])
    renderer = FakeRenderer()
    n = _night(monkeypatch, src, out, styles, "n3", renderer)
    check_settled(out, versions(src))
    assert n["recovered"] + n["processed"] == 10 and n["recovered"] >= 2
    assert ("img0.png", "a") in renderer.rendered or n["recovered"]


def test_claimed_output_overwritten_by_a_dead_night_is_rerendered(tmp_path, monkeypatch):
    """A --full night dies after overwriting outputs the ledger claims; its provenance records were
    removed first, so the next (normal) night cannot vouch for them and renders them again."""
    src, out, styles = _catalog(str(tmp_path), n=4)
    _night(monkeypatch, src, out, styles, "n1")
    with pytest.raises(Crash):
        _night(monkeypatch, src, out, styles, "dead", FakeRenderer(die_after=2), "--full")
    renderer = FakeRenderer()
    n = _night(monkeypatch, src, out, styles, "n3", renderer)
    check_settled(out, versions(src))
    counts = n["plan"]
    assert sum(c["recheck"] for c in counts.values()) + n["recovered"] >= 2


def test_dropped_style_keeps_its_outputs_even_after_a_crash(root, monkeypatch):
    src, out, styles = _catalog(root, n=4)
    _night(monkeypatch, src, out, styles, "n1")
    write_bytes_atomic(f"{src}/img5.png", b"image 5")
    with pytest.raises(Crash):
        _night(monkeypatch, src, out, styles, "dead", FakeRenderer(die_after=1))
    n = _night(monkeypatch, src, out, {"a": styles["a"]}, "n3")
    ledger = check_settled(out, versions(src))
    b_rows = [r for r in ledger.to_pylist() if r["style"] == "b"]
    assert len(b_rows) == 4 and n["plan"]["b"]["unchanged"] == 4  # kept, not re-rendered, not deleted
    assert f"{out}/b/img0.jpg" in style_outputs(out)


KILLED_NIGHT = """
import sys, time
sys.path.insert(0, {tests!r})
from catalog_fakes import FakeRenderer, settings_for
from jobs.catalog import night as catalog

class Hangs(FakeRenderer):
    def __call__(self, settings, todo, on_rows):
        self.die_after = 3
        try:
            super().__call__(settings, todo, on_rows)
        except Exception:
            open({marker!r}, "w").close()  # 3 outputs written, 2 reported: now wait for SIGKILL
            time.sleep(600)

catalog._render = Hangs()
settings, copts = settings_for({src!r}, {out!r}, {styles!r}, "killed", "--lease-ttl-s", "3")
catalog.run_night(settings, copts)
"""


def test_night_killed_with_sigkill_leaves_a_lease_that_expires(tmp_path, monkeypatch):
    """A real kill: no finally, no history row, the lease left behind until its expiry."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src, out, styles = _catalog(str(tmp_path), n=6)
    marker = str(tmp_path / "hanging")
    script = KILLED_NIGHT.format(tests=os.path.dirname(__file__), marker=marker, src=src, out=out, styles=styles)
    proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ | {"PYTHONPATH": os.getcwd()})
    try:
        for _ in range(600):
            if os.path.exists(marker) or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert os.path.exists(marker), "the night never reached its hang"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    with pytest.raises(catalog.LeaseError, match="night killed on .* until"):
        _night(monkeypatch, src, out, styles, "too-soon")
    time.sleep(3.2)  # the dead night's lease expires; nobody renews it
    n = _night(monkeypatch, src, out, styles, "next")
    check_settled(out, versions(src))
    assert n["recovered"] == 2 and n["processed"] == 10  # the unreported third output is rendered again
    assert L.read_history(out).column("run_id").to_pylist() == ["next"]
