"""The artifacts' test images (test_images.png, ARTIFACTS.md "Test images"), for /v1/test-images and the explorer.

A few real test images the export wrote beside the models, one PNG row; a
conditional model's image i is of class i % C. Artifacts exported before
kvae wrote them have none, and the explorer does without (uploads only).
"""

import io

import numpy as np
from PIL import Image

from kvae_contract.artifacts import TEST_IMAGES, default_labels, test_images_from_sprite

from . import manifest as mf
from .errors import ArtifactError
from .images import MODES


def load(runtime):
    """(images float32 (n, *input_shape) in [0, 1], class ids (n,) or None) of runtime's artifacts; None if absent.

    The file is checked against its sha256 in the manifest, like every model file.
    """
    if TEST_IMAGES not in runtime.manifest["files"]:
        return None
    data = mf.read_verified(runtime.artifacts_dir, runtime.manifest, TEST_IMAGES)
    shape = runtime.input_shape
    redo = f"Re-export the model into {runtime.artifacts_dir}."
    try:
        if len(shape) != 3 or shape[2] not in MODES:
            raise ValueError(f"the model takes {list(shape)}, not (height, width, 1 or 3) images")
        picture = np.asarray(Image.open(io.BytesIO(data)).convert(MODES[shape[2]]))
        images = np.ascontiguousarray(test_images_from_sprite(picture, shape), dtype=np.float32) / 255.0
    except Exception as e:  # Pillow's many error types, or the shape check
        raise ArtifactError(f"{TEST_IMAGES} in {runtime.artifacts_dir} cannot be read: {e}. {redo}") from None
    labels = None if runtime.num_classes is None else default_labels(len(images), runtime.num_classes)
    return images, labels
