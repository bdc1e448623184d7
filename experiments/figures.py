"""The report's pictures, as PNG files (matplotlib, Agg backend)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kvae.plots import tile  # noqa: E402


def save_grids(named_images, path, n=64, ncols=8):
    """Image grids side by side, one panel per name: {title: (n, 28, 28, 1) in [0, 1]}."""
    fig, axes = plt.subplots(1, len(named_images), figsize=(3.2 * len(named_images), 3.6))
    for ax, (title, images) in zip(np.atleast_1d(axes), named_images.items()):
        ax.imshow(tile(np.clip(images[:n], 0, 1), ncols)[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_ring(data, samples, path, n=3000):
    """Scatter of data vs generated points, and the histograms of their radii."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.6))
    a.scatter(data[:n, 0], data[:n, 1], s=2, alpha=0.5, label="data g(z)")
    a.scatter(samples[:n, 0], samples[:n, 1], s=2, alpha=0.5, label="VAE decoder mean, z ~ N(0, I)")
    a.set_aspect("equal")
    a.legend(fontsize=8, markerscale=4, loc="upper right")
    a.set_title("points")
    bins = np.linspace(0, 2, 81)
    b.hist(np.linalg.norm(data, axis=1), bins=bins, alpha=0.6, density=True, label="data")
    b.hist(np.linalg.norm(samples, axis=1), bins=bins, alpha=0.6, density=True, label="VAE samples")
    b.set_xlabel("radius ||x||")
    b.legend(fontsize=8)
    b.set_title("radii")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
