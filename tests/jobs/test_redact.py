"""The one URI redaction (jobs.common.storage.redact / redact_uri): what each URI form may show."""

from __future__ import annotations

import pytest

from jobs.common.storage import redact, redact_text, redact_uri

SIGV4 = ("https://bkt.s3.amazonaws.com/models/mosaic.pth?X-Amz-Algorithm=AWS4-HMAC-SHA256"
         "&X-Amz-Credential=AKIAEXAMPLE%2F20261206%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261206T000000Z"
         "&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FQoGZXIvYXdzEXAMPLE"
         "&X-Amz-Signature=deadbeefcafe")
SIGV4_SHOWN = ("https://bkt.s3.amazonaws.com/models/mosaic.pth?X-Amz-Algorithm=AWS4-HMAC-SHA256"
               "&X-Amz-Credential=***&X-Amz-Date=20261206T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
               "&X-Amz-Security-Token=***&X-Amz-Signature=***")

CASES = [
    # (uri, what it may show)
    ("s3://bucket/in/a.jpg", "s3://bucket/in/a.jpg"),
    ("s3://AKIA123:S3CR3T@bucket/in/", "s3://bucket/in/"),
    ("s3a://bucket/k?versionId=3", "s3a://bucket/k?versionId=3"),
    ("file:///data/photos/a.jpg", "file:///data/photos/a.jpg"),
    ("/data/photos/a.jpg", "/data/photos/a.jpg"),
    ("photos/a?token=x.jpg", "photos/a?token=x.jpg"),  # a local path: no query to speak of
    ("https://user:pw@minio.local:9000/x", "https://minio.local:9000/x"),
    ("http://u:p%40ss@127.0.0.1:8080/a.jpg", "http://127.0.0.1:8080/a.jpg"),
    ("https://user@host/a.jpg", "https://host/a.jpg"),
    (SIGV4, SIGV4_SHOWN),
    ("https://bkt.s3.amazonaws.com/a.jpg?AWSAccessKeyId=AKIA1&Expires=1700000000&Signature=abc%2Bdef%3D",
     "https://bkt.s3.amazonaws.com/a.jpg?AWSAccessKeyId=***&Expires=1700000000&Signature=***"),
    ("https://acct.blob.core.windows.net/c/a.jpg?sv=2022-11-02&se=2026-12-07&sr=b&sp=r&sig=AbC%2Fd%3D",
     "https://acct.blob.core.windows.net/c/a.jpg?sv=2022-11-02&se=2026-12-07&sr=b&sp=r&sig=***"),
    ("https://storage.googleapis.com/b/a.jpg?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sa%40p.iam"
     "&X-Goog-Signature=0123abcd", "https://storage.googleapis.com/b/a.jpg?X-Goog-Algorithm=GOOG4-RSA-SHA256"
     "&X-Goog-Credential=***&X-Goog-Signature=***"),
    ("https://h/a.jpg?token=t0k&size=2", "https://h/a.jpg?token=***&size=2"),
    ("https://h/a.jpg?key=k3y", "https://h/a.jpg?key=***"),
    ("https://h/a.jpg?password=pw&user=bob", "https://h/a.jpg?password=***&user=bob"),
    ("https://h/a.jpg?access_token=at&alt=media", "https://h/a.jpg?access_token=***&alt=media"),
    ("https://h/cb#access_token=at&state=1", "https://h/cb#access_token=***&state=1"),
    ("s3://bucket/a#b.jpg", "s3://bucket/a#b.jpg"),  # '#' inside an S3 key stays
    ("https://h/a.jpg?download", "https://h/a.jpg?download"),
    ("https://h/a.jpg?", "https://h/a.jpg?"),
    # a path that merely contains the word "key" (or a hive partition key=...) stays
    ("s3://bucket/keys/key=1/monkey.jpg", "s3://bucket/keys/key=1/monkey.jpg"),
    ("https://h/api/key/token.jpg?keyword=cats", "https://h/api/key/token.jpg?keyword=cats"),
]


@pytest.mark.parametrize(("uri", "shown"), CASES)
def test_redact_uri(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
    assert redact_uri(shown) == shown  # idempotent
    if "://" in uri:  # in a message, a bare "?token=..." is masked too (test below)
        assert redact(uri) == shown


def test_redact_text_finds_every_uri_in_a_message() -> None:
    msg = (f"could not read '{SIGV4}': 403 Forbidden (url=http://u:p4ss@127.0.0.1:9/x.jpg?sig=abc), "
           "then host/a.jpg?X-Amz-Signature=beef&a=1")
    out = redact_text(msg)
    for secret in ("AKIAEXAMPLE", "FQoGZXIvYXdzEXAMPLE", "deadbeefcafe", "p4ss", "abc)", "beef"):
        assert secret not in out
    assert "127.0.0.1:9/x.jpg?sig=***" in out and "host/a.jpg?X-Amz-Signature=***&a=1" in out


def test_redact_nested_and_keys() -> None:
    cfg = {"aws_secret_access_key": "S3CR3T", "styles": {"token": SIGV4}, "inputs": [("s3://k:s@b/x", 3)]}
    assert redact(cfg) == {"aws_secret_access_key": "***", "styles": {"token": "***"}, "inputs": [("s3://b/x", 3)]}
    # summaries keep their keys (a style may be called "token"), only their strings are redacted
    assert redact(cfg, keys=False)["styles"] == {"token": SIGV4_SHOWN}
    assert cfg["styles"]["token"] == SIGV4  # a copy: the input is untouched


def test_a_presigned_urls_query_names_no_file(tmp_path) -> None:
    from jobs.common.listing import read_manifest
    from jobs.common.storage import url_path

    assert url_path(SIGV4) == "https://bkt.s3.amazonaws.com/models/mosaic.pth"
    assert url_path("http://u:pw@h:8/a%20b.jpg?sig=x#f") == "http://h:8/a b.jpg"
    assert url_path("s3://bucket/a?b#c.jpg") == "s3://bucket/a?b#c.jpg"  # legal in S3 keys: kept
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri\nhttps://u:pw@h/p/a.jpg?X-Amz-Signature=1\nhttps://h/p/sub/b.jpg?sig=2\n")
    assert [f.rel_path for f in read_manifest(str(manifest))] == ["a.jpg", "sub/b.jpg"]


def test_an_exception_is_one_redacted_line_of_its_type_and_first_words() -> None:
    from jobs.common.redaction import exception_line

    exc = RuntimeError("\n  Task failed reading https://u:pw@h/a.png?X-Amz-Signature=abc  \nTraceback (most recent call last):\n")
    assert exception_line(exc) == "RuntimeError: Task failed reading https://h/a.png?X-Amz-Signature=***"
    assert exception_line(ValueError("x" * 400), 20) == "ValueError: " + "x" * 8  # 20 characters in all
    assert exception_line(KeyError()) == "KeyError: "
