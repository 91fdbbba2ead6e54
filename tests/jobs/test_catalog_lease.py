"""The nightly lease on local disk and on the moto S3 server: exclusive, renewed, taken over by CAS."""

from __future__ import annotations

import threading
import time

import pytest

from jobs.catalog import lease as lease_mod
from jobs.catalog.lease import Lease, LeaseError, read_holder


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/out"


def test_second_night_is_refused_with_the_holder(output):
    with Lease(output, "night-1").acquire() as first:
        with pytest.raises(LeaseError, match=r"night-1 on .* until 20\d\d-"):
            Lease(output, "night-2").acquire()
        first.check()
        assert read_holder(output).run_id == "night-1"
    assert read_holder(output) is None  # released
    with Lease(output, "night-3").acquire():
        assert read_holder(output).run_id == "night-3"


def test_expired_lease_is_taken_over_and_the_old_holder_stops(output):
    old = Lease(output, "dead", ttl_s=0.6).acquire()
    old._stop.set()  # a night that hangs: it stops renewing
    old._thread.join()
    time.sleep(0.7)
    new = Lease(output, "alive", ttl_s=60).acquire()
    with pytest.raises(LeaseError, match="lost the lease.*taken by night alive"):
        old.check()
    old.release()  # must not delete the new holder's lease
    assert read_holder(output).run_id == "alive"
    new.check()
    new.release()


def test_renewal_keeps_a_short_lease_alive(output):
    with Lease(output, "long", ttl_s=0.9).acquire() as held:
        time.sleep(2.0)  # more than twice the ttl: only the renewal thread keeps it
        held.check()
        with pytest.raises(LeaseError, match="holds the lease"):
            Lease(output, "other").acquire()


def test_break_lease_takes_a_live_lease(output):
    victim = Lease(output, "stuck", ttl_s=60).acquire()
    with Lease(output, "operator").acquire(break_lease=True):
        with pytest.raises(LeaseError, match="lost the lease"):
            victim.check()
    victim.release()


def _race(output: str, n: int) -> tuple[list[Lease], list[int]]:
    """``n`` nights ask for the lease at the same moment: (the leases won, the nights refused)."""
    barrier = threading.Barrier(n)
    won, refused = [], []

    def night(i: int) -> None:
        lease = Lease(output, f"n{i}", ttl_s=30)
        barrier.wait()
        try:
            won.append(lease.acquire())
        except LeaseError:
            refused.append(i)

    threads = [threading.Thread(target=night, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, refused


def test_nights_started_together_get_one_lease(output):
    n = 6
    won, refused = _race(output, n)
    assert len(won) == 1 and len(refused) == n - 1
    assert read_holder(output).run_id == won[0].run_id
    won[0].release()


def test_expired_lease_contended_by_many_goes_to_one(output):
    dead = Lease(output, "dead", ttl_s=0.3).acquire()
    dead._stop.set()
    dead._thread.join()
    time.sleep(0.4)
    n = 5
    won, refused = _race(output, n)
    assert len(won) == 1 and len(refused) == n - 1
    for lease in won:
        lease.release()


def test_other_filesystems_refuse():
    with pytest.raises(LeaseError, match="needs an s3:// or local output"):
        lease_mod.Lease("memory://bucket/out", "x")
