"""Exit status 2, and one line saying which file and why, for every file a run cannot use, in every
command (docs/reference/exit-status.md is this table in prose).

Rows are causes, columns commands; each cell runs the command as a process of its own and checks:
exit status 2, stderr one line (no traceback) in the form
``style 'NAME': cannot use checkpoint URI: reason; what to do``, naming the style, and no secret.

What is simulated, and how:
- "denied (HTTP 403)": a local ``http.server`` on 127.0.0.1 answering every request with 403 and
  S3's AccessDenied XML body. As an ``http://`` URI it is a web server refusing the file; as the
  S3 endpoint (AWS_ENDPOINT_URL) it is S3 refusing GetObject/ListObjects, as botocore sees it.
  (Local permission bits cannot be tested here: the tests run as root, who reads mode-000 files.)
- The signed-URL query (``X-Amz-Signature=...``) and the session's secret key must never be printed.

Cells that fail on the driver start no Ray (the matrix stays cheap) and print exactly one line; the
wrong network is only found where torch loads it (the batch, catalog and video jobs' actors), so it is
one cell per command, run one at a time, and there the error is the last line (Ray's own log lines
and the job's progress may come first). Those join the session's Ray with ``--address`` (a cluster,
as users submit to; a run starting its own Ray is tests/jobs/test_console.py's) and run, with one
cell of each other command, as ``python -m ...``; the rest are forked from one process that imported
the programs once (``fork_cells.py``: each cell is still the whole program, ``__main__`` to exit).
"""

from __future__ import annotations

import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fork_cells import run_cells  # tests/jobs/fork_cells.py
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SIGNATURE = "sekritSIGNATURE42"  # in a signed URL's query: must never be printed
DENIED_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied'
               b"</Message><RequestId>1</RequestId></Error>")
TIMEOUT_S = 600


class _Denied(http.server.BaseHTTPRequestHandler):
    """Refuses everything: 403 with S3's AccessDenied body (HEAD: no body)."""

    def _deny(self, body: bool) -> None:
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(DENIED_BODY)))
        self.end_headers()
        if body:
            self.wfile.write(DENIED_BODY)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._deny(True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._deny(False)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def denied_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Denied)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(path)


