"""Test-set evaluation of a trained VAE: negative ELBO, importance-weighted NLL, latent usage.

The NLL is the importance-weighted bound of Burda et al. (2015),
log p(x) ~ log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x), which tightens
toward log p(x) as k grows; papers report it with k = 5000. Samples come from
NumPy's PCG64(seed), not from the model's training-time random state, so an
evaluation repeats exactly. Memory stays bounded: images go in batches and
their k samples in chunks, with a running log-sum-exp.
"""

import math

import keras
import numpy as np
from keras import ops

from kvae import losses

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al.: Cov_x(E_q[z_d]) above 1e-2


def evaluate(model, x, y=None, k=5000, seed=0, batch_size=100, chunk_size=None, verbose=1):
    """Evaluates `model` on x (n, *input_shape), already prepared (binarized if Bernoulli).

    Returns a dict of floats (nats per image unless named otherwise).
    `chunk_size` caps the number of latent samples decoded at once, per
    image; by default batch_size * chunk_size is about 100,000. A
    conditional model needs the labels y and gives -log p(x|y).
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be a positive int. Received: k={k!r}")
    x = np.asarray(x, np.float32)
    y_one_hot = model.labels_for(y if model.num_classes is not None else None, len(x))  # (n, C) or None
    chunk_size = chunk_size or max(1, min(k, 100_000 // batch_size))
    rng = np.random.default_rng(seed)
    n, dims = len(x), math.prod(x.shape[1:])
    nll, recon, kl_dim, z_means = [], [], [], []
    progress = keras.utils.Progbar(n, unit_name="image") if verbose else None
    for start in range(0, n, batch_size):
        xb = x[start : start + batch_size]
        yb = None if y_one_hot is None else y_one_hot[start : start + batch_size]
        z_mean, z_log_var = (ops.convert_to_numpy(t) for t in model.run_encoder(xb, yb))
        log_px, mean_recon = _importance_weighted(model, xb, yb, z_mean, z_log_var, k, chunk_size, rng)
        nll.append(-log_px)
        recon.append(mean_recon)
        kl_dim.append(ops.convert_to_numpy(losses.kl_per_dim(z_mean, z_log_var)))
        z_means.append(z_mean)
        if progress:
            progress.add(len(xb))
    nll, recon = np.concatenate(nll), np.concatenate(recon)
    kl_dim, z_means = np.concatenate(kl_dim), np.concatenate(z_means)
    kl = kl_dim.sum(axis=1)
    activity = z_means.var(axis=0)
    result = {
        "num_examples": n,
        "k": k,
        "seed": seed,
        "nll": float(nll.mean()),
        "nll_stderr": float(nll.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
        "bits_per_dim": float(nll.mean() / (dims * math.log(2))),
        "negative_elbo": float((recon + kl).mean()),
        "reconstruction_loss": float(recon.mean()),
        "kl_loss": float(kl.mean()),
        "active_units": int((activity > ACTIVE_UNIT_THRESHOLD).sum()),
        "latent_dim": int(z_means.shape[1]),
        "kl_per_dim": [float(v) for v in kl_dim.mean(axis=0)],
        "activity_per_dim": [float(v) for v in activity],
    }
    if y is not None:
        result["labels_seen"] = int(len(np.unique(y)))
    return result


def _importance_weighted(model, x, y, z_mean, z_log_var, k, chunk_size, rng):
    """log p(x) estimates (b,) and E_q[-log p(x|z)] (b,), streaming over k samples (y: one-hot labels or None)."""
    b, d = z_mean.shape
    running_max = np.full(b, -np.inf)
    running_sum = np.zeros(b)  # sum exp(log w - running_max)
    recon_sum = np.zeros(b)
    x_rep = None
    for done in range(0, k, chunk_size):
        c = min(chunk_size, k - done)
        eps = rng.standard_normal((b, c, d), dtype=np.float32)
        z = z_mean[:, None] + np.exp(0.5 * z_log_var)[:, None] * eps  # (b, c, d)
        out = model.run_decoder(z.reshape(b * c, d), None if y is None else np.repeat(y, c, axis=0))
        if x_rep is None or len(x_rep) != b * c:
            x_rep = np.repeat(x, c, axis=0)  # (b * c, *input_shape)
        log_px_z = -ops.convert_to_numpy(model.reconstruction_nll(x_rep, out)).reshape(b, c).astype(np.float64)
        log_pz = -0.5 * (z.astype(np.float64) ** 2 + math.log(2 * math.pi)).sum(-1)
        log_qz = -0.5 * (eps.astype(np.float64) ** 2 + z_log_var[:, None] + math.log(2 * math.pi)).sum(-1)
        log_w = log_px_z + log_pz - log_qz  # (b, c)
        new_max = np.maximum(running_max, log_w.max(axis=1))
        running_sum = running_sum * np.exp(running_max - new_max) + np.exp(log_w - new_max[:, None]).sum(axis=1)
        running_max = new_max
        recon_sum += -log_px_z.sum(axis=1)
    return running_max + np.log(running_sum) - math.log(k), recon_sum / k


def format_table(result):
    """A short human-readable table of an evaluation result."""
    rows = [
        ("test images", f"{result['num_examples']}"),
        (f"NLL (IWAE, k={result['k']})", f"{result['nll']:.2f} ± {result['nll_stderr']:.2f} nats"),
        ("bits per dimension", f"{result['bits_per_dim']:.4f}"),
        ("negative ELBO", f"{result['negative_elbo']:.2f} nats"),
        ("  reconstruction", f"{result['reconstruction_loss']:.2f} nats"),
        ("  KL", f"{result['kl_loss']:.2f} nats"),
        ("active units", f"{result['active_units']} of {result['latent_dim']}"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    top = np.argsort(result["kl_per_dim"])[::-1][:8]
    lines.append(f"{'KL of top dims':<{width}}  " + ", ".join(f"z{i}: {result['kl_per_dim'][i]:.2f}" for i in top))
    return "\n".join(lines)
