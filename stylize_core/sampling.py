"""Deterministic sampling of inputs for metrics: the same inputs on every rerun and for every style."""

from __future__ import annotations

import hashlib


def sampled(uri: str, fraction: float) -> bool:
    """Whether input ``uri`` is in the ``fraction`` sample (0 <= fraction <= 1).

    Chosen by a hash of the URI alone (SHA-256, not Python's per-process ``hash``), so reruns,
    other styles, other processes and other machines agree; the sample at a smaller fraction is a
    subset of the sample at a larger one.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"a metrics sample fraction must be within [0, 1], got {fraction}")
    if fraction >= 1.0:
        return True
    if fraction <= 0.0:
        return False
    digest = hashlib.sha256(uri.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2.0**64
