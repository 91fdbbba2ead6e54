"""Pure-PyTorch neural style transfer core: models, losses, Gatys optimisation, image I/O.

Never imports Ray, s3fs or pyarrow: the job layer (``jobs/``) brings those.
"""

from .checkpoint import StyleModel, StyleModelError, checkpoint_bytes, examples_state_dict, load_style_model, save_style_model
from .color import blend, preserve_color
from .gatys import GatysConfig, GatysResult, gatys_vgg, optimize_image
from .gatys_stylizer import GatysStylizer
from .image_io import (
    DEFAULT_MAX_PIXELS,
    FORMAT_EXTENSIONS,
    IMAGE_EXTENSIONS,
    DecompressionBombError,
    ImageDecodeError,
    TruncatedImageError,
    decode_image,
    encode_image,
    resize_max_side,
    resize_short_side,
)
from .loss_meter import LossMeter
from .losses import StyleTargetCache, content_loss, gram_matrix, style_grams, style_loss, tv_loss
from .stylizer import Stylizer, StylizerConfig, StyleResult
from .onnx_export import export_onnx
from .training import StyleTrainer, TrainConfig, prepare_content, train_local
from .transformer_net import TransformerNet
from .vgg import VGGFeatures, VGGWeightsError, layer_names

__all__ = [
    "DEFAULT_MAX_PIXELS", "FORMAT_EXTENSIONS", "IMAGE_EXTENSIONS", "DecompressionBombError", "GatysConfig",
    "GatysResult", "GatysStylizer", "ImageDecodeError", "LossMeter", "StyleModel", "StyleModelError",
    "StyleResult", "StyleTargetCache", "StyleTrainer", "Stylizer", "StylizerConfig", "TrainConfig",
    "TransformerNet", "TruncatedImageError",
    "VGGFeatures", "VGGWeightsError", "blend", "checkpoint_bytes", "content_loss", "decode_image",
    "encode_image", "examples_state_dict", "export_onnx", "gatys_vgg", "gram_matrix", "layer_names", "load_style_model",
    "optimize_image", "prepare_content", "preserve_color", "resize_max_side", "resize_short_side", "save_style_model",
    "style_grams", "style_loss", "train_local", "tv_loss",
]
