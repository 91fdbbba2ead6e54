"""One night at a time per output prefix: a lease object at ``{output}/_catalog/lease.json``.

The lease holds the night's run id, host, pid, a random token and an expiry. Every change is a
compare-and-swap against the state read just before, so two nights can never both believe they
hold it (:mod:`jobs.common.storage_swap`: on S3 conditional PUT/DELETE against the ETag read, on
local disk a read-compare-write under ``flock``). The lease is created only if absent, renewed,
taken over when expired and released only if unchanged; a lost race reads the lease again.

The holder renews from a background thread every ``ttl / 3`` seconds; a night checks that it still
holds the lease (:meth:`Lease.check`, a fresh read) right before it writes the ledger.
Other filesystems have no compare-and-swap that fsspec exposes: a night there refuses to start.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass

from jobs.common.storage import StorageOptions, join_uri, redact
from jobs.common.storage_swap import read_tagged, supports_swap, swap

DEFAULT_TTL_S = 300.0


class LeaseError(RuntimeError):
    """The lease is held by another night, was lost, or cannot be taken on this store."""


@dataclass(frozen=True)
class Holder:
    """What the lease object says."""

    run_id: str
    host: str
    pid: int
    token: str
    acquired_at: float
    expires_at: float  # epoch seconds by the holder's clock

    def describe(self) -> str:
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires_at))
        return f"night {self.run_id} on {self.host} (pid {self.pid}) until {until}"

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at


def lease_uri(output: str) -> str:
    return join_uri(output, "_catalog", "lease.json")


def _encode(holder: Holder) -> bytes:
    return json.dumps(dataclasses.asdict(holder), sort_keys=True).encode()


def _decode(data: bytes) -> Holder | None:
    try:
        return Holder(**json.loads(data))
    except (ValueError, TypeError):
        return None  # unreadable (hand-edited?): treated as expired, taken over by CAS like any other


class _Store:
    """The lease object as a compare-and-swap cell: ``read() -> (holder | None, tag)``;
    ``swap(tag, new)`` writes ``new`` (or deletes, when None) only if the object is still what
    ``tag`` names (tag None: only if absent). Returns False when it was not."""

    def __init__(self, output: str, options: StorageOptions | None) -> None:
        self.uri, self.options = lease_uri(output), options
        if not supports_swap(self.uri, options):
            raise LeaseError(f"no lease possible on {redact(output)}: the nightly catalog needs an s3:// or local output")

    def read(self) -> tuple[Holder | None, object]:
        data, tag = read_tagged(self.uri, self.options)
        if data is None:
            return None, None
        return _decode(data) or Holder("?", "?", 0, "", 0.0, 0.0), tag

    def swap(self, tag: object, new: Holder | None) -> bool:
        return swap(self.uri, tag, None if new is None else _encode(new), self.options)


def read_holder(output: str, options: StorageOptions | None = None) -> Holder | None:
    """Who holds the lease now (None when nobody)."""
    return _Store(output, options).read()[0]


class Lease:
    """This night's hold on the output prefix. Use as ``with Lease(...).acquire() as lease:``."""

    def __init__(self, output: str, run_id: str, options: StorageOptions | None = None,
                 ttl_s: float = DEFAULT_TTL_S) -> None:
        self.output, self.run_id, self.ttl_s = output, run_id, ttl_s
        self._store = _Store(output, options)
        self._token = uuid.uuid4().hex
        self._tag: object = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def _new(self, acquired_at: float | None = None) -> Holder:
        now = time.time()
        return Holder(self.run_id, socket.gethostname(), os.getpid(), self._token, acquired_at or now, now + self.ttl_s)

    def acquire(self, *, break_lease: bool = False) -> Lease:
        """Take the lease: create it, or take over an expired one (any one, with ``break_lease``)."""
        for _ in range(5):  # each retry follows a lost race; a live holder ends it at once
            holder, tag = self._store.read()
            if holder is not None and not holder.expired and not break_lease:
                raise LeaseError(f"another night holds the lease on {redact(self.output)}: {holder.describe()} "
                                 "(if it is dead, wait for the expiry or pass --break-lease)")
            new = self._new()
            if self._store.swap(tag, new):
                self._tag = self._store.read()[1]
                if holder is not None:
                    what = "broke" if not holder.expired else "took over the expired"
                    print(f"[lease] {what} lease of {holder.describe()}", file=sys.stderr, flush=True)
                self._thread = threading.Thread(target=self._renew_loop, name="catalog-lease", daemon=True)
                self._thread.start()
                return self
        raise LeaseError(f"could not take the lease on {redact(self.output)}: other nights keep changing it")

    def _renew_once(self) -> None:
        with self._mutex:
            if self._lost:
                return
            holder, tag = self._store.read()
            if holder is None or holder.token != self._token:
                self._lost = f"taken by {holder.describe()}" if holder else "deleted"
                return
            new = dataclasses.replace(holder, expires_at=time.time() + self.ttl_s)
            if self._store.swap(tag, new):
                self._tag = self._store.read()[1]
            else:
                self._lost = "changed under us while renewing"

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self._renew_once()
            except Exception as exc:  # a store hiccup: the next renewal (or check) decides
                print(f"[lease] renewal failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def check(self) -> None:
        """Raise :class:`LeaseError` unless this night still holds an unexpired lease (a fresh read)."""
        with self._mutex:
            holder, _ = self._store.read()
            if self._lost is None and (holder is None or holder.token != self._token):
                self._lost = f"taken by {holder.describe()}" if holder else "deleted"
            if self._lost is None and holder.expired:
                self._lost = "expired (renewals failed)"
        if self._lost:
            raise LeaseError(f"night {self.run_id} lost the lease on {redact(self.output)} ({self._lost}); "
                             "stopping before it writes the ledger")

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        with self._mutex:
            holder, tag = self._store.read()
            if holder is not None and holder.token == self._token:
                self._store.swap(tag, None)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
