"""The pictures of a trained run: what to draw, from a model and its test data.

Written by `kvae train` at the end and by `kvae plot RUN_DIR`.
"""

import os
from statistics import NormalDist

import numpy as np

from kvae import plots

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


def write_all(model, x_test_uint8, y_test, history_rows, run_dir, seed=0, dataset="fashion_mnist"):
    """Writes every picture into run_dir and returns their paths."""
    x = x_test_uint8.astype("float32") / 255.0  # grey levels: easier to judge than binary pixels
    names = FASHION_MNIST_CLASSES if dataset == "fashion_mnist" else None
    out = {}

    def path(name):
        out[name] = os.path.join(run_dir, name)
        return out[name]

    plots.save_grid(model.sample(64, seed=seed), path("samples.png"), "samples from the prior")
    plots.save_reconstructions(x[:32], model.reconstruct(x[:32]), path("reconstructions.png"))
    if history_rows:
        plots.save_history(history_rows, path("history.png"))
    z_mean, _ = model.encode(x[:5000])
    labels = y_test[:5000]
    if model.latent_dim == 2:
        plots.save_grid(manifold(model, 20), path("manifold.png"), "latent manifold (inverse-normal-CDF grid)", ncols=20)
        plots.save_scatter(z_mean, labels, path("latent_scatter.png"), "test z_mean by class", names)
    else:
        plots.save_scatter(pca_2d(z_mean), labels, path("latent_scatter.png"), "test z_mean, first two principal components, by class", names)
    plots.save_grid(interpolation(model, x[0], x[1], 10), path("interpolation.png"), "interpolation between two test images", ncols=10)
    kl = model_kl_per_dim(model, x[:2000])
    plots.save_grid(traversal(model, kl, 8, 9), path("traversal.png"), "traversal of the 8 latent dims with most KL (rows), -3 to 3", ncols=9)
    return out


def manifold(model, n):
    """Decodes an n x n grid of z at the quantiles (i + 0.5) / n of N(0, 1) on each axis."""
    q = [NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)]
    z = np.array([[a, b] for b in reversed(q) for a in q], np.float32)
    return model.decode(z)


def pca_2d(z):
    """Projection of (n, d) points onto their first two principal components."""
    centred = z - z.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def interpolation(model, x_a, x_b, steps):
    """Decodes the straight line between the posterior means of two images."""
    z_mean, _ = model.encode(np.stack([x_a, x_b]))
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    return model.decode((1 - t) * z_mean[0] + t * z_mean[1])


def model_kl_per_dim(model, x):
    """Mean KL of each latent dimension over x: (latent_dim,)."""
    z_mean, z_log_var = model.encode(x)
    return (-0.5 * (1 + z_log_var - z_mean**2 - np.exp(z_log_var))).mean(axis=0)


def traversal(model, kl_per_dim, dims, steps):
    """Rows: the `dims` dimensions with most KL, each swept from -3 to 3 with the others at 0."""
    order = np.argsort(kl_per_dim)[::-1][: min(dims, len(kl_per_dim))]
    values = np.linspace(-3.0, 3.0, steps, dtype=np.float32)
    z = np.zeros((len(order) * steps, len(kl_per_dim)), np.float32)
    for row, d in enumerate(order):
        z[row * steps : (row + 1) * steps, d] = values
    return model.decode(z)
