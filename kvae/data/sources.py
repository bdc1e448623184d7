"""Where images come from: local IDX files, tensorflow-datasets, image folders, or arrays.

Every source returns `Splits` of uint8 images shaped (n, height, width,
channels) and integer labels. Fashion-MNIST is read from local files first so
that nothing needs the network; "folder:PATH" reads image files
(kvae/data/folders.py); other names go through tensorflow-datasets, from the
copy prepared in its data_dir (downloading one only when the download host answers).
"""

import dataclasses
import difflib
import os
import sys
import urllib.parse

import numpy as np

from kvae.data.idx import DataError, read_idx
from kvae_contract.errors import ConfigError
from kvae_contract.idx import (
    DATA_DIR_ENV, DEFAULT_DATA_DIR, IDX_FILES, VALIDATION_SIZE, resolve_data_dir,
)

FOLDER_PREFIX = "folder:"  # load_dataset("folder:PATH") reads image files
FASHION_MNIST_CLASSES = (  # the names of Fashion-MNIST's labels 0..9
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FETCH_HINT = (
    "Get the four Fashion-MNIST IDX files with `apt-get install -y dataset-fashion-mnist` "
    f"(installs them in {DEFAULT_DATA_DIR}), or point --data-dir / {DATA_DIR_ENV} at a folder "
    "that holds them, or remove the folder to let tensorflow-datasets download `fashion_mnist`."
)
TFDS_DOWNLOAD_ENV = "KVAE_TFDS_DOWNLOAD"  # "1": download without asking the host first; "0": never download
TFDS_PROBE_URL = "https://storage.googleapis.com/"  # asked when a dataset names no download URLs
TFDS_PROBE_TIMEOUT_S = 3.0  # how long the download host has to answer before kvae gives up


@dataclasses.dataclass(frozen=True)
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple | None = None  # names of the labels 0..C-1, when the source has them
    skipped: tuple = ()  # files left out as unreadable (folders with skip_bad_images), relative to the folder

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


def warn(message):
    """Prints a warning about the data on stderr (training goes on)."""
    print(f"Warning: {message}", file=sys.stderr, flush=True)


def check_images(x, name="x"):
    """Validates an image array and returns it as uint8 (n, height, width, channels).

    Accepts uint8 in [0, 255] or floats in [0, 1]; (n, h, w) gains a channel axis.
    """
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[0] == 0 or x.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"{name} must have shape (n, height, width) or (n, height, width, channels) "
            f"with n > 0 and 1, 3 or 4 channels, e.g. (n, 28, 28, 1). Received: {name}.shape={x.shape}"
        )
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0:
            raise DataError(
                f"Float {name} must hold finite pixel values in [0, 1]. "
                f"Received: min={np.nanmin(x):.4g}, max={np.nanmax(x):.4g}. Divide uint8 images by 255."
            )
        return np.round(x * 255.0).astype(np.uint8)
    raise DataError(f"{name} must be uint8 in [0, 255] or float in [0, 1]. Received: {name}.dtype={x.dtype}")


def from_arrays(x_train, x_test, y_train=None, y_test=None, validation_size=VALIDATION_SIZE):
    """Builds `Splits` from user arrays; the last `validation_size` training images validate."""
    x_train, x_test = check_images(x_train, "x_train"), check_images(x_test, "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"x_train and x_test must have the same image shape. "
            f"Received: {x_train.shape[1:]} and {x_test.shape[1:]}"
        )
    if not 0 <= validation_size < len(x_train):
        raise DataError(
            f"validation_size must be in [0, {len(x_train)}). Received: validation_size={validation_size}"
        )
    y_train = np.zeros(len(x_train), np.int64) if y_train is None else np.asarray(y_train, np.int64)
    y_test = np.zeros(len(x_test), np.int64) if y_test is None else np.asarray(y_test, np.int64)
    if len(y_train) != len(x_train) or len(y_test) != len(x_test):
        raise DataError("Each label array must have one label per image.")
    n = len(x_train) - validation_size
    return Splits(x_train[:n], y_train[:n], x_train[n:], y_train[n:], x_test, y_test)


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


