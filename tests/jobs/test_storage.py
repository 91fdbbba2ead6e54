"""jobs.storage on the local disk, on S3 (moto server on 127.0.0.1) and on fsspec's memory://."""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import os
import pickle
import random
from pathlib import Path
from typing import Any
from unittest import mock

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from jobs.common import storage
from jobs.common.listing import list_images
from jobs.common.storage import (
    InputFile, StorageOptions, UnsafePathError, exists, get_filesystem, join_uri, output_uri,
    read_bytes, redact, remove, remove_prefix, write_bytes_atomic,
)


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _put(client: Any, bucket: str, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)


TREE = {"b/nested/deep.PNG": b"png-bytes", "a.jpg": b"jpeg!", "b/c.JpEg": b"x" * 17, "b/notes.txt": b"not an image",
        "b/nested/archive.tar.gz": b"nope", "noext": b"nope", "z.webp": b"w"}
IMAGES = ["a.jpg", "b/c.JpEg", "b/nested/deep.PNG", "z.webp"]


def test_list_local_nested_sorted_with_sizes_and_versions(tmp_path: Path) -> None:
    _tree(tmp_path / "in", TREE)
    files = list_images(str(tmp_path / "in"))
    assert [f.rel_path for f in files] == IMAGES  # non-images skipped, mixed-case extensions kept
    assert [f.uri for f in files] == sorted(f.uri for f in files)
    for f in files:
        assert f.uri == str(tmp_path / "in" / f.rel_path)
        st = os.stat(f.uri)
        assert f.size == len(TREE[f.rel_path]) == st.st_size
        assert f.version == f"{st.st_size}-{st.st_mtime_ns}"
    os.utime(files[0].uri, ns=(1, 10**18))
    assert list_images(str(tmp_path / "in"))[0].version != files[0].version  # changes with the file


def test_list_local_file_uri_trailing_slash_and_extension_filter(tmp_path: Path) -> None:
    _tree(tmp_path, TREE)
    plain = list_images(str(tmp_path))
    assert list_images(f"file://{tmp_path}/") == plain  # same absolute uris, same rel_paths
    only_png = list_images(str(tmp_path), extensions=["png"])  # no dot, lower case: still matches .PNG
    assert [f.rel_path for f in only_png] == ["b/nested/deep.PNG"]


def test_list_single_local_file_and_non_image(tmp_path: Path) -> None:
    _tree(tmp_path, TREE)
    [one] = list_images(str(tmp_path / "b" / "c.JpEg"))
    assert (one.rel_path, one.size) == ("c.JpEg", 17)
    with pytest.raises(ValueError, match="neither"):
        list_images(str(tmp_path / "b" / "notes.txt"))


