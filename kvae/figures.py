"""The pictures of a trained run: what to draw, from a model and its test data.

Written by `kvae train` at the end and by `kvae plot RUN_DIR`. A conditional
model also gets class_samples.png (one row per class), and every picture
decodes with labels: the test labels, or the first test image's class.
"""

import os
from statistics import NormalDist

import numpy as np
from keras import ops

from kvae import plots
from kvae.data import FASHION_MNIST_CLASSES


def write_all(model, x_test_uint8, y_test, history_rows, run_dir, seed=0, dataset="fashion_mnist", class_names=None):
    """Writes every picture into run_dir and returns their paths."""
    x = x_test_uint8.astype("float32") / 255.0  # grey levels: easier to judge than binary pixels
    names = class_names or (FASHION_MNIST_CLASSES if dataset == "fashion_mnist" else None)
    conditional = getattr(model, "num_classes", None) is not None
    # Labels for the model's helpers: the test labels, or one class for latent sweeps (None if unconditional).
    y = y_test if conditional else None
    one = int(y_test[0]) if conditional else None
    out = {}

    def path(name):
        out[name] = os.path.join(run_dir, name)
        return out[name]

    prior = getattr(model, "prior", "normal")
    title = ("samples from the learned VampPrior" if prior == "vamp" else "samples from the prior") + (
        " (classes in turn)" if conditional else ""
    )
    plots.save_grid(model.sample(64, seed=seed), path("samples.png"), title)
    if prior == "vamp":
        plots.save_grid(pseudo_inputs(model, 64), path("pseudo_inputs.png"), "VampPrior pseudo-inputs (the first 64)")
    if conditional:
        class_samples(model, path("class_samples.png"), seed, names)
    plots.save_reconstructions(x[:32], model.reconstruct(x[:32], _first(y, 32)), path("reconstructions.png"))
    if history_rows:
        plots.save_history(history_rows, path("history.png"))
    z_mean, _ = model.encode(x[:5000], _first(y, 5000))
    labels = y_test[:5000]
    if model.latent_dim == 2:
        plots.save_grid(manifold(model, 20, one), path("manifold.png"), "latent manifold (inverse-normal-CDF grid)", ncols=20)
        plots.save_scatter(z_mean, labels, path("latent_scatter.png"), "test z_mean by class", names)
    else:
        plots.save_scatter(pca_2d(z_mean), labels, path("latent_scatter.png"), "test z_mean, first two principal components, by class", names)
    plots.save_grid(interpolation(model, x[0], x[1], 10, _first(y, 2)), path("interpolation.png"), "interpolation between two test images", ncols=10)
    kl = model_kl_per_dim(model, x[:2000], _first(y, 2000))
    if getattr(model, "kl_levels", ()):  # the HVAE: what each level controls; traversals around a real code
        fixed_top, fixed_bottom = levels(model, seed)
        plots.save_grid(fixed_top, path("levels_z1.png"), "z2 fixed in each row, z1 drawn from p(z1|z2) across", ncols=8)
        plots.save_grid(fixed_bottom, path("levels_z2.png"), "z1 fixed in each row, z2 drawn from p(z2) across", ncols=8)
        base = model.encode(x[:1])[0][0]
        title = "traversal of the 8 latent dims with most KL (rows), -3 to 3 around the first test image's code"
    else:
        base, title = None, "traversal of the 8 latent dims with most KL (rows), -3 to 3"
    plots.save_grid(traversal(model, kl, 8, 9, one, base), path("traversal.png"), title, ncols=9)
    return out


def levels(model, seed=0, rows=8, cols=8):
    """What each level of an HVAE controls: two grids of (rows * cols, *input_shape) images.

    First: each row keeps one z2 from the prior and draws z1 ~ p(z1|z2) across
    the columns (what the lower level varies). Second: each row keeps one z1
    and pairs it with fresh z2 ~ p(z2) across the columns (what the top level varies).
    """
    d1 = model.latent_dims[0]
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((rows, cols, model.latent_dim)).astype(np.float32)
    eps[:, :, d1:] = eps[:, :1, d1:]  # one z2 noise per row
    component = None
    if model.prior == "vamp":
        component = np.repeat(rng.integers(0, model.num_pseudo_inputs, rows), cols)
    same_top = model.generate_codes(eps.reshape(rows * cols, -1), component)
    codes = model.sample_prior(rows + cols, seed=seed + 1)
    z1, z2 = codes[:rows, :d1], codes[rows:, d1:]
    same_bottom = np.concatenate([np.repeat(z1, cols, axis=0), np.tile(z2, (rows, 1))], axis=1)
    return model.decode(same_top), model.decode(same_bottom)


def class_samples(model, path, seed=0, names=None, per_class=10):
    """A conditional model's samples, one row per class: (num_classes * per_class, *input_shape) drawn and saved."""
    labels = np.repeat(np.arange(model.num_classes), per_class)
    images = model.sample(len(labels), seed=seed, labels=labels)
    names = names or [str(c) for c in range(model.num_classes)]
    plots.save_grid(images, path, "samples of each class (rows)", ncols=per_class, row_names=names[: model.num_classes])
    return images


def pseudo_inputs(model, n):
    """The first n of a VampPrior's pseudo-inputs as images in [0, 1]: (n, *input_shape)."""
    return np.clip(ops.convert_to_numpy(model.pseudo_inputs[:n]), 0.0, 1.0)


def _first(labels, n):
    return None if labels is None else labels[:n]


def manifold(model, n, label=None):
    """Decodes an n x n grid of z at the quantiles (i + 0.5) / n of N(0, 1) on each axis."""
    q = [NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)]
    z = np.array([[a, b] for b in reversed(q) for a in q], np.float32)
    return model.decode(z, label)


def pca_2d(z):
    """Projection of (n, d) points onto their first two principal components."""
    centred = z - z.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def interpolation(model, x_a, x_b, steps, labels=None):
    """Decodes the straight line between the posterior means of two images.

    Conditional models: `labels` are the two images' classes; the one-hot
    label moves along the line with z.
    """
    z_mean, _ = model.encode(np.stack([x_a, x_b]), labels)
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    y = None if labels is None else model.labels_for(labels, 2)
    return model.decode((1 - t) * z_mean[0] + t * z_mean[1], None if y is None else (1 - t) * y[0] + t * y[1])


def model_kl_per_dim(model, x, labels=None):
    """Mean KL of each latent dimension over x: (latent_dim,) (an HVAE's z1: against p(z1|z2))."""
    _, kl = model.posterior_summary(x, model.labels_for(labels, len(x)))
    return kl.mean(axis=0)


def traversal(model, kl_per_dim, dims, steps, label=None, base=None):
    """Rows: the `dims` dimensions with most KL, each swept from -3 to 3 with the others at `base` (default 0)."""
    order = np.argsort(kl_per_dim)[::-1][: min(dims, len(kl_per_dim))]
    values = np.linspace(-3.0, 3.0, steps, dtype=np.float32)
    z = np.zeros((len(order) * steps, len(kl_per_dim)), np.float32)
    if base is not None:
        z[:] = base
    for row, d in enumerate(order):
        z[row * steps : (row + 1) * steps, d] = values
    return model.decode(z, label)
