"""The artifacts' test images (ARTIFACTS.md, "Test images"): a few check images in one PNG, for the explorer page.

They are real test images the export already holds (export_run's check images
are the dataset's first test images), so the page can encode and interpolate
them without a dataset. A conditional model's image i is of class i % C, the
contract's default label order, so no labels need to be stored beside them.
"""

import io
import os

import numpy as np

from kvae_contract.artifacts import NUM_TEST_IMAGES, TEST_IMAGES, default_labels, test_images_sprite

MODES = {1: "L", 3: "RGB"}  # channels -> Pillow mode; other channel counts get no test images


def choose(x, class_ids=None, num_classes=None, count=NUM_TEST_IMAGES):
    """Up to `count` of the images x (n, h, w, c) in [0, 1]; a conditional model's image i of class i % num_classes.

    Unconditional (class_ids None): the first `count`. Conditional: for i = 0, 1, ...
    the first unused image of class i % num_classes, stopping at the first class
    that has none left, so that the order holds for every image written.
    """
    if class_ids is None:
        return x[:count]
    class_ids = np.asarray(class_ids)
    unused = {c: list(np.flatnonzero(class_ids == c)) for c in range(num_classes)}
    chosen = []
    for wanted in default_labels(count, num_classes):
        if not unused[int(wanted)]:
            break
        chosen.append(unused[int(wanted)].pop(0))
    return x[chosen]


def png(x):
    """Images (n, h, w, c) in [0, 1] -> the PNG bytes of their one-row picture, or None for n = 0 or c not 1 or 3."""
    from PIL import Image  # Pillow comes with matplotlib in the train extra, and with the serving extra

    if len(x) == 0 or x.shape[-1] not in MODES:
        return None
    picture = test_images_sprite(np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(picture[..., 0] if x.shape[-1] == 1 else picture, MODES[x.shape[-1]]).save(buffer, format="PNG")
    return buffer.getvalue()


def write(folder, x, class_ids=None, num_classes=None):
    """Writes TEST_IMAGES into `folder` from the check images x (and, conditional, their class ids); returns how many.

    Nothing is written (0) when png() has nothing to write.
    """
    images = choose(x, class_ids, num_classes)
    data = png(images)
    if data is None:
        return 0
    with open(os.path.join(folder, TEST_IMAGES), "wb") as f:
        f.write(data)
    return len(images)