def test_list_empty_dir_and_missing_prefix(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert list_images(str(tmp_path / "empty")) == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(str(tmp_path / "missing"))


def test_list_local_unreadable_subdir_fails_loudly(tmp_path: Path) -> None:
    _tree(tmp_path, {"ok.png": b"1", "locked/hidden.png": b"2"})
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:  # what a chmod 000 directory does (chmod is moot as root)
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    with mock.patch.object(os, "scandir", scandir), pytest.raises(PermissionError):
        list_images(str(tmp_path))


def test_list_s3_prefix(s3_client: Any, s3_bucket: str) -> None:
    _put(s3_client, s3_bucket, {f"in/{k}": v for k, v in TREE.items()})
    _put(s3_client, s3_bucket, {"in2/sibling.jpg": b"s", "other.png": b"o"})  # share the string prefix "in"
    files = list_images(f"s3://{s3_bucket}/in/")
    assert sorted(f.rel_path for f in files) == sorted(IMAGES)
    assert [f.uri for f in files] == sorted(f.uri for f in files)
    for f in files:
        assert f.uri == f"s3://{s3_bucket}/in/{f.rel_path}"
        assert f.size == len(TREE[f.rel_path])
        assert f.version == hashlib.md5(TREE[f.rel_path]).hexdigest()  # ETag of a single-part upload, quotes stripped


def test_list_s3_sees_new_objects_and_bucket_root(s3_client: Any, s3_bucket: str) -> None:
    _put(s3_client, s3_bucket, {"p/one.png": b"1"})
    assert [f.rel_path for f in list_images(f"s3://{s3_bucket}/p")] == ["one.png"]
    _put(s3_client, s3_bucket, {"p/two.png": b"2", "root.gif": b"3"})  # written behind storage's back
    assert exists(f"s3://{s3_bucket}/p/two.png")  # no stale cached listing of p/
    s3_client.delete_object(Bucket=s3_bucket, Key="p/one.png")
    assert not exists(f"s3://{s3_bucket}/p/one.png")
    _put(s3_client, s3_bucket, {"p/one.png": b"1"})
    assert [f.rel_path for f in list_images(f"s3://{s3_bucket}/p")] == ["one.png", "two.png"]
    assert [f.rel_path for f in list_images(f"s3://{s3_bucket}")] == ["p/one.png", "p/two.png", "root.gif"]


def test_list_s3_single_object_and_missing_prefix(s3_client: Any, s3_bucket: str) -> None:
    _put(s3_client, s3_bucket, {"d/pic.TIFF": b"tiff"})
    assert list_images(f"s3://{s3_bucket}/d/pic.TIFF") == [
        InputFile(f"s3://{s3_bucket}/d/pic.TIFF", "pic.TIFF", 4, hashlib.md5(b"tiff").hexdigest())
    ]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(f"s3://{s3_bucket}/nope/")


@pytest.mark.slow
def test_list_s3_more_than_one_page(s3_client: Any, s3_bucket: str) -> None:
    keys = [f"many/{i // 100:02d}/{i:05d}.png" for i in range(1100)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3_client.put_object(Bucket=s3_bucket, Key=k, Body=b"x"), keys))
    files = list_images(f"s3://{s3_bucket}/many")
    assert len(files) == 1100  # one ListObjectsV2 page holds at most 1000 keys
    assert [f.uri for f in files] == [f"s3://{s3_bucket}/{k}" for k in sorted(keys)]


def _write_csv(path: Path, header: list[str], rows: list[list[str]], bom: bool = False) -> None:
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def test_csv_manifest_derives_rel_paths_keeps_order_and_extensions(tmp_path: Path) -> None:
    uris = [str(tmp_path / "data/set/b/2.png"), str(tmp_path / "data/set/a/1.jpg"), str(tmp_path / "data/set/x.dat")]
    _write_csv(tmp_path / "m.csv", ["id", "uri"], [[str(i), u] for i, u in enumerate(uris)], bom=True)
    files = list_images(str(tmp_path / "m.csv"))
    # Listed by the user: kept in order, not filtered by extension, not stat'ed.
    assert files == [InputFile(u, r, None, None) for u, r in zip(uris, ["b/2.png", "a/1.jpg", "x.dat"])]


def test_csv_manifest_rel_path_column_relative_entries_and_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(" uri , rel_path \nimgs/a.png,custom/a.png\n\nimgs/b.png,\n")
    files = list_images(f"file://{tmp_path}/m.csv")
    assert [(f.uri, f.rel_path) for f in files] == [
        (str(tmp_path / "imgs/a.png"), "custom/a.png"),  # relative entries resolve against the manifest
        (str(tmp_path / "imgs/b.png"), "b.png"),  # empty rel_path: derived
    ]


