"""What a method derives from its style images, computed once per run and shared with every actor.

AdaIN keeps relu4_1's mean and std of each style image, the style predictor its embedding, and the
metrics each style image's Gram targets and per-channel feature mean/std in the loss network. Computing them costs an encoder (and a
loss-network) pass per style image and reading the images from storage, so a Ray job computes them
once, in one task, and hands the same :class:`StyleEncodings` to every actor (Ray keeps one copy in
its object store); the local CLI computes them in-process. The arrays are numpy and this module
imports no torch, so the job's driver can hold the encodings and record them in the run summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# The methods whose registry entry has an ``encode`` (stylize_core.registry; a test keeps the two
# equal): named here so a job's driver, which never imports torch, knows to start the encoding task.
ENCODED_METHODS = frozenset({"adain", "predict"})


@dataclass(frozen=True)
class GramTarget:
    """A style image's metric targets per loss-network layer: the (1, C, C) float32 Gram matrix (style
    loss) and the (1, C) float32 per-channel mean and std of its features (statistics distance; empty
    when not computed: the distance is then NaN)."""

    grams: Mapping[str, np.ndarray]
    means: Mapping[str, np.ndarray] = field(default_factory=dict)
    stds: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class StyleEncodings:
    """One run's encodings of its style images (by style image name, as ``--style-image NAME=URI``).

    ``model_id`` is the encoder or predictor they came from and ``loss_model`` the loss network of the
    Gram targets ("" without metrics): a stylizer built with other models refuses them.
    """

    method: str
    model_id: str
    loss_model: str
    digests: Mapping[str, str]  # style image name -> sha256 of the file's bytes
    codes: Mapping[str, Mapping[str, np.ndarray]]  # style image name -> the method's arrays
    grams: Mapping[str, GramTarget] = field(default_factory=dict)  # style image name -> metrics target
    passes: int = 0  # encoder passes over style images made to compute them
    encode_ms: float = 0.0

    def check(self, method: str, model_id: str, loss_model: str) -> None:
        """ValueError unless these encodings were made by ``method`` with these models."""
        want = (method, model_id, loss_model)
        have = (self.method, self.model_id, self.loss_model)
        if want != have:
            raise ValueError(f"style encodings of (method, model, loss model) {have} given to a stylizer of {want}")

    def nbytes(self) -> int:
        arrays = [a for code in self.codes.values() for a in code.values()]
        arrays += [a for target in self.grams.values() for part in (target.grams, target.means, target.stds)
                   for a in part.values()]
        return int(sum(a.nbytes for a in arrays))

    def summary(self) -> dict:
        """What the run summary records: the models, one entry per style image, the passes and the cost."""
        return {
            "method": self.method,
            "model_id": self.model_id,
            "loss_model": self.loss_model,
            "passes": self.passes,
            "encode_ms": round(self.encode_ms, 1),
            "bytes": self.nbytes(),
            "style_images": {
                name: {"sha256": self.digests[name],
                       "arrays": {key: list(a.shape) for key, a in self.codes[name].items()},
                       "gram_layers": sorted(self.grams[name].grams) if name in self.grams else []}
                for name in self.digests
            },
        }
