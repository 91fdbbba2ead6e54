"""Run many short command lines of the programs as whole processes without paying each one's imports.

``python tests/jobs/fork_cells.py CELLS.json`` imports the programs' modules once, then forks one
child per cell. A child is the program's process from ``python -m MODULE ARGS...`` on: its stdout and
stderr are files (file descriptors 1 and 2, so C-level writes land there too), ``sys.argv`` is the
cell's, the module runs as ``__main__`` (:func:`runpy.run_module`), and it ends as the interpreter
would: ``SystemExit``'s code (a string is printed, status 1), an uncaught exception's traceback on
stderr and status 1, exit handlers run. What a fork cannot show is a failure while importing the
program, which one real ``python -m`` per command in the tests covers.

CELLS.json: ``{"preload": [module, ...], "parallel": N, "cells": {id: [module, arg, ...]}}``.
Prints ``{id: {"returncode": int, "stdout": str, "stderr": str, "seconds": float}}`` as JSON on stdout.

A test hook (the exit-status matrix has 40-odd cells of ~2.5 s each, nearly all of it imports);
nothing in the product uses it.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import traceback


def _child(argv: list[str], out_path: str, err_path: str) -> None:
    """Become the program: never returns."""
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, out_path), (2, err_path)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        sys.argv = list(argv)
        try:
            runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - nothing more to save
                pass
        os._exit(code)


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def run_cells(cells: dict[str, list[str]], preload: list[str], *, cwd: str, env: dict[str, str] | None = None,
              parallel: int = 2, timeout: float = 600) -> dict[str, subprocess.CompletedProcess]:
    """Each cell's ``[module, arg, ...]`` run as ``python -m`` would, forked from one process that
    imported ``preload`` first: ``{id: CompletedProcess}`` (the runner failing raises AssertionError)."""
    with tempfile.TemporaryDirectory(prefix="cells") as tmp:
        spec = os.path.join(tmp, "cells.json")
        with open(spec, "w", encoding="utf-8") as f:
            json.dump({"preload": preload, "parallel": parallel, "cells": cells}, f)
        runner = subprocess.run([sys.executable, __file__, spec], cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=timeout)
    assert runner.returncode == 0, runner.stderr[-3000:]
    results = json.loads(runner.stdout)
    assert sorted(results) == sorted(cells)
    return {k: subprocess.CompletedProcess(cells[k], r["returncode"], r["stdout"], r["stderr"])
            for k, r in results.items()}


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    for module in spec["preload"]:
        importlib.import_module(module)
    cells: dict[str, list[str]] = spec["cells"]
    parallel = max(1, int(spec.get("parallel", 2)))
    results: dict[str, dict] = {}
    running: dict[int, tuple[str, str, str]] = {}
    pending = list(cells)
    # Not a TemporaryDirectory: its finalizer is an exit handler, which each child runs.
    tmp = tempfile.mkdtemp(prefix="cells")
    try:
        while pending or running:
            while pending and len(running) < parallel:
                cell = pending.pop(0)
                stem = os.path.join(tmp, str(len(cells) - len(pending)))
                out_path, err_path = f"{stem}.out", f"{stem}.err"
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(cells[cell], out_path, err_path)
                running[pid] = (cell, out_path, err_path, time.monotonic())
            pid, status = os.wait()
            cell, out_path, err_path, started = running.pop(pid)
            results[cell] = {"returncode": os.waitstatus_to_exitcode(status), "stdout": _read(out_path),
                             "stderr": _read(err_path), "seconds": round(time.monotonic() - started, 3)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
