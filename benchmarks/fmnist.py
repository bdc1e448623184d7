"""Fashion-MNIST as NumPy uint8 arrays without TensorFlow (for the PyTorch side).

The same files, the same reader and the same split as kvae.data.load_dataset
(kvae_contract.idx, which imports nothing but NumPy): the first 50,000
training images train, the last 10,000 validate, the 10,000 test images test.
"""

import os

from kvae_contract.idx import IDX_FILES, VALIDATION_SIZE, read_idx, resolve_data_dir


def load(data_dir=None):
    """(x_train (50000, 28, 28, 1), x_test (10000, 28, 28, 1)), uint8."""
    folder = resolve_data_dir(data_dir)
    train = read_idx(os.path.join(folder, IDX_FILES["train_images"]))[..., None]
    test = read_idx(os.path.join(folder, IDX_FILES["test_images"]))[..., None]
    return train[: len(train) - VALIDATION_SIZE], test
