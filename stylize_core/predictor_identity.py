"""A predicted style's identity, as metrics rows and the nightly ledger record it (torch-free).

::

    images   = ",".join(f"{image_sha256}:{weight:.6f}" for each style image, in the style's order)
    style_id = sha256(f"predict|{model_id}|{alpha:.6f}|{images}".encode()).hexdigest()

``model_id`` is the sha256 of the predictor checkpoint's bytes (:func:`predictor_model_id`),
``image_sha256`` that of a style image's bytes. Changing a style image, a blend weight, alpha or the
checkpoint changes the id, so a ledger keyed by it re-renders that style.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def predictor_style_id(model_id: str, alpha: float, images: Sequence[tuple[str, float]]) -> str:
    """The id of a predicted style: ``images`` are (style image sha256, weight) pairs (one for a plain style)."""
    parts = ",".join(f"{digest}:{weight:.6f}" for digest, weight in images)
    return hashlib.sha256(f"predict|{model_id}|{alpha:.6f}|{parts}".encode()).hexdigest()


def predictor_model_id(checkpoint_bytes: bytes) -> str:
    """The predictor checkpoint's id: the sha256 of its bytes."""
    return hashlib.sha256(checkpoint_bytes).hexdigest()