def load_tfds(name, data_dir=None):
    """Loads an image dataset through tensorflow-datasets, from its prepared copy in tfds' data_dir.

    Supervised datasets (CIFAR-10, MNIST, ...) give (image, label) pairs;
    others (CelebA) give their "image" feature, with all labels 0. A dataset
    not prepared yet is downloaded only when its download host answers within
    a few seconds ($KVAE_TFDS_DOWNLOAD: "1" downloads without asking the host
    first, "0" never downloads); otherwise a DataError says where tfds looked
    and how to provide the files. An unknown name is a ConfigError with the
    closest names tfds knows.
    """
    tfds = _import_tfds()
    builder = _tfds_builder(tfds, name, data_dir)
    if not (builder.data_path.exists() and builder.is_prepared()):  # is_prepared() warns if missing
        _download_and_prepare(builder, name)
    else:
        print(f"Loading {name!r} through tensorflow-datasets from {builder.data_path}.")
    splits = set(builder.info.splits)  # empty under tfds.testing.mock_data
    if splits and not {"train", "test"} <= splits:
        raise DataError(
            f"kvae trains on a dataset's 'train' split and tests on its 'test' split; tensorflow-datasets' {name!r} "
            f"has {sorted(splits)}. Received: dataset={name!r}"
        )
    supervised = builder.info.supervised_keys is not None
    try:
        train, test = builder.as_dataset(split=["train", "test"], as_supervised=supervised)
        (x_train, y_train), (x_test, y_test) = (_tfds_arrays(split, supervised) for split in (train, test))
    except Exception as e:  # TensorFlow's OpErrors (a damaged record file), tfds' own errors
        raise DataError(
            f"tensorflow-datasets cannot read {name!r} from {builder.data_path}: {_first_line(e)}. Delete that folder "
            f"and prepare the dataset again."
        ) from None
    # 10,000 validation images as for Fashion-MNIST, fewer for small datasets.
    return from_arrays(x_train, x_test, y_train, y_test, validation_size=min(VALIDATION_SIZE, len(x_train) // 6))


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ModuleNotFoundError:
        raise ConfigError(
            "Datasets other than fashion_mnist and folder:PATH come from tensorflow-datasets, which is not "
            "installed: pip install tensorflow-datasets."
        ) from None
    return tfds


def _tfds_builder(tfds, name, data_dir):
    """tfds.builder(name); a ConfigError with the closest names if tfds does not know `name`."""
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        pass  # its message lists every dataset tfds has: say it shorter, below
    except Exception as e:  # a bad version or config, an unreadable data_dir
        raise ConfigError(
            f"tensorflow-datasets cannot make a builder for {name!r}: {_first_line(e)}. Received: dataset={name!r}"
        ) from None
    known = _tfds_names(tfds)
    base = name.split("/")[0].split(":")[0]  # "mnist" of "mnist/config:3.0.1"
    close = difflib.get_close_matches(base, [*known, "fashion_mnist"], n=4, cutoff=0.6)
    where = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    folder = f" {name} is a folder: use folder:{name} (--image-folder {name})." if os.path.isdir(name) else ""
    raise ConfigError(
        f"`dataset` must be fashion_mnist, folder:PATH or one of the {len(known)} tensorflow-datasets names "
        f"(tfds.list_builders()).{where}{folder} Received: dataset={name!r}"
    )


def _tfds_names(tfds):
    """The dataset names tfds knows (tfds.list_builders() without community datasets); () if it cannot say."""
    try:
        return tuple(tfds.list_builders(with_community_datasets=False))
    except Exception:  # an odd tfds build: no suggestions then
        return ()


def _download_and_prepare(builder, name):
    """Downloads and prepares a dataset, if the download can work; else a DataError that says how to provide it."""
    policy = os.environ.get(TFDS_DOWNLOAD_ENV, "")
    manual = builder.MANUAL_DOWNLOAD_INSTRUCTIONS is not None  # no host to ask: the files come from manual_dir
    urls = sorted(type(builder).url_infos or ()) or [TFDS_PROBE_URL]
    unreachable = None if manual or policy == "1" else _unreachable(urls)
    if policy == "0" or unreachable:
        why = f"{TFDS_DOWNLOAD_ENV}=0 forbids downloading" if policy == "0" else unreachable
        raise DataError(_not_prepared_message(builder, name, why))
    print(f"Downloading {name!r} with tensorflow-datasets into {builder.data_dir_root} (once).")
    try:
        builder.download_and_prepare()
    except Exception as e:  # requests' errors after tfds' retries, tfds' checksum and manual-download errors
        raise DataError(_not_prepared_message(builder, name, f"the download failed: {_first_line(e)}")) from None


def _unreachable(urls, timeout_s=TFDS_PROBE_TIMEOUT_S):
    """None if the host of every URL answers an HTTP request within timeout_s (all together), else why not.

    Runs in a thread so that a hanging DNS lookup cannot hold training up either.
    """
    import threading

    hosts = {}
    for url in urls:
        hosts.setdefault(urllib.parse.urlsplit(url).netloc, url)
    answers = {}

    def ask():
        import requests

        for host, url in list(hosts.items())[:3]:
            try:
                requests.head(url, timeout=timeout_s, allow_redirects=False)
            except requests.RequestException as e:
                answers[host] = f"{type(e).__name__}"
                return
        answers[None] = "ok"

    thread = threading.Thread(target=ask, name="kvae-tfds-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if answers.get(None) == "ok":
        return None
    failed = [h for h in answers if h is not None]
    host = failed[0] if failed else next(iter(hosts))
    reason = answers.get(host, f"no answer within {timeout_s:g} s")
    return f"its download host {host} cannot be reached from this machine ({reason})"


def _not_prepared_message(builder, name, why):
    root = os.fspath(builder.data_dir_root)
    folder = os.path.join(root, builder.name)
    found = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    there = f"{folder} holds only {found}" if found else f"{folder} does not exist"
    hint = (f"Its files must be downloaded by hand: see `tfds.builder({builder.name!r}).MANUAL_DOWNLOAD_INSTRUCTIONS`, "
            f"put them in {os.path.join(root, 'downloads', 'manual')} and run again."
            if builder.MANUAL_DOWNLOAD_INSTRUCTIONS is not None else
            f"Provide the prepared dataset: on a machine with network run `tfds build {builder.name}` (or "
            f"`kvae train --dataset {name}` there) and copy its {builder.name}/ folder from ~/tensorflow_datasets "
            f"into {root}, or set TFDS_DATA_DIR to a folder that holds it; {TFDS_DOWNLOAD_ENV}=1 tries the download "
            "anyway.")
    return (
        f"tensorflow-datasets dataset {name!r} is not prepared on this machine (looked for {builder.data_path} in "
        f"tfds' data_dir {root}: {there}), and {why}. {hint}"
    )


def _first_line(error):
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {line[:200]}" if line else type(error).__name__


def _tfds_arrays(dataset, supervised):
    """A tfds split -> uint8 images (n, h, w, c) and int64 labels (n,), read in batches."""
    images, labels = [], []
    for element in dataset.batch(1024).as_numpy_iterator():
        x, y = element if supervised else (element["image"], np.zeros(len(element["image"]), np.int64))
        images.append(x)
        labels.append(np.asarray(y, np.int64))
    return np.concatenate(images), np.concatenate(labels)


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
        from kvae.data.folders import load_image_folder

        return load_image_folder(name[len(FOLDER_PREFIX) :], image_size, color_mode, skip_bad_images=skip_bad_images)
    splits = load_tfds(name) if name != "fashion_mnist" else _load_fashion_mnist(data_dir)
    return _convert(splits, image_size, color_mode)


def describe_data(splits):
    """What training saw, for the run directory: image size, colour mode, shape, image counts, skipped files."""
    height, width, channels = splits.input_shape
    return {
        "image_size": [height, width],
        "color_mode": {1: "grayscale", 3: "rgb", 4: "rgba"}[channels],
        "input_shape": [height, width, channels],
        "num_images": {"train": len(splits.x_train), "validation": len(splits.x_val), "test": len(splits.x_test)},
        "skipped_files": list(splits.skipped),
    }


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


def _convert(splits, image_size, color_mode):
    """Splits with every image resized to image_size and converted to color_mode (None: as they are)."""
    if image_size is None and color_mode is None:
        return splits
    fields = {}
    for f in ("x_train", "x_val", "x_test"):
        fields[f] = convert_images(getattr(splits, f), image_size, color_mode)
    return dataclasses.replace(splits, **fields)


def convert_images(x_uint8, image_size=None, color_mode=None):
    """uint8 (n, h, w, c) -> uint8 (n, *image_size, channels of color_mode), resized with antialiasing."""
    import tensorflow as tf

    channels = {None: x_uint8.shape[-1], "grayscale": 1, "rgb": 3, "rgba": 4}
    if color_mode not in channels:
        raise DataError(f"`color_mode` must be grayscale, rgb or rgba. Received: color_mode={color_mode!r}")
    out = []
    for start in range(0, len(x_uint8), 4096):  # bounded memory: floats for a few thousand images at a time
        x = tf.cast(x_uint8[start : start + 4096], tf.float32)
        if image_size is not None and tuple(x.shape[1:3]) != tuple(image_size):
            x = tf.image.resize(x, tuple(image_size), antialias=True)
        x = _to_channels(x, channels[color_mode])
        out.append(np.clip(np.round(x.numpy()), 0, 255).astype(np.uint8))
    return np.concatenate(out)


def _to_channels(x, channels):
    """float pixels (n, h, w, c) -> (n, h, w, channels): grey <-> RGB(A), alpha opaque."""
    import tensorflow as tf

    have = x.shape[-1]
    if have == channels:
        return x
    grey = x[..., :1] if have == 1 else tf.image.rgb_to_grayscale(x[..., :3])
    if channels == 1:
        return grey
    rgb = x[..., :3] if have >= 3 else tf.repeat(grey, 3, axis=-1)
    return rgb if channels == 3 else tf.concat([rgb, tf.fill(tf.shape(grey), 255.0)], axis=-1)