def test_manifest_without_uri_column_or_with_empty_uri(tmp_path: Path) -> None:
    _write_csv(tmp_path / "bad.csv", ["path"], [["/x.png"]])
    with pytest.raises(ValueError, match="no 'uri' column"):
        list_images(str(tmp_path / "bad.csv"))
    pq.write_table(pa.table({"path": ["/x.png"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="no 'uri' column"):
        list_images(str(tmp_path / "bad.parquet"))
    _write_csv(tmp_path / "hole.csv", ["uri", "n"], [["/x.png", "1"], ["", "2"]])
    with pytest.raises(ValueError, match="entry 2 has an empty uri"):
        list_images(str(tmp_path / "hole.csv"))
    with pytest.raises(FileNotFoundError):
        list_images(str(tmp_path / "absent.parquet"))


def test_parquet_manifest_on_s3(s3_client: Any, s3_bucket: str, tmp_path: Path) -> None:
    uris = [f"s3://{s3_bucket}/raw/2024/a.jpg", f"s3://{s3_bucket}/raw/2025/q/b.png"]
    table = pa.table({"uri": uris, "rel_path": ["x/a.jpg", None], "extra": [1, 2]})
    pq.write_table(table, tmp_path / "m.parquet")
    s3_client.upload_file(str(tmp_path / "m.parquet"), s3_bucket, "manifests/m.parquet")
    files = list_images(f"s3://{s3_bucket}/manifests/m.parquet")
    assert files == [InputFile(uris[0], "x/a.jpg", None, None), InputFile(uris[1], "2025/q/b.png", None, None)]


def test_manifest_rel_paths_across_buckets_cannot_collide(tmp_path: Path) -> None:
    uris = ["s3://bucket-one/k/a.jpg", "s3://bucket-two/k/a.jpg", "s3://bucket-two/k/z/b.jpg"]
    pq.write_table(pa.table({"uri": uris}), tmp_path / "m.parquet")
    rels = [f.rel_path for f in list_images(str(tmp_path / "m.parquet"))]
    assert rels == ["bucket-one/a.jpg", "bucket-two/a.jpg", "bucket-two/z/b.jpg"]


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_round_trip_exists_remove(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    base = str(tmp_path) if backend == "local" else f"s3://{request.getfixturevalue('s3_bucket')}"
    uri = f"{base}/new/dirs/f.bin"
    assert not exists(uri)
    write_bytes_atomic(uri, b"first")
    write_bytes_atomic(uri, bytearray(b"\x00\xffsecond"))  # overwrite
    assert read_bytes(uri) == b"\x00\xffsecond" and exists(f"{base}/new/dirs")
    fs, root = get_filesystem(base)
    assert fs.find(root) == [f"{root}/new/dirs/f.bin"]  # no temp files or keys left behind
    remove(uri)
    assert not exists(uri)
    remove(uri)  # missing_ok by default
    with pytest.raises(FileNotFoundError):
        remove(uri, missing_ok=False)
    with pytest.raises(FileNotFoundError):
        read_bytes(uri)


def test_local_write_via_file_uri_honours_umask(tmp_path: Path) -> None:
    write_bytes_atomic(f"file://{tmp_path}/f.bin", b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "f.bin").st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_local_write_never_exposes_partial_content(tmp_path: Path) -> None:
    final = tmp_path / "out" / "img.png"
    seen: list[tuple[bool, bytes]] = []

    def fsync_then_fail(fd: int) -> None:
        # At fsync time the data is complete in the temp file, and the final name must not exist.
        tmp = [p for p in final.parent.iterdir() if p.name.startswith(".tmp-")]
        seen.append((final.exists(), tmp[0].read_bytes()))
        raise OSError("disk full")

    with mock.patch.object(storage.os, "fsync", fsync_then_fail), pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(str(final), b"payload")
    assert seen == [(False, b"payload")]
    assert list(final.parent.iterdir()) == []  # neither the final name nor a temp file

    write_bytes_atomic(str(final), b"old")
    with mock.patch.object(storage.os, "replace", side_effect=OSError("boom")), pytest.raises(OSError):
        write_bytes_atomic(str(final), b"new content")
    assert final.read_bytes() == b"old"  # a failed overwrite leaves the previous version whole
    assert [p.name for p in final.parent.iterdir()] == ["img.png"]


def test_remove_prefix_s3_and_local(s3_client: Any, s3_bucket: str, tmp_path: Path) -> None:
    _put(s3_client, s3_bucket, {"out/a.png": b"1", "out/x/y.png": b"2", "out2/keep.png": b"3"})
    remove_prefix(f"s3://{s3_bucket}/out")
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["out2/keep.png"]
    remove_prefix(f"s3://{s3_bucket}/absent/")  # no error
    with pytest.raises(ValueError, match="refusing"):
        remove_prefix(f"s3://{s3_bucket}")
    _tree(tmp_path, {"d/a.png": b"1", "d/e/f.png": b"2", "keep.png": b"3"})
    remove_prefix(str(tmp_path / "d"))
    remove_prefix(str(tmp_path / "d"))
    assert os.listdir(tmp_path) == ["keep.png"]
    with pytest.raises(ValueError, match="refusing"):
        remove_prefix("/")


def test_other_fsspec_backend_writes_via_temp_and_move() -> None:
    uri = "memory://storage-test/dir/f.bin"
    write_bytes_atomic(uri, b"abc")
    assert read_bytes(uri) == b"abc" and exists(uri)
    fs = fsspec.filesystem("memory")
    with mock.patch.object(type(fs), "mv", side_effect=OSError("interrupted")), pytest.raises(OSError):
        write_bytes_atomic("memory://storage-test/dir/g.bin", b"never")
    assert sorted(fs.ls("/storage-test/dir", detail=False)) == ["/storage-test/dir/f.bin"]
    assert [f.rel_path for f in list_images("memory://storage-test", extensions=[".bin"])] == ["dir/f.bin"]
    remove_prefix("memory://storage-test/dir")
    assert not exists(uri)


def test_storage_options_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    opts = StorageOptions()
    assert (opts.endpoint_url, opts.region) == ("http://127.0.0.1:4566", "eu-west-3")
    assert StorageOptions(endpoint_url="http://127.0.0.1:1").endpoint_url == "http://127.0.0.1:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:5555")  # service-specific wins
    assert StorageOptions().endpoint_url == "http://127.0.0.1:5555"
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var)
    assert StorageOptions().endpoint_url is None


def test_storage_options_kwargs_dict_and_pickle() -> None:
    opts = StorageOptions(endpoint_url="https://AKIA:hunter2@minio.local:9000", region="r1", profile="p", anon=True)
    assert opts.s3fs_kwargs() == {"anon": True, "endpoint_url": "https://AKIA:hunter2@minio.local:9000",
                                  "client_kwargs": {"region_name": "r1"}, "profile": "p"}
    assert "hunter2" not in repr(opts.to_dict()) and opts.to_dict()["endpoint_url"] == "https://minio.local:9000"
    assert pickle.loads(pickle.dumps(opts)) == opts and hash(opts) == hash(StorageOptions(**vars(opts)))


def test_get_filesystem_local_and_s3_cache(s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    fs, path = get_filesystem("rel/dir/")
    assert isinstance(fs, LocalFileSystem) and path == str(tmp_path / "rel" / "dir")
    assert get_filesystem(f"file://{tmp_path}/x")[1] == str(tmp_path / "x")
    s3a, key = get_filesystem("s3://bucket/some/key/")
    assert key == "bucket/some/key" and s3a.endpoint_url == s3_server  # default options from the env
    assert get_filesystem("s3://other/k", StorageOptions())[0] is s3a  # cached per options
    s3b, _ = get_filesystem("s3://bucket/k", StorageOptions(endpoint_url="http://127.0.0.1:1"))
    assert s3b is not s3a and s3b.endpoint_url == "http://127.0.0.1:1"


def test_options_carry_endpoint_to_a_worker_with_other_env(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    write_bytes_atomic(f"s3://{s3_bucket}/w.bin", b"from driver")
    shipped = pickle.dumps(StorageOptions())  # resolved here, as on a Ray driver, then sent to a worker
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the worker's env says otherwise...
    storage.clear_filesystem_cache()  # ...and it builds its filesystem afresh
    try:
        assert read_bytes(f"s3://{s3_bucket}/w.bin", pickle.loads(shipped)) == b"from driver"
    finally:
        storage.clear_filesystem_cache()


@pytest.mark.parametrize(
    ("base", "parts", "expected"),
    [
        ("s3://bkt/out/", ("style", "a/b.jpg"), "s3://bkt/out/style/a/b.jpg"),
        ("s3://bkt", ("/x//y/",), "s3://bkt/x/y"),
        ("/tmp//out", ("a",), "/tmp/out/a"),
        ("/", ("a",), "/a"),
        ("file:///data/", ("b",), "file:///data/b"),
        ("rel", ("", "c"), "rel/c"),
        ("gs://b/p", (), "gs://b/p"),
    ],
)
def test_join_uri(base: str, parts: tuple[str, ...], expected: str) -> None:
    assert join_uri(base, *parts) == expected


@pytest.mark.parametrize(
    ("output", "rel", "ext", "expected"),
    [
        ("s3://bkt/out", "a/b/c.PNG", ".jpg", "s3://bkt/out/mosaic/a/b/c.jpg"),
        ("s3://bkt/out/", "./a//b/./c.png", ".jpg", "s3://bkt/out/mosaic/a/b/c.jpg"),
        ("/srv/out", "a\\b\\c.png", "png", "/srv/out/mosaic/a/b/c.png"),
        ("/srv/out", "noext", ".webp", "/srv/out/mosaic/noext.webp"),
        ("/srv/out", "arch.tar.gz", ".jpg", "/srv/out/mosaic/arch.tar.jpg"),
        ("/srv/out", "..dots../x...jpg", ".png", "/srv/out/mosaic/..dots../x...png"),
        ("file:///srv/out", "a b/ü.jpg", ".jpg", "file:///srv/out/mosaic/a b/ü.jpg"),
    ],
)
def test_output_uri_good(output: str, rel: str, ext: str, expected: str) -> None:
    assert output_uri(output, "mosaic", rel, ext) == expected
    assert output_uri(output, "mosaic", rel, ext) == expected  # deterministic


@pytest.mark.parametrize(
    "rel",
    ["", ".", "./", "//", "/etc/passwd", "//server/share/x", "\\\\server\\share\\x", "\\x", "C:\\x.png",
     "c:/x.png", "C:x.png", "..", "../x.png", "a/../../x.png", "a/..", "..\\x.png", "a\\..\\..\\x",
     "a/\x00b.png", "a/b\n.png"],
)
def test_output_uri_rejects_hostile_rel_paths(rel: str) -> None:
    with pytest.raises(UnsafePathError):
        output_uri("s3://bkt/out", "mosaic", rel, ".jpg")


BAD_STYLES = ["", ".", "..", ".hidden", "-x", "a/b", "a\\b", "a b", "x" * 65, "ü", "a\x00", "a\n"]
BAD_EXTS = ["", ".", "./../x", ".j/g", "/jpg", ".jpg\n", ".jp g"]


@pytest.mark.parametrize(("style", "ext"), [(s, ".jpg") for s in BAD_STYLES] + [("ok", e) for e in BAD_EXTS])
def test_output_uri_rejects_bad_style_or_ext(style: str, ext: str) -> None:
    with pytest.raises(UnsafePathError):
        output_uri("/out", style, "a.png", ext)


def test_output_uri_is_always_confined() -> None:
    rng = random.Random(0)
    alphabet = ["a", "b", ".", "..", "/", "\\", ":", "C", " ", "\x00", "~", "%2e"]
    prefix = "s3://bkt/out/sty/"
    for _ in range(3000):
        rel = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        try:
            result = output_uri("s3://bkt/out", "sty", rel, ".jpg")
        except UnsafePathError:
            continue
        key = result[len(prefix):]
        assert result.startswith(prefix) and key and not key.startswith("/")
        assert ".." not in key.split("/") and "//" not in key and "\\" not in key


def test_redact_nested_and_urls() -> None:
    cases = {  # key: (value, redacted value)
        "aws_secret_access_key": ("S3CR3T", "***"),
        "AWS_ACCESS_KEY_ID": ("AKIA123", "***"),
        "nested": ([{"Password": "pw", "sessionToken": "t", "name": "ok", "no_secret": None}],
                   [{"Password": "***", "sessionToken": "***", "name": "ok", "no_secret": None}]),
        "credentials": ({"anything": "inside"}, "***"),
        "input": ("s3://AKIA123:S3CR3T@bucket/in/", "s3://bucket/in/"),
        "endpoint": (("https://user:pw@minio.local:9000/x", 3), ("https://minio.local:9000/x", 3)),
        "signed": ("https://h/k.jpg?X-Amz-Credential=AKIA%2F&X-Amz-Signature=beef&size=2",
                   "https://h/k.jpg?X-Amz-Credential=***&X-Amz-Signature=***&size=2"),
    }
    original = {k: v for k, (v, _) in cases.items()}
    assert redact(original) == {k: r for k, (_, r) in cases.items()}
    assert original["nested"][0]["Password"] == "pw"  # a copy: the input is untouched
    assert redact("plain text, s3://bucket/a@b.jpg") == "plain text, s3://bucket/a@b.jpg"
