"""Images in and out: PNG grids of model outputs, PNG uploads to model inputs (Pillow)."""

import io
import re

import numpy as np
from PIL import Image

from kvae_contract.images import tile

from .errors import InputError

MODES = {1: "L", 3: "RGB"}  # channels -> Pillow mode


def to_uint8(images):
    """Floats in [0, 1] -> uint8 in [0, 255], rounded; values outside are clipped."""
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def grid(images, columns=None, pad=2):
    """images (n, h, w, c) in [0, 1] -> one uint8 picture (rows*(h+pad)+pad, cols*(w+pad)+pad, c), black gaps."""
    return tile(to_uint8(np.asarray(images)), columns, gap=pad, margin=pad, fill=0)


def png_bytes(picture):
    """uint8 (h, w, c) with c in (1, 3) -> PNG file bytes."""
    c = picture.shape[-1]
    if c not in MODES:
        raise InputError(f"PNG output needs 1 or 3 channels, the images have {c}; ask for JSON (format 'json').")
    buffer = io.BytesIO()
    Image.fromarray(picture[..., 0] if c == 1 else picture, MODES[c]).save(buffer, format="PNG")
    return buffer.getvalue()


def grid_png(images, columns=None):
    """images (n, h, w, c) in [0, 1] -> PNG bytes of their grid."""
    return png_bytes(grid(images, columns))


def save_grid(images, path, columns=None):
    with open(path, "wb") as f:
        f.write(grid_png(images, columns))


def read_image(data, input_shape):
    """An uploaded image file (PNG, or any format Pillow reads) -> float32 (1, *input_shape) in [0, 1].

    The size must match the model's; colour is converted to the model's channels (grey or RGB).
    """
    if len(input_shape) != 3 or input_shape[2] not in MODES:
        raise InputError(
            f"image files need a model with (height, width, 1 or 3) inputs; this one takes {list(input_shape)}."
        )
    h, w, c = input_shape
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only, so the size check comes before decoding
        if image.size != (w, h):
            raise InputError(f"the image is {image.size[0]}x{image.size[1]} pixels, the model takes {w}x{h}.")
        pixels = np.asarray(image.convert(MODES[c]), dtype=np.float32) / 255.0
    except InputError:
        raise
    except Exception as e:  # Pillow raises many types for bad files; their text may name objects at heap addresses
        detail = re.sub(r" (object )?at 0x[0-9a-fA-F]+", "", str(e))
        raise InputError(f"the body is not an image file Pillow can read ({type(e).__name__}: {detail}).") from None
    return pixels.reshape((1, h, w, c))
