"""A picture of the nights beside ``history.parquet``: ``report.png`` and ``report.html``.

The PNG (matplotlib, headless Agg backend) plots per night: processed, skipped, deleted, errors,
quarantined and images/s, so a drifting catalog or a failing style shows at a glance. The HTML page
shows it with the last nights as a table and the latest night's contact sheet (embedded, so the
page is one self-contained file wherever the output prefix is served or copied).
"""

from __future__ import annotations

import base64
import html
import io

import pyarrow as pa

from jobs.catalog import ledger as L
from jobs.common.storage import StorageOptions, read_bytes, write_bytes_atomic

PANELS = ("processed", "skipped", "deleted", "errors", "quarantined", "images_per_s")
TABLE_ROWS = 14


def report_png(history: pa.Table) -> bytes:
    """Six small panels, one point per night (failed nights marked in red)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global figure state in a long-lived driver

    h = history.to_pydict()
    x = list(range(len(h["run_id"])))
    failed = [i for i, s in enumerate(h["status"]) if s != "ok"]
    fig = Figure(figsize=(11, 6.5), dpi=90)
    for n, name in enumerate(PANELS):
        ax = fig.add_subplot(2, 3, n + 1)
        ys = [v if v is not None else float("nan") for v in h[name]]
        ax.plot(x, ys, marker="o", markersize=3, linewidth=1)
        if failed:
            ax.scatter(failed, [0] * len(failed), color="red", marker="x", label="failed night")
        ax.set_title(name.replace("_", " "))
        ax.grid(alpha=0.3)
        labels = h["run_id"]
        step = max(1, len(x) // 6)
        ax.set_xticks(x[::step], [str(s)[:15] for s in labels[::step]], rotation=30, fontsize=7, ha="right")
    fig.suptitle(f"nightly catalog: {len(x)} night(s)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def report_html(history: pa.Table, png: bytes, contact_sheet: bytes | None) -> str:
    rows = history.to_pylist()[-TABLE_ROWS:][::-1]
    cols = ("run_id", "status", "inputs", "processed", "skipped", "deleted", "errors", "quarantined",
            "recovered", "error_rate", "images_per_s", "wall_s")

    def cell(v: object) -> str:
        return html.escape(f"{v:.4g}" if isinstance(v, float) else "" if v is None else str(v))

    table = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    sheet = (f'<h2>Latest contact sheet</h2><img alt="contact sheet" src="data:image/png;base64,'
             f'{base64.b64encode(contact_sheet).decode()}">' if contact_sheet else "")
    return (
        "<!doctype html><meta charset=utf-8><title>nightly catalog</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}"
        "tr:nth-child(even){background:#f4f4f4}</style><h1>Nightly catalog</h1>"
        f'<img alt="nights" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        "<h2>Last nights</h2><table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + f"</tr>{table}</table>{sheet}"
    )


def write_report(output: str, history: pa.Table, options: StorageOptions | None = None) -> str:
    """Write ``report.png`` and ``report.html`` beside the history; returns the HTML's URI."""
    png = report_png(history)
    sheet = None
    for uri in reversed(history.column("contact_sheet").to_pylist()):
        if uri:
            try:
                sheet = read_bytes(uri, options)
            except FileNotFoundError:
                continue
            break
    write_bytes_atomic(L.catalog_uri(output, "report.png"), png, options)
    page = L.catalog_uri(output, "report.html")
    write_bytes_atomic(page, report_html(history, png, sheet).encode(), options)
    return page
