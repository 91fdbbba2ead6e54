"""Submit a command to a Ray cluster with this project as its working dir, follow its logs, and exit
with the job's outcome (0 when it SUCCEEDED, 1 when it FAILED or was STOPPED)::

    python -m jobs.submit --address http://HEAD:8265 [--working-dir .] \\
        [--runtime-env cluster/runtime_env.yaml] [--env KEY=VALUE] [--no-wait] \\
        -- python -m jobs.stylize --input s3://... --output s3://... --style mosaic=s3://...

The working dir is uploaded to the cluster (without .venv, .git, outputs and caches), so the job runs
the code you have checked out; the cluster's image supplies the dependencies. Ctrl-C stops following
and leaves the job running (like ``ray job submit``); stop it with ``ray job stop``.

Clusters with Ray's token authentication (the default for clusters started by Ray 2.60 where a
token exists) need the token in this process's environment, as for ``ray job submit``:
``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN=...`` (or ``RAY_AUTH_TOKEN_PATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import yaml

from jobs.common.redaction import redact_text  # stdlib only: submit stays light

# Never upload these: environments, VCS data, outputs and caches (gitignore syntax, as Ray reads it).
DEFAULT_EXCLUDES = [".venv/", ".git/", "out/", "bench_out/", "build/", "__pycache__/", "*.pyc",
                    ".pytest_cache/", "*.egg-info/"]
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


def _log(msg: str) -> None:
    print(f"[submit] {redact_text(msg)}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    """Flags before ``--``; everything after it is the job's entrypoint command."""
    p = argparse.ArgumentParser(
        prog="python -m jobs.submit",
        usage="python -m jobs.submit [options] -- COMMAND [ARGS...]",
        description="Submit COMMAND as a Ray job with this project as its working dir, follow its logs, "
        "exit 0 when it succeeds and 1 when it fails or is stopped.",
    )
    p.add_argument("--address", default=None,
                   help="the cluster's dashboard/job server URL, e.g. http://HEAD:8265 "
                   "(default: RAY_API_SERVER_ADDRESS or RAY_ADDRESS, else http://127.0.0.1:8265)")
    p.add_argument("--working-dir", default=".", help="directory uploaded as the job's working dir (default: .)")
    p.add_argument("--no-working-dir", action="store_true", help="upload nothing: the image already has the code")
    p.add_argument("--runtime-env", metavar="YAML", help="runtime env file (e.g. cluster/runtime_env.yaml)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra env var for the job")
    p.add_argument("--submission-id", help="job id (default: Ray picks one); resubmitting an id is refused")
    p.add_argument("--entrypoint-num-cpus", type=float, default=None, help="CPUs reserved for the driver")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return without following")
    p.add_argument("--timeout", type=float, default=None, help="give up following after this many seconds (exit 1)")
    return p


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``[own flags..., "--", command...]`` -> (own flags, command)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def build_runtime_env(args: argparse.Namespace) -> dict[str, Any]:
    """The runtime env file (if any) plus the working dir, default excludes and ``--env`` values."""
    env: dict[str, Any] = {}
    if args.runtime_env:
        with open(args.runtime_env, encoding="utf-8") as f:
            env = yaml.safe_load(f) or {}
        if not isinstance(env, dict):
            raise SystemExit(f"{args.runtime_env} must hold a mapping (a Ray runtime env)")
    if not args.no_working_dir:
        if not os.path.isdir(args.working_dir):
            raise SystemExit(f"--working-dir {args.working_dir} is not a directory")
        env["working_dir"] = os.path.abspath(args.working_dir)
        env["excludes"] = list(dict.fromkeys([*(env.get("excludes") or []), *DEFAULT_EXCLUDES]))
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env expects KEY=VALUE, got {item!r}")
        env.setdefault("env_vars", {})[key] = value
    return env


def _client(address: str | None) -> Any:
    from ray.job_submission import JobSubmissionClient  # the Jobs REST client; no ray.init needed

    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS") or "http://127.0.0.1:8265"
    return JobSubmissionClient(address)


async def _tail(client: Any, job_id: str, out: TextIO) -> None:
    async for chunk in client.tail_job_logs(job_id):
        out.write(redact_text(chunk))  # the job redacts its own lines; Ray's lines about it are not
        out.flush()


def _poll_logs(client: Any, job_id: str, out: TextIO, deadline: float | None, poll_s: float) -> None:
    """Fallback when the log stream is unavailable (e.g. a proxy without websockets)."""
    shown = 0
    while True:
        logs = client.get_job_logs(job_id)
        out.write(redact_text(logs[shown:]))
        out.flush()
        shown = len(logs)
        if str(client.get_job_status(job_id)) in TERMINAL or (deadline and time.time() > deadline):
            return
        time.sleep(poll_s)


def follow(client: Any, job_id: str, out: TextIO = sys.stdout, timeout: float | None = None,
           poll_s: float = 1.0) -> str:
    """Stream the job's logs to ``out`` until it ends; returns its final status name."""
    deadline = time.time() + timeout if timeout else None
    try:
        asyncio.run(asyncio.wait_for(_tail(client, job_id, out), timeout))
    except asyncio.TimeoutError:
        pass
    except Exception as exc:
        _log(f"log stream unavailable ({type(exc).__name__}: {exc}); polling instead")
        _poll_logs(client, job_id, out, deadline, poll_s)
    # The stream can end a moment before the status turns terminal.
    while (status := str(client.get_job_status(job_id))) not in TERMINAL:
        if deadline and time.time() > deadline:
            break
        time.sleep(poll_s)
    return status


def main(args: argparse.Namespace, command: Sequence[str]) -> int:
    if not command:
        raise SystemExit("nothing to run: give the job's command after --, e.g. -- python -m jobs.stylize ...")
    entrypoint = command[0] if len(command) == 1 else shlex.join(command)
    client = _client(args.address)
    extra = {"entrypoint_num_cpus": args.entrypoint_num_cpus} if args.entrypoint_num_cpus is not None else {}
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=build_runtime_env(args),
                               submission_id=args.submission_id, **extra)
    _log(f"submitted {job_id}: {entrypoint}")
    if args.no_wait:
        print(job_id)
        return 0
    try:
        status = follow(client, job_id, timeout=args.timeout)
    except KeyboardInterrupt:
        _log(f"stopped following; {job_id} keeps running (stop it: ray job stop --address {client.get_address()} {job_id})")
        return 130
    _log(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def cli(argv: Sequence[str] | None = None) -> int:
    own, command = split_argv(sys.argv[1:] if argv is None else argv)
    return main(build_parser().parse_args(own), command)


if __name__ == "__main__":
    sys.exit(cli())
