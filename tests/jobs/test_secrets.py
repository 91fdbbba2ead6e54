"""Credentials in the URIs users pass (basic-auth userinfo, a presigned query) reach no file the jobs
write and no line they print: every program run as users run it, on inputs, checkpoints and style
images served by an HTTP server on 127.0.0.1 that insists on both."""

from __future__ import annotations

import base64
import csv
import functools
import http.server
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from jobs.common.run_settings import demo_checkpoint
from jobs.common.storage import InputFile
from stylize_core.image_io import encode_image

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "alice", "pw-Sekr3t-userinfo"
SIG, CRED, TOKEN = "sigSekr3tBEEF", "AKIASEKR3TCRED", "tokSekr3tSESSION"
SECRETS = (PASSWORD, SIG, CRED, TOKEN)
FORBIDDEN = "forbidden.pth"  # answers 403 whatever the credentials


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test's own output must stay clean
        pass

    def _allowed(self) -> bool:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        query = parse_qs(urlsplit(self.path).query)
        # any signature starting with SIG: a URL presigned anew the next night is still good
        ok = self.headers.get("Authorization") == expected and query.get("X-Amz-Signature", [""])[0].startswith(SIG)
        if not ok or FORBIDDEN in self.path:
            self.send_error(403)
            return False
        return True

    def do_GET(self) -> None:
        if self._allowed():
            super().do_GET()

    def do_HEAD(self) -> None:
        if self._allowed():
            super().do_HEAD()


def signed(base: str, name: str, sig: str = SIG) -> str:
    """A presigned-style URL with userinfo, as users paste them."""
    host = base.removeprefix("http://")
    return (f"http://{USER}:{PASSWORD}@{host}/{name}?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            f"&X-Amz-Credential={CRED}%2F20261206%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261206T000000Z"
            f"&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Security-Token={TOKEN}&X-Amz-Signature={sig}")


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """(http://127.0.0.1:PORT, the served directory): the demo checkpoint, a style image, two
    images and a short clip."""
    from stylize_core.video import make_clip, pan_frames
    from stylize_core.video.synthetic import sample_photo

    root = tmp_path_factory.mktemp("served")
    rng = np.random.default_rng(16)
    (root / "ckpt.pth").write_bytes(Path(demo_checkpoint()).read_bytes())
    (root / "style.png").write_bytes(encode_image(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "png"))
    for name in ("a.png", "b.png"):
        (root / name).write_bytes(encode_image(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8), "png"))
    make_clip(str(root / "clip.mp4"), pan_frames(sample_photo("astronaut"), 8, (64, 48), seed=4), audio_hz=None, gop=4)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def _manifest(path: Path, uris: list[str]) -> str:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["uri"], *([u] for u in uris)])
    return str(path)


def _run(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}  # every worker line reaches the captured output
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def _texts(path: Path) -> Iterator[str]:
    """What a reader of the file sees: its bytes, and decoded Parquet tables and PNG text chunks."""
    data = path.read_bytes()
    yield data.decode("latin-1")
    if path.suffix == ".parquet":
        yield json.dumps(pq.read_table(io.BytesIO(data)).to_pylist(), default=str)
    if path.suffix == ".png":
        with Image.open(io.BytesIO(data)) as img:
            yield json.dumps({k: str(v) for k, v in img.info.items()})


def _assert_clean(out: Path, *procs: subprocess.CompletedProcess) -> int:
    """No secret in any file under ``out`` (names included) nor in the processes' output; returns the files checked."""
    files = [p for p in out.rglob("*") if p.is_file()]
    for path in files:
        rel = str(path.relative_to(out))
        assert "?" not in rel and "X-Amz" not in rel and USER not in rel, rel
        for text in _texts(path):
            for secret in SECRETS:
                assert secret not in text, (secret, rel)
    for proc in procs:
        for secret in SECRETS:
            assert secret not in proc.stdout + proc.stderr, (secret, proc.args[:3])
    return len(files)


# The batch job is started as the README's demo starts it, bringing up its own local Ray; the catalog
# and the video job join the session's Ray with --address, as on a cluster (a Ray start and stop
# fewer apiece), their workers' log lines still relayed to the process's output.
SLOW = pytest.mark.slow


def _session_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address
FAST = ["--vgg-weights", "random:0", "--metrics-size", "32", "--metrics-sample", "1", "--max-side", "64"]


