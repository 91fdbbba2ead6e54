"""The nights' report beside history.parquet: a PNG of the counts and a self-contained HTML page."""

from __future__ import annotations

import base64
import io
import re

from PIL import Image

from jobs.catalog import report as catalog_report
from jobs.catalog import ledger as L


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), color).save(buf, "PNG")
    return buf.getvalue()


def test_report_shows_every_night_and_the_latest_contact_sheet(tmp_path):
    out = str(tmp_path / "out")
    sheets = [str(tmp_path / "old.png"), str(tmp_path / "new.png")]
    open(sheets[0], "wb").write(_png((255, 0, 0)))
    open(sheets[1], "wb").write(_png((0, 255, 0)))
    for n, (status, sheet) in enumerate([("ok", sheets[0]), ("failed", None), ("ok", sheets[1]), ("ok", None)]):
        table = L.append_history(out, {"run_id": f"night{n}", "status": status, "processed": 10 * n, "skipped": 5,
                                       "deleted": n, "errors": 1, "quarantined": n // 2, "images_per_s": 2.5,
                                       "contact_sheet": sheet})
    page = catalog_report.write_report(out, table)
    png = Image.open(L.catalog_uri(out, "report.png"))
    assert png.format == "PNG" and png.size[0] > 500
    text = open(page).read()
    assert all(f"night{n}" in text for n in range(4)) and "failed" in text
    embedded = [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]
    assert len(embedded) == 2 and embedded[1] == _png((0, 255, 0))  # the newest night that made a sheet
