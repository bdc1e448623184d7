"""The evaluation protocol's fixed views of a split, in NumPy alone (no TensorFlow).

Bernoulli models are evaluated on images binarized once with a fixed seed,
as in the published Fashion-MNIST numbers, so every run sees the same test set.
"""

import numpy as np

TEST_BINARIZATION_SEED = 0  # the protocol's fixed seed for validation/test sets


def binarize_once(x_uint8, seed=TEST_BINARIZATION_SEED):
    """Binarizes images once, reproducibly: float32 in {0, 1}, same shape."""
    rng = np.random.default_rng(seed)
    p = x_uint8.astype(np.float32) / 255.0
    return (rng.random(p.shape, dtype=np.float32) < p).astype(np.float32)


def prepare_eval(x_uint8, binarize):
    """The fixed evaluation view of a split: binarized once, or scaled to [0, 1]."""
    return binarize_once(x_uint8) if binarize else x_uint8.astype(np.float32) / 255.0
