"""A contact sheet: a few inputs beside their outputs, one column per style."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from stylize_core.image_io import decode_image, encode_image

from jobs.common.storage import StorageOptions, read_bytes

THUMB = 192
LABEL_H = 18


def _thumb(image: np.ndarray) -> Image.Image:
    img = Image.fromarray(image)
    img.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    return img


def contact_sheet_png(examples: dict[str, list[tuple[str, str]]], options: StorageOptions | None = None) -> bytes | None:
    """``{style: [(input_uri, output_uri)]}`` -> PNG bytes (None when there is nothing to show).

    Rows are the inputs of the first style's examples; a cell stays blank when an image cannot be read.
    """
    styles = list(examples)
    if not styles or not examples[styles[0]]:
        return None
    inputs = [inp for inp, _ in examples[styles[0]]]
    outputs = {style: dict(pairs) for style, pairs in examples.items()}
    cols = ["input"] + styles
    sheet = Image.new("RGB", (len(cols) * THUMB, LABEL_H + len(inputs) * THUMB), "white")
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(cols):
        draw.text((c * THUMB + 4, 3), label[:28], fill="black")
    for r, inp in enumerate(inputs):
        cells = [inp] + [outputs[style].get(inp) for style in styles]
        for c, uri in enumerate(cells):
            if not uri:
                continue
            try:
                thumb = _thumb(decode_image(read_bytes(uri, options)))
            except Exception:
                continue  # a sheet is a convenience: a missing picture must not fail the run
            x = c * THUMB + (THUMB - thumb.width) // 2
            y = LABEL_H + r * THUMB + (THUMB - thumb.height) // 2
            sheet.paste(thumb, (x, y))
    return encode_image(np.asarray(sheet), "png")
