"""Image files as data: a folder of PNG/JPEG/BMP/GIF images, labels from its subfolders.

    photos/            load_image_folder("photos") -> Splits, class_names ("cat", "dog")
      cat/001.png        label 0
      dog/002.jpg        label 1

Before anything is decoded for training, every file is opened and fully read
once with Pillow (`scan_image_folder`): unreadable files (truncated, empty,
not an image) are all named in one DataError, or left out with a warning
when `skip_bad_images` is set. The scan also sees every file's size and
colour mode: images are resized to `image_size` and converted to
`color_mode` when those are given; when they are not and the files differ,
the size and mode of most files are used and a warning says so (which sizes
and modes, how many files each, examples). Files are then decoded as
keras.utils.image_dataset_from_directory does (same order, TensorFlow's
decoders, bilinear resizing), so the pixels are the same as before.

A folder without subfolders gives unlabelled images (all labels 0). The
images are shuffled once with a fixed seed and split into train, validation
and test, so a folder always gives the same splits.
"""

import collections
import dataclasses
import os

import numpy as np

from kvae.config import COLOR_MODES
from kvae.data.idx import DataError
from kvae.data.splits import from_arrays, warn
from kvae_contract.errors import MissingDataError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what image_dataset_from_directory reads
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # Pillow modes of grey images
CHANNELS = {"grayscale": 1, "rgb": 3, "rgba": 4}
SPLIT_SEED = 0
EXAMPLES = 3  # files named per size or colour mode in a warning


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """What one Pillow pass over an image folder found, in the order the files are read.

    files, labels, sizes, modes: the readable files, their labels (0 without
    subfolders), (height, width) and Pillow modes. bad: (path, reason) of
    every file that cannot be read. ignored: image files directly in a folder
    that has class subfolders (only the subfolders' files are read).
    """

    path: str
    class_names: tuple | None
    files: tuple
    labels: tuple
    sizes: tuple
    modes: tuple
    bad: tuple
    ignored: tuple = ()

    def relative(self, file):
        return os.path.relpath(file, self.path)