@pytest.fixture
def urls(served, tmp_path) -> dict[str, str]:
    base, _ = served
    return {"base": base, "ckpt": signed(base, "ckpt.pth"), "style": signed(base, "style.png"),
            "images": _manifest(tmp_path / "images.csv", [signed(base, "a.png"), signed(base, "b.png")])}


@pytest.mark.usefixtures("ray_local")  # joined as a cluster's driver would (a Ray of its own: 21.7 s, now 6.8)
def test_batch_job_writes_and_prints_no_secret(urls, tmp_path):
    out = tmp_path / "out"
    proc = _run("jobs.stylize", "--input", urls["images"], "--output", str(out), "--style", f"mosaic={urls['ckpt']}",
                "--style-image", f"mosaic={urls['style']}", "--run-id", "s1", "--format", "png", "--contact-sheet", "2",
                *FAST, "--address", _session_address())
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (out / "mosaic").iterdir()) == ["a.png", "b.png"]  # the URL path, not its query
    summary = json.loads((out / "_runs" / "s1.json").read_text())
    assert summary["counts"] == {"ok": 2} and summary["styles"]["mosaic"]["checkpoint"].endswith("X-Amz-Signature=***")
    rows = pq.read_table(out / "_metrics" / "run_id=s1").to_pylist()
    assert sorted(r["input_uri"] for r in rows) == sorted(  # a row still names its input
        f"{urls['base']}/{n}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***&X-Amz-Date=20261206T000000Z"
        "&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Security-Token=***&X-Amz-Signature=***"
        for n in ("a.png", "b.png"))
    assert _assert_clean(out, proc) >= 5


def test_local_cli_writes_and_prints_no_secret(urls, tmp_path):
    out = tmp_path / "out"
    proc = _run("jobs.stylize_image", signed(urls["base"], "a.png"), "--checkpoint", urls["ckpt"], "--style-image",
                urls["style"], "-o", str(out) + "/", "--json", "--metrics", "--vgg-weights", "random:0",
                "--metrics-size", "32")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["status"] == "ok" and row["input_uri"].endswith("X-Amz-Signature=***") and (out / "a.jpg").exists()
    _assert_clean(out, proc)


@SLOW
@pytest.mark.usefixtures("ray_local")  # the session's Ray, started with the S3 server's environment
def test_catalog_writes_and_prints_no_secret_and_names_inputs_by_their_redacted_uri(urls, tmp_path):
    """A night (a real process) writes and prints no secret; the next night lists the same objects,
    presigned anew: the ledger still knows them (no work), and it stores no secret."""
    from jobs.catalog import ledger as L
    from jobs.catalog import night

    out, cfg, manifest = tmp_path / "out", tmp_path / "nightly.yaml", tmp_path / "tonight.csv"
    cfg.write_text(yaml.safe_dump({"source": str(manifest), "output": str(out), "styles": {"mosaic": urls["ckpt"]},
                                   "style_images": {"mosaic": urls["style"]}, "vgg_weights": "random:0",
                                   "contact_sheet": 1, "metrics_size": 32, "max_side": 64}))
    _manifest(manifest, [signed(urls["base"], n, SIG) for n in ("a.png", "b.png")])
    proc = _run("jobs.catalog", "--config", str(cfg), "--run-id", "n1", "--address", _session_address())
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "_runs" / "n1.json").read_text())["processed"] == 2
    assert sorted(p.name for p in (out / "mosaic").iterdir()) == ["a.jpg", "b.jpg"]
    assert _assert_clean(out, proc) >= 8  # ledger, history, report, provenance, metrics, summary, outputs

    _manifest(manifest, [signed(urls["base"], n, SIG + "-presigned-anew") for n in ("a.png", "b.png")])
    again = night.run_night(night.parse_args(["--config", str(cfg), "--run-id", "n2", "--quiet"]))
    assert (again["processed"], again["skipped"], again["deleted"]) == (0, 2, 0)
    ledger = L.read_ledger(str(out)).to_pylist()
    assert sorted(e["input_uri"].split("?")[0] for e in ledger) == [f"{urls['base']}/a.png", f"{urls['base']}/b.png"]
    assert all(e["input_uri"].endswith("X-Amz-Signature=***") for e in ledger)
    _assert_clean(out)


