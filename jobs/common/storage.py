"""All single-object storage I/O of the project: reading and atomically writing bytes, an object's
version, confined output keys, and redaction of secrets before anything is logged. Listing a prefix
in pages, batched deletes and existence checks are :mod:`jobs.common.storage_batch`;
compare-and-swap on one small object is :mod:`jobs.common.storage_swap`; what speaks S3's own API
is :mod:`jobs.common.s3`, reached only through these three.

Works on local paths, ``file://``, ``s3://`` (s3fs) and any other fsspec URI. Functions take plain
URI strings plus a picklable :class:`StorageOptions`, so they run unchanged inside Ray workers;
filesystem objects are built lazily and cached per process, never shipped between processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

from jobs.common import s3
from jobs.common.redaction import redact, redact_text, redact_uri  # noqa: F401  (the one redaction, found here)

MANIFEST_SUFFIXES: tuple[str, ...] = (".parquet", ".csv")
_LOCAL_PROTOCOLS = frozenset({"file", "local"})
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_STYLE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_EXT_RE = re.compile(r"\.[A-Za-z0-9]{1,16}")
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class StorageOptions:
    """Non-secret S3 settings; credentials always come from the standard AWS chain (env vars,
    ~/.aws files, AWS_PROFILE, instance roles). ``endpoint_url``/``region`` default to the AWS_* env
    of the process building the options (the driver), so Ray workers without that env agree."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    anon: bool = False

    def __post_init__(self) -> None:
        env = os.environ
        if self.endpoint_url is None and env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true":
            # The service-specific variable wins, as in botocore.
            endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
            object.__setattr__(self, "endpoint_url", endpoint or None)
        if self.region is None:
            object.__setattr__(self, "region", env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, safe to log (userinfo in the endpoint URL is stripped)."""
        return redact(asdict(self))

    def s3fs_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem``; no credentials, botocore resolves those."""
        region = {"region_name": self.region} if self.region else None
        kwargs = {"endpoint_url": self.endpoint_url, "client_kwargs": region, "profile": self.profile}
        return {"anon": self.anon, **{k: v for k, v in kwargs.items() if v}}


@dataclass(frozen=True)
class InputFile:
    """One input image. ``version``: the S3 ETag (unquoted), locally ``f"{size}-{mtime_ns}"``."""

    uri: str
    rel_path: str
    size: int | None
    version: str | None


class UnsafePathError(ValueError):
    """A relative path or style name that could escape the output prefix."""


def split_protocol(uri: str) -> tuple[str | None, str]:
    """``"s3://b/k"`` -> ``("s3", "b/k")``; a plain path -> ``(None, path)``."""
    m = _SCHEME_RE.match(uri)
    return (m.group(1).lower(), m.group(2)) if m else (None, uri)


def url_path(uri: str) -> str:
    """``uri`` as a file name may use it: an http(s) URL without its userinfo, query and fragment (a
    presigned URL's signature names no file), anything else as it is (``?`` and ``#`` are legal
    in S3 keys and local names)."""
    protocol, _ = split_protocol(uri)
    if protocol not in ("http", "https"):
        return uri
    parts = urlsplit(uri)
    return f"{protocol}://{parts.netloc.rpartition('@')[2]}{unquote(parts.path)}"


def join_uri(base: str, *parts: str) -> str:
    """Join path segments onto ``base``, keeping its scheme and never producing ``//`` in the path."""
    protocol, rest = split_protocol(base)
    head = re.sub(r"/{2,}", "/", rest).rstrip("/")
    segments = [s for part in parts for s in part.split("/") if s]
    path = "/".join(([head] if head or rest.startswith("/") else []) + segments) or rest[:1]
    return f"{protocol}://{path}" if protocol else path


_FS_CACHE: dict[Any, fsspec.AbstractFileSystem] = {}
_FS_LOCK = threading.Lock()
_FS_PID = os.getpid()


def _cached_fs(key: Any, factory: Callable[[], fsspec.AbstractFileSystem]) -> fsspec.AbstractFileSystem:
    global _FS_PID
    with _FS_LOCK:
        if _FS_PID != os.getpid():  # forked child: the parent's clients and event loop are unusable
            _FS_CACHE.clear()
            _FS_PID = os.getpid()
        if key not in _FS_CACHE:
            _FS_CACHE[key] = factory()
        return _FS_CACHE[key]


def clear_filesystem_cache() -> None:
    """Forget cached filesystem instances (tests; after credentials change)."""
    with _FS_LOCK:
        _FS_CACHE.clear()


def get_filesystem(uri: str, options: StorageOptions | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(filesystem, path without protocol)`` for ``uri``; local paths come back absolute."""
    if "::" in uri:  # chained fsspec URL (simplecache::s3://...): fsspec parses it
        return fsspec.core.url_to_fs(uri)
    protocol, rest = split_protocol(uri)
    if protocol is None or protocol in _LOCAL_PROTOCOLS:
        return _cached_fs(("file", None), LocalFileSystem), os.path.abspath(os.path.expanduser(rest))
    if protocol in s3.PROTOCOLS:
        opts = options if options is not None else StorageOptions()
        return _cached_fs(("s3", opts), lambda: s3.filesystem(opts.s3fs_kwargs())), rest.strip("/")
    return fsspec.core.url_to_fs(uri)  # fsspec caches its own instances per protocol and kwargs


def arrow_paths(uris: list[str], options: StorageOptions | None = None) -> tuple[list[str], Any]:
    """(paths, filesystem) for pyarrow-based readers (Ray Data): local paths with None, so the
    reader uses its own; else the fsspec filesystem (picklable: rebuilt from its arguments in
    each worker) and the paths without their protocol."""
    if not uris:
        return [], None
    fs, _ = get_filesystem(uris[0], options)
    paths = [get_filesystem(u, options)[1] for u in uris]
    return paths, None if isinstance(fs, LocalFileSystem) else fs


@contextlib.contextmanager
def _http_status(uri: str):
    """An HTTP error answer (aiohttp's ClientResponseError is no OSError, and its text holds the
    whole signed URL) as ``PermissionError`` (401, 403) or ``OSError`` naming the URI redacted, its
    ``status`` kept."""
    try:
        yield
    except (OSError, ValueError):
        raise
    except Exception as exc:
        status = getattr(exc, "status", None)
        if not isinstance(status, int):
            raise
        kind = PermissionError if status in (401, 403) else OSError
        err = kind(f"HTTP {status} {getattr(exc, 'message', '')}: {redact_uri(uri)}".replace("  ", " "))
        err.status = status  # what stylize_core.file_errors reads the cause from
        raise err from None


def read_bytes(uri: str, options: StorageOptions | None = None) -> bytes:
    """The whole object; ``FileNotFoundError`` if absent, ``PermissionError`` when refused."""
    fs, path = get_filesystem(uri, options)
    with _http_status(uri):
        return fs.cat_file(path)


def _etag(info: Mapping) -> str | None:
    etag = info.get("ETag") or info.get("etag")
    return str(etag).strip('"') if etag else None


def _epoch(value: object) -> float | None:
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)  # type: ignore[arg-type]


def listed_input(uri: str, fs: fsspec.AbstractFileSystem, info: Mapping, rel_path: str) -> InputFile:
    """The :class:`InputFile` for an fsspec info dict found by listing ``uri`` (a remote prefix or
    object): an S3 object keeps the scheme ``uri`` was spelled with (``s3a://`` stays ``s3a://``)."""
    name = info["name"]
    protocol = split_protocol(uri)[0]
    found = f"{protocol}://{name}" if protocol in s3.PROTOCOLS else fs.unstrip_protocol(name)
    return InputFile(found, rel_path, info.get("size"), _etag(info))


def object_version(uri: str, options: StorageOptions | None = None) -> str:
    """A version of one object, "" when it is missing: locally ``f"{size}-{mtime_ns}"`` (as listings
    give it), else its ETag (unquoted), else ``f"{size}-{mtime}"``, else the sha256 of its bytes."""
    fs, path = get_filesystem(uri, options)
    try:
        if isinstance(fs, LocalFileSystem):
            st = os.stat(path)
            return f"{st.st_size}-{st.st_mtime_ns}"
        info = fs.info(path)
    except FileNotFoundError:
        return ""
    etag = _etag(info)
    if etag is not None:
        return etag
    mtime = _epoch(info.get("mtime") or info.get("LastModified") or info.get("last_modified"))
    if info.get("size") is not None and mtime is not None:
        return f"{info['size']}-{mtime}"
    return "sha256:" + hashlib.sha256(fs.cat_file(path)).hexdigest()


def _atomic(uri: str, options: StorageOptions | None, write_local: Callable[[str], None],
            write_remote: Callable[[fsspec.AbstractFileSystem, str], None]) -> None:
    """Write ``uri`` so that its final name only ever holds complete content: locally to a temp file
    in the target directory, then a rename; on S3 directly (an object appears only once its PUT or
    multipart upload completes); elsewhere to a temp name, then a move."""
    fs, path = get_filesystem(uri, options)
    if isinstance(fs, LocalFileSystem):
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        try:
            write_local(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    elif s3.is_s3(uri):
        write_remote(fs, path)
    else:
        tmp = f"{posixpath.dirname(path)}/{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            write_remote(fs, tmp)
            fs.mv(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.rm_file(tmp)
            raise


def write_bytes_atomic(uri: str, data: bytes, options: StorageOptions | None = None) -> None:
    """Write ``data`` so that the final name only ever holds complete content."""
    data = bytes(data)

    def write_local(tmp: str) -> None:
        # os.open with 0o666 honours the umask (mkstemp would leave the final file 0600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    _atomic(uri, options, write_local, lambda fs, path: fs.pipe_file(path, data))


def exists(uri: str, options: StorageOptions | None = None) -> bool:
    """True if a file (or a non-empty prefix/directory) exists at ``uri``."""
    fs, path = get_filesystem(uri, options)
    return fs.exists(path)


def remove(uri: str, options: StorageOptions | None = None, missing_ok: bool = True) -> None:
    """Delete one file."""
    fs, path = get_filesystem(uri, options)
    if fs.exists(path):  # checked first: S3 deletes of absent keys succeed silently
        fs.rm_file(path)
    elif not missing_ok:
        raise FileNotFoundError(f"no such file: {redact(uri)}")


def remove_prefix(uri: str, options: StorageOptions | None = None) -> None:
    """Recursively delete everything under ``uri``; absent is fine. Refuses a bucket or fs root."""
    fs, path = get_filesystem(uri, options)
    bare = path.strip("/")
    if not bare or (s3.is_s3(uri) and "/" not in bare):
        raise ValueError(f"refusing to delete a whole bucket or root: {redact(uri)}")
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


def safe_rel_components(rel_path: str) -> list[str]:
    """Validated, normalised components of a relative path; ``UnsafePathError`` if it could escape."""
    if not isinstance(rel_path, str) or not rel_path:
        raise UnsafePathError("empty relative path")
    if any(ord(c) < 32 or ord(c) == 127 for c in rel_path):
        raise UnsafePathError(f"control character (e.g. NUL) in relative path {rel_path!r}")
    p = rel_path.replace("\\", "/")  # a Windows-made manifest must not smuggle '..\\' past the check
    if p.startswith("/") or re.match(r"^[A-Za-z]:", p):
        raise UnsafePathError(f"absolute relative path {rel_path!r}")
    parts = [s for s in p.split("/") if s not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError(f"'..' in relative path {rel_path!r}")
    if not parts:
        raise UnsafePathError(f"relative path {rel_path!r} names no file")
    return parts


def output_uri(output: str, style: str, rel_path: str, ext: str) -> str:
    """``{output}/{style}/{rel_path with its extension replaced by ext}``, confined to that prefix."""
    if not isinstance(style, str) or not _STYLE_RE.fullmatch(style):
        raise UnsafePathError(f"unsafe style name {style!r}: must match {_STYLE_RE.pattern}")
    ext = ext if ext.startswith(".") else f".{ext}"
    if not _EXT_RE.fullmatch(ext):
        raise UnsafePathError(f"unsafe extension {ext!r}")
    parts = safe_rel_components(rel_path)
    parts[-1] = posixpath.splitext(parts[-1])[0] + ext
    return join_uri(output, style, *parts)


def get_file(uri: str, local_path: str, options: StorageOptions | None = None) -> None:
    """Copy an object to a local file (large videos: streamed, never held in memory whole)."""
    fs, path = get_filesystem(uri, options)
    os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)
    with _http_status(uri):
        fs.get_file(path, local_path)


def put_file_atomic(local_path: str, uri: str, options: StorageOptions | None = None) -> None:
    """Upload a local file so that ``uri`` only ever holds the complete file (large videos: streamed,
    never held in memory whole)."""
    _atomic(uri, options, lambda tmp: shutil.copyfile(local_path, tmp), lambda fs, path: fs.put_file(local_path, path))


def local_path(uri: str) -> str | None:
    """The local filesystem path of ``uri``, or None when it is remote."""
    fs, path = get_filesystem(uri)
    return path if isinstance(fs, LocalFileSystem) else None


def remove_temp_files(prefix: str, options: StorageOptions | None = None, *, older_than: float | None = None) -> int:
    """Delete leftover ``.tmp-*`` files of interrupted atomic writes under ``prefix``; returns the count.
    With ``older_than`` (epoch seconds), only those last modified before it: a writer that is still
    running (another run's) keeps its temp file."""
    fs, path = get_filesystem(prefix, options)
    if not fs.exists(path):
        return 0
    stale = [p for p in fs.find(path) if posixpath.basename(p).startswith(_TMP_PREFIX)]
    removed = 0
    for p in stale:
        with contextlib.suppress(FileNotFoundError):  # renamed by its writer meanwhile
            if older_than is not None and not (_epoch(fs.info(p).get("mtime")) or older_than) < older_than:
                continue
            fs.rm_file(p)
            removed += 1
    return removed
