"""One night at a time per output prefix: a lease object at ``{output}/_catalog/lease.json``.

The lease holds the night's run id, host, pid, a random token and an expiry. Every change is a
compare-and-swap against the state read just before, so two nights can never both believe they
hold it:

- S3: taken with a conditional PUT ``If-None-Match: *`` (the object must not exist), renewed,
  taken over when expired and released with ``If-Match: <ETag read>``; a lost race is S3's 412
  (or 409 under concurrent conditional writes), after which the lease is read again.
- Local disk: the read-compare-write runs under ``flock`` on a lock file beside the lease (the
  kernel drops the lock with the process, so a dead night leaves no stale lock), the lease itself
  is created with ``os.link`` (fails if it exists: the exclusive create) and replaced with
  ``os.replace`` (readers see the old or the new content, never a torn one).

The holder renews from a background thread every ``ttl / 3`` seconds; a night checks that it still
holds the lease (:meth:`Lease.check`, a fresh read) right before it writes the ledger.
Other filesystems have no compare-and-swap that fsspec exposes: a night there refuses to start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from fsspec.implementations.local import LocalFileSystem

from jobs.common.storage import StorageOptions, get_filesystem, join_uri, redact, split_protocol

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


class _Store:
    """Compare-and-swap on one small object: ``read() -> (holder | None, tag)``; ``swap(tag, new)``
    writes ``new`` (or deletes, when None) only if the object is still what ``tag`` names (tag None:
    only if absent). Returns False when it was not."""

    def read(self) -> tuple[Holder | None, object]:
        raise NotImplementedError

    def swap(self, tag: object, new: Holder | None) -> bool:
        raise NotImplementedError


def _encode(holder: Holder) -> bytes:
    return json.dumps(dataclasses.asdict(holder), sort_keys=True).encode()


def _decode(data: bytes) -> Holder | None:
    try:
        return Holder(**json.loads(data))
    except (ValueError, TypeError):
        return None  # unreadable (hand-edited?): treated as expired, taken over by CAS like any other


class _S3Store(_Store):
    def __init__(self, uri: str, options: StorageOptions | None) -> None:
        self.fs, self.path = get_filesystem(uri, options)
        self.bucket, _, self.key = self.path.partition("/")

    def read(self) -> tuple[Holder | None, object]:
        try:
            obj = self.fs.call_s3("head_object", Bucket=self.bucket, Key=self.key)
            etag = obj["ETag"]
            # Read after the ETag: content newer than the ETag makes the later If-Match fail (safe).
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None, None
        holder = _decode(data)
        return holder or Holder("?", "?", 0, "", 0.0, 0.0), etag

    def swap(self, tag: object, new: Holder | None) -> bool:
        try:
            if new is None:
                self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=tag)
            elif tag is None:
                self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=_encode(new), IfNoneMatch="*")
            else:
                self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=_encode(new), IfMatch=tag)
        except (FileExistsError, FileNotFoundError):
            return False
        except OSError as exc:  # s3fs maps 412 (If-Match) and 409 (concurrent conditional write) to OSError
            if exc.errno == errno.EINVAL or any(s in str(exc).lower() for s in ("condition", "conflict")):
                return False
            raise
        finally:
            self.fs.invalidate_cache(self.path)
        return True


class _LocalStore(_Store):
    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = path + ".lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _read_unlocked(self) -> tuple[Holder | None, object]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None, None
        holder = _decode(data) or Holder("?", "?", 0, "", 0.0, 0.0)
        return holder, data  # the bytes themselves are the tag: a swap compares them

    def read(self) -> tuple[Holder | None, object]:
        with self._locked():
            return self._read_unlocked()

    def swap(self, tag: object, new: Holder | None) -> bool:
        with self._locked():
            _, current = self._read_unlocked()
            if current != tag:
                return False
            if new is None:
                os.unlink(self.path)
                return True
            tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(_encode(new))
                f.flush()
                os.fsync(f.fileno())
            try:
                if tag is None:
                    os.link(tmp, self.path)  # exclusive create: fails if the lease exists
                else:
                    os.replace(tmp, self.path)
            except FileExistsError:
                return False
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            return True


def _store(output: str, options: StorageOptions | None) -> _Store:
    uri = lease_uri(output)
    fs, path = get_filesystem(uri, options)
    if isinstance(fs, LocalFileSystem):
        return _LocalStore(path)
    if split_protocol(uri)[0] in ("s3", "s3a"):
        return _S3Store(uri, options)
    raise LeaseError(f"no lease possible on {redact(output)}: the nightly catalog needs an s3:// or local output")


def read_holder(output: str, options: StorageOptions | None = None) -> Holder | None:
    """Who holds the lease now (None when nobody)."""
    return _store(output, options).read()[0]


class Lease:
    """This night's hold on the output prefix. Use as ``with Lease(...).acquire() as lease:``."""

    def __init__(self, output: str, run_id: str, options: StorageOptions | None = None,
                 ttl_s: float = DEFAULT_TTL_S) -> None:
        self.output, self.run_id, self.ttl_s = output, run_id, ttl_s
        self._store = _store(output, options)
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
