"""Where the models shipped in ``stylize_core/assets/`` are (torch-free: the job drivers resolve
defaults with it). How each was made: ``stylize_core/assets/README.md``."""

from __future__ import annotations

from importlib import resources


def asset_path(name: str) -> str:
    return str(resources.files("stylize_core") / "assets" / name)


def demo_style_network(slim: bool = False) -> str:
    """The demo style network: the full pytorch/examples-sized one, or the slim one (width 0.25)."""
    return asset_path("demo_mosaic_slim.pth" if slim else "demo_mosaic.pth")


def demo_adain() -> str:
    """The demo AdaIN model (random-filter encoder built from its seed, trained decoder): what
    ``--method adain`` runs without --encoder/--decoder."""
    return asset_path("demo_adain.pth")


def demo_predictor() -> str:
    """The demo style predictor (slim TransformerNet + predictor, trained on procedural styles): what
    ``--method predict`` runs without --predictor."""
    return asset_path("demo_predictor.pth")