def _zip_checkpoint(entries: dict[str, bytes]) -> bytes:
    """A torch-style zip archive (stored entries) without torch: enough to be cut short."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(f"archive/{name}", data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory, denied_server) -> dict:
    """Every unusable file, by cause; inputs for each command."""
    import torch

    d = tmp_path_factory.mktemp("exit")
    _png(d / "in" / "a.png")
    _png(d / "in" / "b.png")
    _png(d / "seq" / "clip" / "frame_0001.png")
    _png(d / "seq" / "clip" / "frame_0002.png")
    (d / "empty_in").mkdir()
    (d / "ckdir").mkdir()
    (d / "empty.pth").write_bytes(b"")
    (d / "page.pth").write_text("<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>\n")
    whole = _zip_checkpoint({"data.pkl": b"\x80\x02}q\x00.", "data/0": bytes(4096), "version": b"3\n"})
    (d / "cut.pth").write_bytes(whole[: len(whole) // 2])
    buf = io.BytesIO()
    torch.save({"conv.weight": torch.zeros(2, 2)}, buf)  # a real checkpoint of another network
    (d / "other_net.pth").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    torch.save({"0.weight": torch.zeros(2, 3, 3, 3), "0.bias": torch.zeros(2)}, buf)  # no VGG's shapes
    (d / "small_vgg.pth").write_bytes(buf.getvalue())
    (d / "notes.png").write_text("<html>not an image</html>")
    return {"dir": d, "denied": denied_server}


CHECKPOINT_CAUSES = {  # cause -> (URI under the test dir or the 403 server, what the line must say)
    "missing": ("{d}/nope.pth", "not found"),
    "directory": ("{d}/ckdir", "it is a directory"),
    "empty": ("{d}/empty.pth", "it is empty"),
    "truncated": ("{d}/cut.pth", "it is truncated"),
    "html page": ("{d}/page.pth", "it is not a PyTorch checkpoint: it is an HTML/XML page"),
    "http 403": ("{http}/models/m.pth?X-Amz-Signature=" + SIGNATURE, "access denied (HTTP 403)"),
    "s3 AccessDenied": ("s3://locked-bucket/models/m.pth", "access denied"),
}


def _command(cmd: str, d: str, ckpt: str, *, input_uri: str | None = None) -> list[str]:
    """``cmd`` run on ``ckpt`` as style 'm', with inputs that exist unless ``input_uri`` says otherwise."""
    out = f"{d}/out-{cmd}-{abs(hash((ckpt, input_uri)))}"
    if cmd == "stylize":
        return ["jobs.stylize", "--input", input_uri or f"{d}/in", "--output", out, "--style", f"m={ckpt}", "--quiet"]
    if cmd == "stylize_image":
        return ["jobs.stylize_image", f"{d}/in/a.png", "-o", f"{out}.png", "--checkpoint", ckpt, "--device", "cpu"]
    if cmd == "catalog":
        return ["jobs.catalog", "--source", input_uri or f"{d}/in", "--output", out, "--style", f"m={ckpt}", "--quiet"]
    if cmd == "stylize_video":  # no videos under empty_in: the driver's checks come first
        source = ["--sequence", input_uri] if input_uri == f"{d}/seq" else ["--input", input_uri or f"{d}/empty_in"]
        return ["jobs.stylize_video", *source, "--output", out, "--style", f"m={ckpt}", "--quiet"]
    raise AssertionError(cmd)


def _train(d: str, style_image: str, *, vgg: str = "random:0", content: str | None = None) -> list[str]:
    return ["jobs.train", "--content", content or f"{d}/in", "--style-image", style_image, "--style-name", "m",
            "--output", f"{d}/train-out-{abs(hash((style_image, vgg, content)))}", "--vgg-weights", vgg,
            "--workers", "1", "--batch-size", "1", "--steps", "1"]


def _cases(d: str, http: str) -> dict[str, tuple[list[str], str, str | None, bool]]:
    """id -> (command, what the line must say, style it must name, whether Ray may have started)."""
    cases: dict[str, tuple[list[str], str, str | None, bool]] = {}
    for cmd in ("stylize", "stylize_image", "catalog", "stylize_video"):
        for cause, (uri, says) in CHECKPOINT_CAUSES.items():
            uri = uri.format(d=d, http=http)
            # The local CLI names the style after the checkpoint's file (it takes no style name).
            style = Path(uri.split("?")[0]).stem if cmd == "stylize_image" else "m"
            cases[f"{cmd}/checkpoint {cause}"] = (_command(cmd, d, uri), says, style, False)
        # Only loading finds the wrong network: in actors (batch, catalog, video) or the local CLI.
        cases[f"{cmd}/checkpoint wrong network"] = (
            _command(cmd, d, f"{d}/other_net.pth", input_uri=f"{d}/seq" if cmd == "stylize_video" else None)
            + (["--max-error-rate", "1"] if cmd == "stylize" else []),
            "it does not match TransformerNet", "other_net" if cmd == "stylize_image" else "m", cmd != "stylize_image")
    for cmd in ("stylize", "catalog", "stylize_video"):  # a checkpoint only torch would refuse: the input fails first
        cases[f"{cmd}/input s3 AccessDenied"] = (
            _command(cmd, d, f"{d}/other_net.pth", input_uri="s3://locked-bucket/photos/"),
            "cannot use input s3://locked-bucket/photos/: access denied", None, False)
        cases[f"{cmd}/input missing"] = (_command(cmd, d, f"{d}/other_net.pth", input_uri=f"{d}/no_such_dir"),
                                         f"cannot use input {d}/no_such_dir: not found", None, False)
    cases["train/style image missing"] = (_train(d, f"{d}/nope.png"), "not found", "m", False)
    cases["train/style image directory"] = (_train(d, f"{d}/ckdir"), "it is a directory", "m", False)
    cases["train/style image corrupt"] = (_train(d, f"{d}/notes.png"), "it is not a usable image", "m", False)
    cases["train/style image s3 AccessDenied"] = (_train(d, "s3://locked-bucket/style.png"), "access denied", "m",
                                                  False)
    cases["train/vgg weights missing"] = (_train(d, f"{d}/in/a.png", vgg=f"{d}/nope_vgg.pth"),
                                          "cannot use VGG weights", None, False)
    cases["train/vgg weights wrong shape"] = (_train(d, f"{d}/in/a.png", vgg=f"{d}/small_vgg.pth"),
                                              "it is not a vgg16 state dict", None, False)
    cases["train/input missing"] = (_train(d, f"{d}/in/a.png", content=f"{d}/no_such_dir"),
                                    f"cannot use input {d}/no_such_dir: not found", None, False)
    cases["train/input s3 AccessDenied"] = (_train(d, f"{d}/in/a.png", content="s3://locked-bucket/photos/"),
                                            "cannot use input s3://locked-bucket/photos/: access denied", None, False)
    return cases


# One real ``python -m`` per command (the rest are forks of one process that imported the programs
# once; see fork_cells.py): what a fork cannot show is the program failing while it is imported.
WHOLE_PROCESS = ("stylize_image/checkpoint missing", "train/style image missing")
# Not the __main__ modules the cells run; with what the programs import lazily (train: VGG, Ray Train).
PRELOAD = ["torch", "jobs.batch.driver", "jobs.image.cli", "jobs.catalog.night", "jobs.video.driver",
           "jobs.train.program", "ray.train.torch", "stylize_core.builder"]


@pytest.fixture(scope="module")
def results(files, ray_local) -> dict[str, tuple[subprocess.CompletedProcess, str, str | None, bool]]:
    """Every cell: the ones that reach Ray (joining the session's with --address) and WHOLE_PROCESS as
    real processes; the others forked from one process."""
    d, http = str(files["dir"]), files["denied"]
    env = dict(os.environ, AWS_ENDPOINT_URL=http, STYLIZE_ALLOW_DOWNLOAD="0")

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)

    cases = _cases(d, http)
    forked = [k for k in cases if not cases[k][3] and k not in WHOLE_PROCESS]
    procs = run_cells({k: cases[k][0] for k in forked}, PRELOAD, cwd=str(ROOT), env=env, timeout=TIMEOUT_S)
    import ray

    address = ray.get_runtime_context().gcs_address
    for k in cases:
        if k not in procs:  # the cells that reach Ray join the session's (as on a cluster), one at a time
            procs[k] = run([*cases[k][0], "--address", address] if cases[k][3] else cases[k][0])
    return {k: (procs[k], *cases[k][1:]) for k in cases}


def _ids() -> list[str]:
    return list(_cases("D", "http://H"))


@pytest.mark.parametrize("case", _ids())
def test_unusable_file_exits_2_with_one_line(results, case: str) -> None:
    proc, says, style, ray_started = results[case]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, f"{case}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr and lines, proc.stderr[-3000:]
    line = lines[-1]
    if not ray_started:  # with Ray started, its own log lines and the job's progress may come first
        assert len(lines) == 1, proc.stderr[-3000:]
    assert says in line and "cannot use " in line and "; " in line.split(": ", 2)[-1], line
    if style is not None:
        assert f"style {style!r}: cannot use " in line, line
    assert SIGNATURE not in proc.stderr and os.environ["AWS_SECRET_ACCESS_KEY"] not in proc.stderr


def test_local_permission_denied_reads_as_access_denied(tmp_path, monkeypatch) -> None:
    """What a non-root user gets for a mode-000 checkpoint or directory (simulated: root reads those):
    the PermissionError the OS raises, here raised by a patched ``open`` / ``os.scandir``."""
    from stylize_core.builder import SetupError, load_checkpoints

    from jobs.common.checkpoints import input_unusable
    from jobs.common.listing import list_images

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(args[0]))

    (tmp_path / "in").mkdir()
    with monkeypatch.context() as m:
        m.setattr("builtins.open", denied)
        with pytest.raises(SetupError, match=r"^style 'm': cannot use checkpoint .*m\.pth: access denied; grant"):
            load_checkpoints({"m": str(tmp_path / "m.pth")}, None)
    with monkeypatch.context() as m:
        m.setattr("os.scandir", denied)
        with pytest.raises(PermissionError) as info:
            list_images(str(tmp_path / "in"))
    assert str(input_unusable(str(tmp_path / "in"), info.value)).startswith(
        f"cannot use input {tmp_path / 'in'}: access denied; grant")