def test_submit_redacts_its_lines_and_the_logs_it_relays(capsys):
    from jobs import submit

    url = signed("http://127.0.0.1:9", "a.png")

    class Client:  # the part of ray.job_submission.JobSubmissionClient that follow() uses
        async def tail_job_logs(self, job_id):
            yield f"[stylize] reading {url}\n"

        def get_job_status(self, job_id):
            return "SUCCEEDED"

    submit._log(f"submitted raysubmit_1: python -m jobs.stylize --input {url}")
    out = io.StringIO()
    assert submit.follow(Client(), "raysubmit_1", out=out) == "SUCCEEDED"
    shown = capsys.readouterr().err + out.getvalue()
    assert "127.0.0.1:9/a.png?X-Amz-Algorithm" in shown and "X-Amz-Signature=***" in shown
    assert not [secret for secret in SECRETS if secret in shown]


@SLOW
@pytest.mark.usefixtures("ray_local")
def test_video_job_writes_and_prints_no_secret(urls, tmp_path):
    out = tmp_path / "out"
    clips = _manifest(tmp_path / "clips.csv", [signed(urls["base"], "clip.mp4")])
    proc = _run("jobs.stylize_video", "--input", clips, "--output", str(out), "--style", f"mosaic={urls['ckpt']}",
                "--run-id", "v1", "--segment-seconds", "0.2", "--warmup-frames", "2", "--loss-every", "4",
                "--preset", "ultrafast", "--vgg-weights", "random:0", "--metrics-size", "32", "--max-side", "64",
                "--address", _session_address())
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "_runs_video" / "v1.json").read_text())["counts"]["ok"] == 1
    assert (out / "mosaic" / "clip.mp4").exists()
    assert _assert_clean(out, proc) >= 3


@pytest.mark.parametrize("program", ["jobs.stylize_image", pytest.param("jobs.stylize", marks=SLOW)])
def test_a_refused_checkpoint_is_reported_redacted(served, tmp_path, program, request):
    base, _ = served
    ckpt = signed(base, FORBIDDEN)
    if program == "jobs.stylize":
        request.getfixturevalue("ray_local")
        images = _manifest(tmp_path / "images.csv", [signed(base, "a.png")])
        proc = _run(program, "--input", images, "--output", str(tmp_path / "out"), "--style", f"m={ckpt}", *FAST,
                    "--address", _session_address())
    else:
        proc = _run(program, signed(base, "a.png"), "--checkpoint", ckpt, "-o", str(tmp_path / "out") + "/")
    assert proc.returncode == 2, proc.stderr
    assert "403" in proc.stderr  # the reason, and the URI redacted:
    assert f"{base}/{FORBIDDEN}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***" in proc.stderr
    _assert_clean(tmp_path / "out", proc)


def test_catalog_refuses_inputs_that_differ_only_in_a_secret(tmp_path, capsys):
    from jobs.catalog import night
    from jobs.catalog.plan import AmbiguousInputs, listed_sources

    one, other = "https://h/a.jpg?sig=one", "https://h/a.jpg?sig=two"
    assert listed_sources([InputFile(one, "a.jpg", None, None), InputFile("s3://b/x.jpg", "x.jpg", None, None)]) == {
        "https://h/a.jpg?sig=***": one}
    with pytest.raises(AmbiguousInputs, match=r"https://h/a.jpg\?sig=\*\*\*"):
        listed_sources([InputFile(one, "a.jpg", None, None), InputFile(other, "b/a.jpg", None, None)])
    cfg = tmp_path / "nightly.yaml"
    cfg.write_text(yaml.safe_dump({"source": _manifest(tmp_path / "m.csv", [one, other]), "output": str(tmp_path / "o"),
                                   "styles": {"m": demo_checkpoint()}}))
    assert night.cli(["--config", str(cfg), "--run-id", "n"]) == 2
    assert "differ only in a secret" in capsys.readouterr().err


def test_an_output_carrying_credentials_is_refused(tmp_path, capsys):
    from jobs.batch import driver

    assert driver.cli(["--input", str(tmp_path), "--output", f"s3://KEY:{PASSWORD}@bucket/out",
                       "--style", f"m={demo_checkpoint()}"]) == 2
    err = capsys.readouterr().err
    assert "s3://bucket/out: the URI carries credentials" in err and PASSWORD not in err
