"""The crash-loop guard's counts (the attempt ledger): how often each batch of a run was started and
not finished, kept in Ray's GCS key-value store, which every actor of the run can reach."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# The crash-loop guard's counts live in Ray's key-value store in the GCS (the head node's own server,
# lost only with the cluster), under a key prefix of their own per run. Before, they lived in a small
# actor of the run's: one more Ray worker process per run, which a lost node could take with it
# (tests/jobs/test_node_loss.py). Without it, six runs of a 6-image job one after another on one
# local Ray took 3.3-3.6 s each instead of 3.6-4.2 s (2026-12-07, 2-core AMD EPYC).
# ``ray.experimental.internal_kv`` is the store Ray's own libraries (Serve, Train, Data, the job
# server) keep their state in; its functions are underscored, so they are reached only here (Ray is
# pinned; tests/jobs/test_job_start_stop.py runs them across processes). Each key is counted by one
# actor at a time (a batch is retried only after the actor that had it is gone), so a read followed
# by a write needs no lock.
ATTEMPTS_NAMESPACE = "stylize_attempts"


@dataclass(frozen=True)
class AttemptLedger:
    """How often each batch (or image) of one run has been started and not finished: a batch whose
    actor keeps dying is started again and again by Ray's retries, and this count is what notices it.
    Only unfinished keys are kept (``end`` removes one), so the store holds a few keys at a time
    however large the run; :func:`attempt_ledger` removes the rest when the run's stream ends. A
    plain value: the stylize actors get it through their constructor arguments."""

    prefix: str

    def _key(self, key: str) -> bytes:
        return f"{self.prefix}{key}".encode()


@contextlib.contextmanager
def attempt_ledger() -> Iterator[AttemptLedger]:
    """A new, empty attempt ledger for one run's stream; its keys are removed when the block ends,
    whichever way. Keys of a run whose driver died are left under their own prefix (a few per actor)
    until the cluster stops: a rerun starts a new ledger, as it must (its batches start afresh)."""
    from ray.experimental.internal_kv import _internal_kv_del

    ledger = AttemptLedger(f"{uuid.uuid4().hex}/")
    try:
        yield ledger
    finally:
        try:
            _internal_kv_del(ledger.prefix.encode(), del_by_prefix=True, namespace=ATTEMPTS_NAMESPACE)
        except Exception as exc:  # noqa: BLE001 - the run's result stands; a few stale keys are harmless
            log.warning("could not remove the run's attempt counts (%s)", type(exc).__name__)


# Whether this process has already found the store unreachable: then it is not asked again, as each
# try may wait for an RPC to fail.
_store_lost = False


def _ask_store(call: Callable[[], Any]) -> tuple[bool, Any]:
    """``(True, call())``, or ``(False, None)`` when the store is unreachable. The guard is advisory:
    without it a crash loop is no longer capped, but no batch fails for want of a count (Ray Data
    does not retry a batch whose UDF raised, so a store error would fail the whole run)."""
    global _store_lost
    if _store_lost:
        return False, None
    try:
        return True, call()
    except Exception as exc:  # noqa: BLE001 - an RPC error of any kind: the guard steps aside
        _store_lost = True
        log.warning("attempt counts unreachable (%s); this actor goes on without the crash-loop guard",
                    type(exc).__name__)
        return False, None


def begin_attempt(ledger: AttemptLedger, key: str) -> int:
    """Count one more start of ``key``; returns how many times it has been started unfinished (1,
    a first start, when the store is unreachable)."""
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_put

    name = ledger._key(key)

    def count() -> int:
        before = _internal_kv_get(name, namespace=ATTEMPTS_NAMESPACE)
        started = int(before) + 1 if before else 1
        _internal_kv_put(name, str(started).encode(), overwrite=True, namespace=ATTEMPTS_NAMESPACE)
        return started

    ok, started = _ask_store(count)
    return started if ok else 1


def end_attempt(ledger: AttemptLedger, key: str) -> None:
    # Waited for: an actor that exits on a sticky CUDA error right after would otherwise lose the
    # unsent call, and an input it had finished would count as one that killed it.
    from ray.experimental.internal_kv import _internal_kv_del

    _ask_store(lambda: _internal_kv_del(ledger._key(key), namespace=ATTEMPTS_NAMESPACE))
