"""The evaluation protocol's fixed views of a split, in NumPy alone (no TensorFlow).

Bernoulli models are evaluated on validation and test images binarized once,
by the draw of the published Fashion-MNIST table (the VampPrior and
Exemplar-VAE code): `np.random.seed(777)`, then
`np.random.binomial(1, x_val / 255)`, then `np.random.binomial(1, x_test / 255)`,
on float64 arrays of shape (n, pixels). A RandomState(777) draws the same
stream as the seeded global generator, without touching global state.
So kvae's test NLL is measured on the same binary images as the table.
"""

import numpy as np

PUBLISHED_DRAW_SEED = 777
TEST_BINARIZATION_SEED = 0  # binarize_once's default seed (training-time helpers and tests)


def published_draw(x_val_uint8, x_test_uint8):
    """(validation, test) binarized by the published draw: float32 {0, 1}, shapes as given.

    The test draw depends on the validation images (it follows them in one
    stream), so both splits are always drawn together.
    """
    state = np.random.RandomState(PUBLISHED_DRAW_SEED)
    views = []
    for x in (x_val_uint8, x_test_uint8):
        flat = np.asarray(x).reshape(len(x), -1).astype(np.float64)  # (n, pixels), as the published code has it
        views.append(state.binomial(1, flat / 255).astype(np.float32).reshape(np.shape(x)))
    return views[0], views[1]


def evaluation_views(x_val_uint8, x_test_uint8, binarize):
    """(validation, test) as evaluated: the published draw for Bernoulli models, else grey levels in [0, 1]."""
    if binarize:
        return published_draw(x_val_uint8, x_test_uint8)
    return tuple(np.asarray(x).astype(np.float32) / 255.0 for x in (x_val_uint8, x_test_uint8))


def draw_name(binarize):
    """How evaluation_views made the test images, as recorded in evaluation.json."""
    return f"published-{PUBLISHED_DRAW_SEED}" if binarize else "grey"


def binarize_once(x_uint8, seed=TEST_BINARIZATION_SEED):
    """Binarizes images once, reproducibly: float32 in {0, 1}, same shape."""
    rng = np.random.default_rng(seed)
    p = x_uint8.astype(np.float32) / 255.0
    return (rng.random(p.shape, dtype=np.float32) < p).astype(np.float32)


def prepare_eval(x_uint8, binarize):
    """A fixed view of any images: binarized once with binarize_once's seed, or scaled to [0, 1].

    Not the test protocol: kvae's validation and test sets use `evaluation_views`.
    """
    return binarize_once(x_uint8) if binarize else x_uint8.astype(np.float32) / 255.0
