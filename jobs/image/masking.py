"""The local CLI's ``--mask``: read once, checked against each input's file, fitted and feathered at
the size the input is stylised (the batch job reads masks per input: :mod:`jobs.batch.stages`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stylize_core.masks import MaskError, check_labels, check_size, decode_mask, fit_mask, label_weights, region_weights


class MaskUnusable(Exception):
    """The --mask cannot be used (exit 2): the message names the mask and what is wrong."""


@dataclass(frozen=True)
class CliMask:
    uri: str
    mode: str  # "alpha" or "labels"
    feather: float
    decoded: np.ndarray  # weights or labels at the mask file's size

    @classmethod
    def read(cls, uri: str | None, mode: str, feather: float, opener: Callable[[str], bytes], *, scale: int,
             max_pixels: int, styles: int = 1) -> CliMask | None:
        """The decoded mask (None without --mask); MaskUnusable when it cannot be used. ``styles``: the
        labels it may hold (1, or the number of --regions parts, which need same-size outputs). A
        network that upscales by ``scale`` has its output composited over the input upscaled
        (:func:`stylize_core.image_formats.composite_any`)."""
        if uri is None:
            return None
        what = f"mask {uri}"
        if scale != 1 and styles > 1:
            raise MaskUnusable(f"{what}: regions apply to same-size outputs; this network upscales by {scale}")
        try:
            decoded = decode_mask(opener(uri), mode, max_pixels=max_pixels)
            if mode == "labels":
                check_labels(decoded, styles)  # one style (label 1), or --regions' parts
        except FileNotFoundError:
            raise MaskUnusable(f"{what}: not found") from None
        except MaskError as exc:
            raise MaskUnusable(f"{what}: {exc}") from None
        except OSError as exc:
            raise MaskUnusable(f"{what}: cannot be read ({type(exc).__name__}: {exc})") from None
        return cls(uri, mode, feather, decoded)

    def check(self, input_uri: str, image: np.ndarray) -> None:
        """The mask has the size of the input's file (before --max-side), or MaskUnusable."""
        try:
            check_size(self.decoded, *image.shape[:2])
        except MaskError as exc:
            raise MaskUnusable(f"mask {self.uri}: {exc} ({input_uri})") from None

    def weights(self, image: np.ndarray) -> np.ndarray:
        """The feathered weights at the size ``image`` is stylised."""
        return region_weights(fit_mask(self.decoded, *image.shape[:2]), self.mode, self.feather, 0, 1)

    def planes(self, image: np.ndarray, styles: int) -> np.ndarray:
        """--regions: the (styles + 1, H, W) feathered label weights at the size ``image`` is stylised
        (plane 0: the input)."""
        return label_weights(fit_mask(self.decoded, *image.shape[:2]), styles, self.feather)
