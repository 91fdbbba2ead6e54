"""Choosing a style, or a blend of styles, from a multi-style network.

A *selection* is one of: a style index (``2``), a style name (``"wave"``), or a mapping of indices
or names to non-negative weights (``{"wave": 1, "mosaic": 3}``). It resolves to a weight vector over
the network's S styles that sums to one (:func:`normalize_weights`): a convex mix of the
conditional-instance-norm parameters, so a blend is a style of its own.

Identity of a blend (:func:`mix_label`, :func:`model_id`)::

    canonical = ",".join(f"{index}:{weight:.6f}" for each style with weight > 0, by index)
    model_id  = sha256(f"{checkpoint_sha256}|{canonical}".encode()).hexdigest()

e.g. ``"0:0.250000,3:0.750000"``. Single-style checkpoints (and multi-style ones used without a
selection) keep ``model_id == checkpoint sha256``. Changing any weight by more than 5e-7 changes
the id, so a ledger keyed by it re-renders the blend.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Union

Selection = Union[int, str, Mapping[Union[int, str], float]]


def _index(key: int | str, names: Sequence[str]) -> int:
    if isinstance(key, bool):
        raise ValueError(f"style {key!r} is neither an index nor a name")
    if isinstance(key, int):
        if not 0 <= key < len(names):
            raise ValueError(f"style index {key} out of range: this network has styles 0..{len(names) - 1}")
        return key
    if isinstance(key, str):
        if key in names:
            return list(names).index(key)
        if key.strip().isdigit():
            return _index(int(key), names)
    raise ValueError(f"unknown style {key!r}; this network has {', '.join(f'{i}:{n}' for i, n in enumerate(names))}")


def normalize_weights(selection: Selection, names: Sequence[str]) -> tuple[float, ...]:
    """Weights (S,) summing to one for ``selection`` over the styles ``names``.

    Raises ValueError for unknown styles, negative or non-finite weights, or weights summing to 0.
    """
    if isinstance(selection, Mapping):
        weights = [0.0] * len(names)
        for key, value in selection.items():
            w = float(value)
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"style weight for {key!r} must be a finite number >= 0, not {value!r}")
            weights[_index(key, names)] += w
        total = sum(weights)
        if total <= 0:
            raise ValueError("style weights sum to 0: give at least one style a positive weight")
        return tuple(w / total for w in weights)
    k = _index(selection, names)
    return tuple(1.0 if i == k else 0.0 for i in range(len(names)))


def style_image_parts(names: Sequence[str], mixes: Mapping[str, Selection]) -> dict[str, list[tuple[str, float]]]:
    """What each style of the style-image methods (AdaIN, the predictor) is made of: every style image
    name alone, then each ``--mix NAME`` over them, as ``[(image name, weight > 0), ...]``.
    ValueError ``--mix NAME: why`` for an impossible selection."""
    styles: dict[str, list[tuple[str, float]]] = {name: [(name, 1.0)] for name in names}
    for name, selection in mixes.items():
        try:
            weights = normalize_weights(selection, names)
        except ValueError as exc:
            raise ValueError(f"--mix {name}: {exc}") from None
        styles[name] = [(names[i], w) for i, w in enumerate(weights) if w > 0]
    return styles


def canonical_mix(weights: Sequence[float]) -> str:
    """``index:weight`` pairs (6 decimals) of the styles with weight > 0, by index."""
    return ",".join(f"{i}:{w:.6f}" for i, w in enumerate(weights) if w > 0)


def mix_label(weights: Sequence[float], names: Sequence[str]) -> str:
    """Human-readable name of a selection: the style's name, or ``name:weight+name:weight``."""
    used = [(names[i], w) for i, w in enumerate(weights) if w > 0]
    if len(used) == 1:
        return used[0][0]
    return "+".join(f"{name}:{w:.3g}" for name, w in used)


def model_id(checkpoint_sha256: str, weights: Sequence[float] | None) -> str:
    """The id metrics rows and ledgers use: the checkpoint's sha256, or for a selection of a
    multi-style network, sha256 of ``"{checkpoint_sha256}|{canonical_mix(weights)}"``."""
    if weights is None:
        return checkpoint_sha256
    return hashlib.sha256(f"{checkpoint_sha256}|{canonical_mix(weights)}".encode()).hexdigest()
