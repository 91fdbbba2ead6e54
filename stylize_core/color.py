"""Colour preservation and style strength on (B, 3, H, W) float tensors in 0..255."""

from __future__ import annotations

import torch

# ITU-R BT.601 RGB -> YIQ. Luminance-only transfer (Gatys et al. 2016, "Preserving colour in
# neural artistic style transfer"): keep the stylised Y, take I and Q from the content.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _mix(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(images), images)


def rgb_to_yiq(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> YIQ, same units."""
    return _mix(images.float(), _RGB_TO_YIQ)


def yiq_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) YIQ -> RGB, same units."""
    return _mix(images.float(), _YIQ_TO_RGB)


def preserve_color(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luminance of ``stylized`` with the chrominance of ``content`` (both (B, 3, H, W) 0..255)."""
    s, c = rgb_to_yiq(stylized), rgb_to_yiq(content)
    return yiq_to_rgb(torch.cat([s[:, :1], c[:, 1:]], dim=1)).clamp(0, 255)


def blend(stylized: torch.Tensor, content: torch.Tensor, strength: float) -> torch.Tensor:
    """Style strength: ``strength`` 1 is fully stylised, 0 returns the content."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"style strength must be within [0, 1], got {strength}")
    if strength == 1.0:
        return stylized
    return content.float() + strength * (stylized.float() - content.float())


def finish(stylized: torch.Tensor, content: torch.Tensor, *, keep_color: bool, strength: float) -> torch.Tensor:
    """The per-pixel finishing every feed-forward method gives its output (``--preserve-color``, then
    ``--strength``), unclamped: (B, 3, H, W) 0..255, ``content`` the input at the output's size."""
    if keep_color:
        stylized = preserve_color(stylized, content)
    return blend(stylized, content, strength)
