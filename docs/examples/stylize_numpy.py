"""Stylise a NumPy image with the shipped demo style network, in-process, without Ray.

    python docs/examples/stylize_numpy.py [OUTPUT.jpg]   (default: styled_astronaut.jpg)

Uses stylize_core only, plus the demo checkpoint's path from jobs.common.run_settings. The code
blocks of docs/python-api.md are lines of this file (tests/test_docs.py checks it).
"""

import sys

import numpy as np
import skimage.data
from PIL import Image

from jobs.common.run_settings import demo_checkpoint
from stylize_core.builder import StylizerSpec
from stylize_core.registry import build_stylizer
from stylize_core.image_io import resize_max_side

output = "styled_astronaut.jpg"
if len(sys.argv) > 1:
    output = sys.argv[1]

spec = StylizerSpec(
    styles={"mosaic": demo_checkpoint()},  # style name -> checkpoint (this project's or pytorch/examples')
    metrics=False,  # no VGG loss network: just stylise
    device="cpu",  # "auto" takes CUDA when present
)
built = build_stylizer(spec, opener=lambda path: open(path, "rb").read())  # how files are read: any bytes source

image = resize_max_side(skimage.data.astronaut(), 256)  # (H, W, 3) uint8 RGB; smaller is faster on CPU
[result] = built.stylizer.stylize([image], "mosaic")  # one StyleResult per input image
styled: np.ndarray = result.image  # (H, W, 3) uint8, the input's size
Image.fromarray(styled).save(output, quality=90)

print(f"{output}: {styled.shape[1]}x{styled.shape[0]}, {result.stylize_ms:.0f} ms, model {built.model_sha256['mosaic'][:12]}")
