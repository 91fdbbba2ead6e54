"""How a run ends: the one error-rate definition, the error that stops a run, and the exit status."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Mapping

from jobs.common.storage import redact_text, redact_uri


class JobError(RuntimeError):
    """The job cannot start or finish; the message says why and what to do (exit status 2)."""


def plain_output(output: str) -> str:
    """``output`` when it carries no credentials; else :class:`JobError`: every output URI is written
    into metrics rows, summaries and the catalog's ledger, which must name the real objects."""
    if redact_uri(output) != output:
        raise JobError(f"output {redact_uri(output)}: the URI carries credentials (user:password@ or a signed "
                       "query); give them through the AWS environment or --profile instead")
    return output


def error_rate(by_status: Mapping[str, int]) -> float:
    """The one error-rate definition of every job: ``error / (ok + error + skipped)``.

    The denominator holds every input x style pair the run accounted for, skipped ones included (a
    skipped pair is an output already rendered well by an earlier run: part of what the run stands
    for). Quarantined inputs of the nightly catalog are in neither part: they are reported apart.
    """
    rows = sum(by_status.get(s, 0) for s in ("ok", "error", "skipped"))
    return by_status.get("error", 0) / rows if rows else 0.0


def run_main(run: Callable[[], dict], describe: Callable[[dict], str], prog: str) -> int:
    """Run a job and print its outcome, redacted: 0 within the error budget, 1 over it (or a crash:
    its traceback), 2 when it could not run (one line on stderr)."""
    try:
        summary = run()
    except JobError as exc:
        print(f"[{prog}] error: {redact_text(str(exc))}", file=sys.stderr, flush=True)
        return 2
    except Exception:  # a crash: its traceback, redacted (exceptions quote the URIs they failed on)
        print(redact_text(traceback.format_exc()), file=sys.stderr, flush=True)
        return 1
    print(redact_text(describe(summary)))
    return 0 if summary["passed"] else 1
