"""Images side by side in one picture: the NumPy tiling behind kvae's figures and the server's PNG grids.

NumPy only, so that kvae (kvae.plots, matplotlib) and serving (kvae_serving.images, Pillow) share it.
"""

import math

import numpy as np


def tile(images, columns=None, gap=1, margin=0, fill=0):
    """images (n, h, w, c) -> one (rows*(h+gap)-gap+2*margin, columns*(w+gap)-gap+2*margin, c) picture.

    Row-major, `columns` per row (default ceil(sqrt(n))); `gap` pixels between
    images and `margin` around them, both of value `fill`; the picture keeps
    the images' dtype.
    """
    images = np.asarray(images)
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    height, width = rows * (h + gap) - gap + 2 * margin, columns * (w + gap) - gap + 2 * margin
    out = np.full((height, width, c), fill, images.dtype)
    for i, image in enumerate(images):
        row, column = divmod(i, columns)
        top, left = margin + row * (h + gap), margin + column * (w + gap)
        out[top : top + h, left : left + w] = image
    return out