def load_image_folder(path, image_size=None, color_mode=None, validation_fraction=0.1, test_fraction=0.1,
                      skip_bad_images=False):
    """Reads every image under `path` into `Splits` of uint8 (n, height, width, channels).

    Args:
        path: the folder; one subfolder per class (labels 0..C-1 in sorted
            subfolder order, names in `Splits.class_names`), or images directly in it.
        image_size: (height, width) to resize to; None: the size of most files (a warning if sizes differ).
        color_mode: "grayscale" (1 channel), "rgb" (3) or "rgba" (4); None: the mode of most files
            (grey or colour; a warning if they differ).
        validation_fraction, test_fraction: shares of the images held out (each at least one image).
        skip_bad_images: leave unreadable files out with a warning, instead of a DataError naming them.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise MissingDataError(f"The image folder does not exist. Received: path={path!r}")
    if color_mode not in (None, *COLOR_MODES):
        raise DataError(f"`color_mode` must be one of {COLOR_MODES}. Received: color_mode={color_mode!r}")
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise DataError(f"`image_size` must be (height, width), both >= 1. Received: image_size={image_size!r}")
    scan = scan_image_folder(path)
    if scan.ignored:
        warn(
            f"{path} has class subfolders, so the {len(scan.ignored)} image file(s) directly in it are not read "
            f"(e.g. {_examples(scan, scan.ignored)}): move them into a class subfolder."
        )
    _reject_or_skip(scan, scan.bad, len(scan.files) + len(scan.bad), skip_bad_images)
    image_size = tuple(image_size) if image_size is not None else _choose_size(scan)
    color_mode = color_mode or _choose_mode(scan)

    x, decoded, tf_bad = _decode(scan.files, image_size, CHANNELS[color_mode])
    _reject_or_skip(scan, tf_bad, len(scan.files), skip_bad_images)  # scan.bad: already refused or skipped
    y = np.asarray(scan.labels, np.int64)[decoded]
    n_test, n_val = (max(1, round(len(x) * f)) for f in (test_fraction, validation_fraction))
    if len(x) < n_test + n_val + 1:
        raise DataError(f"{path} holds {len(x)} images; it needs at least {n_test + n_val + 1} to split.")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    x, y = x[order], y[order]
    splits = from_arrays(x[n_test:], x[:n_test], y[n_test:], y[:n_test], validation_size=n_val)
    skipped = tuple(scan.relative(file) for file, _ in (*scan.bad, *tf_bad))
    return dataclasses.replace(splits, class_names=scan.class_names, skipped=skipped)


def scan_image_folder(path):
    """Opens and fully reads every image file under `path` with Pillow: a `FolderScan`. Decodes nothing for training.

    The files are those keras.utils.image_dataset_from_directory reads, in its
    order: with subfolders, the files in each (non-hidden) subfolder, one label
    per subfolder in sorted order; without, every file in the tree.
    """
    from PIL import Image

    path = os.fspath(path)
    classes = sorted(name for name in os.listdir(path)
                     if not name.startswith(".") and os.path.isdir(os.path.join(path, name)))
    by_class = bool(classes)
    files, labels, sizes, modes, bad = [], [], [], [], []
    for label, folder in enumerate([os.path.join(path, c) for c in classes] if by_class else [path]):
        for file in _image_files(folder):
            try:
                size, mode = _read_with_pillow(Image, file)
            except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
                bad.append((file, _reason(file, e)))
                continue
            files.append(file)
            labels.append(label)
            sizes.append(size)
            modes.append(mode)
    if not files and not bad:
        raise DataError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) under {path}.")
    ignored = tuple(
        os.path.join(path, name) for name in sorted(os.listdir(path))
        if by_class and name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, name))
    )
    return FolderScan(path, tuple(classes) if by_class else None, tuple(files), tuple(labels), tuple(sizes),
                      tuple(modes), tuple(bad), ignored)


def _image_files(folder):
    """The image files under `folder`, as keras' index_directory lists them (folders sorted by path, then names)."""
    for root, _, names in sorted(os.walk(folder), key=lambda walked: walked[0]):
        for name in sorted(names):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                yield os.path.join(root, name)


def _read_with_pillow(Image, file):
    """((height, width), Pillow mode) of an image file, after checking its structure and decoding all of it."""
    with Image.open(file) as picture:
        picture.verify()  # PNG: every chunk and its checksum
    with Image.open(file) as picture:  # verify() leaves the file unusable: open it again
        picture.load()  # decodes every pixel: a truncated file fails here
        return (picture.height, picture.width), picture.mode


def _reason(file, error):
    """A short reason why `file` cannot be read."""
    from PIL import UnidentifiedImageError

    if os.path.isfile(file) and os.path.getsize(file) == 0:
        return "empty file (0 bytes)"
    if isinstance(error, UnidentifiedImageError):
        return "not an image file Pillow recognizes"
    message = str(error).splitlines()[0] if str(error) else ""
    return f"{message[:120]} ({type(error).__name__})" if message else type(error).__name__


def _reject_or_skip(scan, bad, total, skip):
    """Unreadable files: a DataError naming all of them, or (skip) a warning naming them."""
    if not bad:
        return
    listing = "\n".join(f"  {scan.relative(file)}: {reason}" for file, reason in bad)
    if not skip or len(bad) == total:
        fix = (f"Replace or delete them, or pass --skip-bad-images (skip_bad_images=True) to train on the other "
               f"{total - len(bad)}." if len(bad) < total else "Replace them with readable images.")
        raise DataError(
            f"{len(bad)} of {total} image files under {scan.path} cannot be read:\n"
            f"{listing}\n{fix}"
        )
    warn(f"skipping {len(bad)} of {total} image files under {scan.path} that cannot be read:\n{listing}")


