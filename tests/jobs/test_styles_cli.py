"""python -m jobs.styles: list a checkpoint's styles, or one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from fork_cells import run_cells  # tests/jobs/fork_cells.py
from jobs import styles
from stylize_core.checkpoint import save_style_model
from stylize_core.transformer_net import NetConfig, TransformerNet

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_lists_multi_and_single_style_checkpoints(tmp_path, capsys) -> None:
    images = [np.zeros((8, 8, 3), np.uint8)] * 3
    save_style_model(TransformerNet(NetConfig(width=0.25, blocks=1, num_styles=3)), str(tmp_path / "m.pth"),
                     style_images=images, styles=["wave", "mosaic", "ink"])
    assert styles.main([str(tmp_path / "m.pth")]) == 0
    assert capsys.readouterr().out.splitlines() == ["0\twave", "1\tmosaic", "2\tink"]
    save_style_model(TransformerNet(NetConfig(width=0.25, blocks=1)), str(tmp_path / "s.pth"), style="candy")
    assert styles.main([str(tmp_path / "s.pth")]) == 0
    assert capsys.readouterr().out.splitlines() == ["0\tcandy"]


def test_s3_checkpoint(s3_client, s3_bucket: str, tmp_path, capsys) -> None:
    path = tmp_path / "m.pth"
    save_style_model(TransformerNet(NetConfig(width=0.25, blocks=1, num_styles=2)), str(path), styles=["a", "b"])
    s3_client.put_object(Bucket=s3_bucket, Key="models/m.pth", Body=path.read_bytes())
    assert styles.main([f"s3://{s3_bucket}/models/m.pth"]) == 0
    assert capsys.readouterr().out.splitlines() == ["0\ta", "1\tb"]
    assert styles.main([f"s3://{s3_bucket}/models/nope.pth"]) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: cannot use checkpoint s3://{s3_bucket}/models/nope.pth: "
                                                      "not found; ")


def test_bad_file_exits_2_with_one_line(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("not a model\n")
    cases = {"is not a PyTorch checkpoint": tmp_path / "notes.txt", "is a directory": tmp_path,
             "not found": tmp_path / "missing.pth"}
    # One as a process of its own, the others forked from one that imported the command once.
    procs = {"not found": subprocess.run([sys.executable, "-m", "jobs.styles", str(tmp_path / "missing.pth")],
                                         cwd=ROOT, capture_output=True, text=True, timeout=120)}
    procs |= run_cells({reason: ["jobs.styles", str(target)] for reason, target in cases.items() if reason not in procs},
                       ["stylize_core.checkpoint", "jobs.common.storage"], cwd=str(ROOT), timeout=120)
    for reason, proc in procs.items():
        assert proc.returncode == 2 and proc.stdout == "", (reason, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and reason in proc.stderr
