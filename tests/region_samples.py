"""What the regions tests need in more than one place (importable from any test: the folder of
tests/conftest.py is on sys.path): two held-out style images, and a real two-style conditional-norm
network made from the shipped demo predictor (its transformer, with the norm parameters it predicts
for the two styles as the two styles' rows), so outputs span the range and a wrong region shows."""

from __future__ import annotations

import numpy as np
import torch

from stylize_core import adain_demo
from stylize_core.checkpoint import save_style_model
from stylize_core.demo_assets import demo_predictor
from stylize_core.predictor_checkpoint import load_predictor
from stylize_core.transformer_net import NetConfig, TransformerNet


def _read(uri: str) -> bytes:
    with open(uri, "rb") as f:
        return f.read()


def two_styles() -> dict[str, np.ndarray]:
    held = adain_demo.heldout_styles()
    return {"a": held["plaid"], "b": held["rings"]}


def two_style_network(styles: dict[str, np.ndarray] | None = None) -> TransformerNet:
    styles = styles or two_styles()
    model = load_predictor(demo_predictor(), _read).model.eval()
    with torch.inference_mode():
        baked = [model.bake(model.embed_image(image)) for image in styles.values()]
    arch = model.config.net
    net = TransformerNet(NetConfig(arch.width, arch.blocks, arch.depthwise, num_styles=len(baked)))
    own = net.state_dict()
    state = {key: torch.stack([b.state_dict()[key] for b in baked]) if own[key].shape != value.shape else value
             for key, value in baked[0].state_dict().items()}
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


def save_two_style_network(path: str) -> str:
    """The two-style network as this project's checkpoint (styles named a and b); returns its sha256."""
    styles = two_styles()
    return save_style_model(two_style_network(styles), path, styles=list(styles))
