"""Pure-PyTorch neural style transfer core: models, losses, Gatys optimisation, image I/O.

Never imports Ray, s3fs or pyarrow: the job layer (``jobs/``) brings those. Public names load
lazily (PEP 562), so ``stylize_core.image_io`` (Pillow + NumPy) is usable without importing torch:
Ray's decode/encode task workers start seconds faster and leave the CPU to the stylize actors.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    ".bucketing": ["Batch", "DEFAULT_MAX_PAD_FRACTION", "plan_batches"],
    ".checkpoint": ["StyleModel", "StyleModelError", "checkpoint_bytes", "examples_state_dict", "load_style_model",
                    "save_style_model"],
    ".color": ["blend", "preserve_color"],
    ".device_errors": ["is_fatal_device_error"],
    ".gatys": ["GatysConfig", "GatysResult", "gatys_vgg", "optimize_image"],
    ".gatys_stylizer": ["GatysStylizer"],
    ".host": ["retain_freed_memory"],
    ".image_io": ["DEFAULT_MAX_PIXELS", "FORMAT_EXTENSIONS", "IMAGE_EXTENSIONS", "DecompressionBombError",
                  "ImageDecodeError", "TruncatedImageError", "decode_image", "encode_image", "resize_max_side",
                  "resize_short_side"],
    ".loss_meter": ["ContentFeatures", "LossMeter"],
    ".loss_network": ["build_loss_network", "default_layers", "parse_loss_network"],
    ".losses": ["StyleTargetCache", "blended_style_grams", "content_loss", "gram_matrix", "style_grams", "style_loss",
                "tv_loss"],
    ".onnx_export": ["export_onnx"],
    ".sampling": ["sampled"],
    ".stylizer": ["StyleResult", "Stylizer", "StylizerConfig"],
    ".texture_net": ["TextureFeatures"],
    ".training": ["StyleTrainer", "TrainConfig", "prepare_content", "train_local"],
    ".style_mix": ["canonical_mix", "mix_label", "model_id", "normalize_weights"],
    ".transformer_net": ["NetConfig", "TransformerNet"],
    ".vgg": ["VGGFeatures", "VGGWeightsError", "layer_names"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'stylize_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