def _choose_size(scan):
    """The (height, width) of most files; a warning that lists the sizes when they differ."""
    by_size = _group(scan.files, scan.sizes)
    if len(by_size) == 1:
        return scan.sizes[0]
    size = max(by_size, key=lambda s: len(by_size[s]))  # ties: the size read first
    listing = ", ".join(f"{h}x{w} in {len(files)} files (e.g. {_examples(scan, files)})"
                        for (h, w), files in sorted(by_size.items(), key=lambda item: -len(item[1])))
    warn(
        f"the images under {scan.path} have {len(by_size)} sizes (height x width): {listing}. "
        f"All are resized to {size[0]}x{size[1]}, the size of most files ({len(by_size[size])} of {len(scan.files)}); "
        "pass --image-size HEIGHT WIDTH (image_size=) to choose the size."
    )
    return size


def _choose_mode(scan):
    """'grayscale' or 'rgb', whichever most files are (ties: rgb); a warning that lists both when files differ."""
    kinds = ["grayscale" if mode in GREY_MODES else "rgb" for mode in scan.modes]
    by_kind = _group(scan.files, kinds)
    if len(by_kind) == 1:
        return kinds[0]
    mode = "grayscale" if len(by_kind["grayscale"]) > len(by_kind["rgb"]) else "rgb"
    pillow = {kind: sorted({m for m, k in zip(scan.modes, kinds) if k == kind}) for kind in by_kind}
    listing = ", ".join(
        f"{kind} in {len(files)} files (Pillow mode {'/'.join(pillow[kind])}, e.g. {_examples(scan, files)})"
        for kind, files in sorted(by_kind.items(), key=lambda item: -len(item[1]))
    )
    warn(
        f"the images under {scan.path} mix colour modes: {listing}. All are converted to {mode}, the mode of most "
        f"files ({len(by_kind[mode])} of {len(scan.files)}); pass --color-mode grayscale|rgb|rgba (color_mode=) "
        "to choose the mode."
    )
    return mode


def _group(files, keys):
    groups = collections.defaultdict(list)
    for file, key in zip(files, keys):
        groups[key].append(file)
    return dict(groups)


def _examples(scan, files):
    shown = ", ".join(scan.relative(f) for f in files[:EXAMPLES])
    return shown + (", ..." if len(files) > EXAMPLES else "")


def _decode(files, image_size, channels):
    """Decodes and resizes the files as image_dataset_from_directory does: (uint8 images, indices decoded, bad).

    bad: (path, reason) of files TensorFlow cannot decode although Pillow could; their images are left out.
    """
    import tensorflow as tf

    def load(file):  # keras.src.utils.image_dataset_utils._load_image_tf, channels_last
        image = tf.image.decode_image(tf.io.read_file(file), channels=channels, expand_animations=False)
        image = tf.image.resize(image, image_size, method="bilinear")
        image.set_shape((*image_size, channels))
        return image

    def to_uint8(x):  # resizing interpolates: round back
        return np.clip(np.round(x), 0, 255).astype(np.uint8)

    dataset = tf.data.Dataset.from_tensor_slices(list(files)).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    try:
        batches = [to_uint8(x) for x in dataset.batch(256).as_numpy_iterator()]
        return np.concatenate(batches), np.arange(len(files)), []
    except tf.errors.OpError:
        pass  # some file Pillow read TensorFlow cannot: find all of them, one file at a time
    images, decoded, bad = [], [], []
    for i, file in enumerate(files):
        try:
            images.append(to_uint8(load(tf.constant(file)).numpy()))
            decoded.append(i)
        except tf.errors.OpError as e:
            bad.append((file, f"TensorFlow cannot decode it: {e.message.splitlines()[0][:120]}"))
    empty = np.zeros((0, *image_size, channels), np.uint8)
    return (np.stack(images) if images else empty), np.asarray(decoded, np.int64), bad
