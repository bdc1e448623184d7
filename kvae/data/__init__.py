"""Data for kvae: sources (IDX files, tensorflow-datasets, image folders, arrays) and tf.data pipelines."""

from kvae.data.folders import load_image_folder
from kvae.data.idx import DataError, read_idx
from kvae.data.sources import FASHION_MNIST_CLASSES, load_dataset
from kvae.data.splits import Splits, check_images, from_arrays

__all__ = [
    "DataError", "FASHION_MNIST_CLASSES", "Splits", "check_images", "from_arrays", "load_dataset", "load_image_folder",
    "read_idx",
]
