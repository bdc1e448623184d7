"""Where images come from: a dataset name to `Splits` (kvae/data/splits.py).

Fashion-MNIST is read from local IDX files first so that nothing needs the
network; "folder:PATH" reads image files (kvae/data/folders.py); other names
go through tensorflow-datasets (kvae/data/tfds_source.py), from the copy
prepared in its data_dir (downloading one only when the download host answers).
"""

import os

from kvae.data.folders import load_image_folder
from kvae.data.idx import DataError, read_idx
from kvae.data.splits import convert, from_arrays
from kvae.data.tfds_source import load_tfds
from kvae_contract.idx import DATA_DIR_ENV, DEFAULT_DATA_DIR, IDX_FILES, resolve_data_dir

FOLDER_PREFIX = "folder:"  # load_dataset("folder:PATH") reads image files
FASHION_MNIST_CLASSES = (  # the names of Fashion-MNIST's labels 0..9
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FETCH_HINT = (
    "Get the four Fashion-MNIST IDX files with `apt-get install -y dataset-fashion-mnist` "
    f"(installs them in {DEFAULT_DATA_DIR}), or point --data-dir / {DATA_DIR_ENV} at a folder "
    "that holds them, or remove the folder to let tensorflow-datasets download `fashion_mnist`."
)


def read_fashion_mnist_dir(data_dir):
    """Reads the four IDX files from `data_dir`, checking that they fit together."""
    paths = {k: os.path.join(data_dir, v) for k, v in IDX_FILES.items()}
    arrays = {k: read_idx(p, FETCH_HINT) for k, p in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{paths[split + '_images']} and {paths[split + '_labels']} do not match: "
                f"images {images.shape}, labels {labels.shape}. {FETCH_HINT}"
            )
    return from_arrays(arrays["train_images"], arrays["test_images"], arrays["train_labels"], arrays["test_labels"])


def load_dataset(name="fashion_mnist", data_dir=None, image_size=None, color_mode=None, skip_bad_images=False):
    """Returns `Splits` for a dataset name.

    Fashion-MNIST: the IDX files in `data_dir`, $KVAE_DATA_DIR or Debian's folder;
    if none of those holds any of the files, tensorflow-datasets. A folder that
    holds some files but not all, or a bad file, is an error, not a fallback.
    "folder:PATH": the image files under PATH (see kvae.data.folders), checked
    with Pillow first; unreadable files are a DataError naming them all, or
    are left out with a warning when `skip_bad_images` is set.
    Any other name goes to tensorflow-datasets. `image_size` (height, width)
    resizes and `color_mode` ("grayscale", "rgb", "rgba") converts any source.
    """
    if name.startswith(FOLDER_PREFIX):
        return load_image_folder(name[len(FOLDER_PREFIX) :], image_size, color_mode, skip_bad_images=skip_bad_images)
    splits = load_tfds(name) if name != "fashion_mnist" else _load_fashion_mnist(data_dir)
    return convert(splits, image_size, color_mode)


def _load_fashion_mnist(data_dir):
    folder = resolve_data_dir(data_dir)
    present = [f for f in IDX_FILES.values() if os.path.exists(os.path.join(folder, f))]
    if present:
        return read_fashion_mnist_dir(folder)
    if data_dir or os.environ.get(DATA_DIR_ENV):
        raise DataError(f"No Fashion-MNIST IDX files in {folder}. {FETCH_HINT}")
    try:
        return load_tfds("fashion_mnist")
    except DataError as e:
        raise DataError(f"No Fashion-MNIST IDX files in {folder}, and {e} {FETCH_HINT}") from None
