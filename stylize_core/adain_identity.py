"""An AdaIN style's identity, as metrics rows and the nightly ledger record it (torch-free).

::

    images   = ",".join(f"{image_sha256}:{weight:.6f}" for each style image, in the style's order)
    style_id = sha256(f"adain|{model_id}|{alpha:.6f}|{images}".encode()).hexdigest()

``model_id`` is the encoder + decoder's (:func:`adain_model_id`), ``image_sha256`` the
sha256 of a style image's bytes. Changing a style image, the weights, alpha or either network changes
the id, so a ledger keyed by it re-renders that style.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def adain_style_id(model_id: str, alpha: float, images: Sequence[tuple[str, float]]) -> str:
    """The id of an AdaIN style: ``images`` are (style image sha256, weight) pairs (one for a plain style)."""
    parts = ",".join(f"{digest}:{weight:.6f}" for digest, weight in images)
    return hashlib.sha256(f"adain|{model_id}|{alpha:.6f}|{parts}".encode()).hexdigest()


def adain_model_id(decoder_bytes: bytes, encoder_bytes: bytes | None = None) -> str:
    """The weights' id: our one file's sha256, or sha256("{encoder sha256}|{decoder sha256}") for
    pytorch-AdaIN's two files."""
    decoder = hashlib.sha256(decoder_bytes).hexdigest()
    if encoder_bytes is None:
        return decoder
    return hashlib.sha256(f"{hashlib.sha256(encoder_bytes).hexdigest()}|{decoder}".encode()).hexdigest()
