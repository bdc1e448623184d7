"""Pictures of a run, as PNG files (matplotlib, Agg backend, no display needed)."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kvae_contract import images as contract_images  # noqa: E402


def tile(images, ncols=None):
    """(n, h, w, c) in [0, 1] -> one float32 (rows*(h+1)-1, ncols*(w+1)-1, c) mosaic with 1-pixel white gaps."""
    return contract_images.tile(np.asarray(images, np.float32), ncols, gap=1, margin=0, fill=1.0)


def _show(ax, mosaic):
    if mosaic.shape[-1] == 1:
        ax.imshow(mosaic[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.clip(mosaic, 0, 1), interpolation="nearest")
    ax.set_axis_off()


def save_grid(images, path, title=None, ncols=None, row_names=None):
    """A grid of images, e.g. decoded samples from the prior; `row_names` label the rows on the left."""
    mosaic = tile(images, ncols)
    fig, ax = plt.subplots(figsize=(6, 6 * mosaic.shape[0] / mosaic.shape[1] + (0.4 if title else 0)))
    _show(ax, mosaic)
    if row_names:
        h = np.shape(images)[1]
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([r * (h + 1) + h / 2 for r in range(len(row_names))], row_names, fontsize=8)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        ax.set_title(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def save_reconstructions(x, x_hat, path, title="inputs (left) and reconstructions (right)"):
    """Each input beside its reconstruction, in pairs of columns."""
    pairs = np.stack([x, x_hat], axis=1).reshape((-1,) + x.shape[1:])
    save_grid(pairs, path, title=title, ncols=2 * math.ceil(math.sqrt(len(x) / 2)))


def save_history(rows, path):
    """Training curves: loss, reconstruction and KL (and their validation values)."""
    keys = [("loss", "loss"), ("reconstruction_loss", "reconstruction"), ("kl_loss", "KL")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    epochs = [r["epoch"] + 1 for r in rows]
    for ax, (key, label) in zip(axes, keys):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [r.get(prefix + key) for r in rows]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, marker="o", label=(prefix or "train_").rstrip("_"))
        ax.set_title(f"{label} (nats)")
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_scatter(points, labels, path, title, class_names=None):
    """2-D points coloured by class, e.g. test z_mean or its projection."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=3, alpha=0.7)
    handles, _ = sc.legend_elements()
    names = class_names or [str(c) for c in np.unique(labels)]
    ax.legend(handles, names[: len(handles)], fontsize=7, markerscale=1.2, loc="best")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
