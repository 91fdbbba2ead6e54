"""Batched deletes and existence checks (jobs.common.storage_batch.remove_many / existing_files) on disk and moto S3."""

from __future__ import annotations

import pytest

from jobs.common import storage
from jobs.common import storage_batch
from jobs.common.storage import write_bytes_atomic
from jobs.common.storage_batch import existing_files, remove_many


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path)
    return f"s3://{request.getfixturevalue('s3_bucket')}"


def test_remove_many_is_literal_and_tolerates_absent_keys(root):
    names = ["a[1].jpg", "a1.jpg", "b*.jpg", "bb.jpg", "sub/c?.jpg", "sub/cc.jpg"]
    for n in names:
        write_bytes_atomic(f"{root}/out/{n}", b"x")
    asked = remove_many([f"{root}/out/a[1].jpg", f"{root}/out/b*.jpg", f"{root}/out/sub/c?.jpg", f"{root}/out/never.jpg"])
    assert asked == 4
    assert existing_files([f"{root}/out/{n}" for n in names]) == {f"{root}/out/{n}" for n in ("a1.jpg", "bb.jpg", "sub/cc.jpg")}


def test_s3_deletes_go_a_thousand_per_request(s3_bucket, monkeypatch):
    root = f"s3://{s3_bucket}/many"
    uris = [f"{root}/{i:04d}.jpg" for i in range(1200)]
    fs, _ = storage.get_filesystem(root)
    for i in range(0, len(uris), 300):  # seed quickly: one request per object is what we avoid below
        fs.pipe({u[5:]: b"x" for u in uris[i:i + 300]})
    calls = []
    real = type(fs).call_s3

    def counting(self, method, *a, **kw):
        calls.append(method)
        return real(self, method, *a, **kw)

    monkeypatch.setattr(type(fs), "call_s3", counting)
    remove_many(uris)
    assert calls == ["delete_objects"] * 2
    assert existing_files(uris, prefixes={root: 1200}) == set()


@pytest.mark.parametrize("how", ["head", "list"])
def test_existing_files_by_head_or_by_listing_agree(root, how, monkeypatch):
    prefix = f"{root}/out/a"
    present = [f"{prefix}/{i}.jpg" for i in range(0, 20, 2)] + [f"{prefix}/deep/x.jpg"]
    for u in present:
        write_bytes_atomic(u, b"x")
    asked = [f"{prefix}/{i}.jpg" for i in range(20)] + [f"{prefix}/deep/x.jpg", f"{prefix}/deep", f"{root}/elsewhere.jpg"]
    listed, stats = [], []
    real_list, real_stat = storage_batch._listed_files, storage_batch._exists_file
    monkeypatch.setattr(storage_batch, "_listed_files", lambda p, o: listed.append(p) or real_list(p, o))
    monkeypatch.setattr(storage_batch, "_exists_file", lambda u, o: stats.append(u) or real_stat(u, o))
    # 22 keys under the prefix: a listing beats 22 HEADs unless the prefix holds more than 22,000 keys.
    expected_keys = 1_000 if how == "list" else 10_000_000
    assert existing_files(asked, prefixes={prefix: expected_keys}) == set(present)
    if how == "list":
        assert listed == [prefix] and stats == [f"{root}/elsewhere.jpg"]
    else:
        assert listed == [] and len(stats) == len(asked)
