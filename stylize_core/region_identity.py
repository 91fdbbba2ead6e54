"""A regions style's identity, as metrics rows and the nightly ledger record it (torch-free).

::

    region_id = sha256(f"regions|{method}|{part_1_id},{part_2_id},...".encode()).hexdigest()

``part_k_id`` is the model id of the style in region k (label k), as the run records it for that style
alone (a checkpoint's sha256, a --mix selection's id, an AdaIN or predicted style's id). Changing any
part, their order, or the method changes the id, so a ledger keyed by it re-renders the regions
style. How the regions are rendered (per-region AdaIN, spatial conditional norm, guided Grams or blending)
follows from the method and the parts, so it needs no place of its own; the mask and its settings
are part of each input's version (``jobs.catalog``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def region_style_id(method: str, part_ids: Sequence[str]) -> str:
    """The id of a regions style whose label k renders the style of id ``part_ids[k - 1]``."""
    return hashlib.sha256(f"regions|{method}|{','.join(part_ids)}".encode()).hexdigest()
