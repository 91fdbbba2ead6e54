"""What a URI may show once it leaves the process: the one redaction used by every writer and logger
(summaries, run JSON, metrics rows, error strings, contact sheets, the catalog's ledger and reports,
``jobs.submit``). Re-exported by :mod:`jobs.common.storage`, where callers find it.

:func:`redact_uri` on one URI: its userinfo (``user:password@``) is removed, and the value of every
query or fragment parameter whose name is a known secret (AWS SigV4/SigV2 signatures, credentials and
security tokens, GCS ``X-Goog-Signature``, Azure SAS ``sig``, ``token``, ``access_token``, ``key``,
``password``, ...) becomes ``***``; everything else, the path included, is kept byte for byte, so a
row still names its input and a URI without secrets comes back unchanged. Plain paths (no
``scheme://``) are returned as they are. :func:`redact_text` does that to every URI inside a message;
:func:`redact` walks mappings and sequences, also masking values stored under secret-looking keys.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

REDACTED = "***"

# Query parameter names (lower-cased, without "-" and "_") whose value is a secret, exactly...
_SECRET_PARAMS = frozenset({
    "sig", "signature", "token", "key", "password", "passwd", "pwd", "secret", "auth", "code",
    "awsaccesskeyid", "accesskeyid", "accesskey", "apikey", "clientsecret", "accesstoken", "idtoken",
    "refreshtoken", "sessiontoken", "securitytoken", "credential", "credentials", "privatekey",
})
# ... or by a part of it: X-Amz-Signature, X-Amz-Credential, X-Amz-Security-Token, X-Goog-Signature,
# X-Goog-Credential, sas_token, db_password, ...
_SECRET_PARAM_PARTS = re.compile(r"signature|credential|token|secret|passw(or)?d|apikey|accesskey|privatekey")
# Mapping keys whose value is a secret (settings dicts, environment copies).
_SECRET_KEY_RE = re.compile(r"secret|passw(or)?d|token|keyid|accesskey|credential|authorization|apikey|privatekey")
_MAY_HOLD_SECRET = re.compile(r"[@?#]")  # no userinfo, query or fragment: nothing to do (10^6-input listings)
# A URI inside free text: it ends at whitespace, a quote or an angle bracket.
_URI_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# A secret parameter with no scheme in front (``host/a.jpg?X-Amz-Signature=...`` in a message).
_PARAM_IN_TEXT = re.compile(r"([?&#;])([^=&#\s'\"<>?]+)=([^&#\s'\"<>]*)")


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", unquote_plus(name).lower())


def is_secret_param(name: str) -> bool:
    """True when a query parameter called ``name`` carries a secret."""
    n = _normal(name)
    return n in _SECRET_PARAMS or bool(_SECRET_PARAM_PARTS.search(n))


def _mask_params(part: str) -> str:
    """``a=1&X-Amz-Signature=beef`` -> ``a=1&X-Amz-Signature=***``; untouched pieces keep their bytes."""
    pieces = part.split("&")
    for i, piece in enumerate(pieces):
        name, eq, value = piece.partition("=")
        if eq and value and is_secret_param(name):
            pieces[i] = f"{name}={REDACTED}"
    return "&".join(pieces)


def redact_uri(uri: str) -> str:
    """``uri`` without its userinfo and with every secret query/fragment value masked (module doc)."""
    if "://" not in uri or not _MAY_HOLD_SECRET.search(uri):
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:  # e.g. an unbalanced "[" in the host: nothing to parse, mask what looks secret
        return _PARAM_IN_TEXT.sub(_mask_match, uri)
    if not parts.scheme:
        return uri
    netloc = parts.netloc.rpartition("@")[2]
    query = _mask_params(parts.query)
    fragment = _mask_params(parts.fragment) if "=" in parts.fragment else parts.fragment
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return uri  # urlunsplit would drop an empty "?" or "#": keep the URI byte for byte
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _mask_match(m: re.Match) -> str:
    return f"{m.group(1)}{m.group(2)}={REDACTED}" if m.group(3) and is_secret_param(m.group(2)) else m.group(0)


def redact_text(text: str) -> str:
    """Every URI in a message through :func:`redact_uri`, then any secret ``?name=value`` left."""
    text = _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)
    return _PARAM_IN_TEXT.sub(_mask_match, text)


def _is_secret_key(key: Any) -> bool:
    return bool(_SECRET_KEY_RE.search(re.sub(r"[^a-z0-9]", "", str(key).lower())))


def redact(obj: Any, keys: bool = True) -> Any:
    """A deep copy of ``obj`` with :func:`redact_text` applied to every string; with ``keys``, a
    mapping's value under a secret-looking key (``aws_secret_access_key``, ``Password``, ...)
    becomes ``"***"`` too (settings; not summaries, whose keys are style names and counters)."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, Mapping):
        return {k: (REDACTED if keys and v is not None and _is_secret_key(k) else redact(v, keys))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return type(obj)(redact(v, keys) for v in obj)
    return copy.deepcopy(obj)


def exception_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first non-empty line of the message``, cut at ``limit`` characters and redacted: what an
    error row or a one-line error may say of an exception (Ray's carry a traceback after the first line)."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return redact(f"{type(exc).__name__}: {first}"[:limit])
