"""Experiment 3: an RBM's Gibbs chains vs the VAE's single decoder pass.

scikit-learn's BernoulliRBM learns by persistent contrastive divergence
(stochastic maximum likelihood, Tieleman 2008) on pixels binarized anew each
epoch, as the VAE does. Sampling runs Gibbs chains from uniform binary
noise; the image after k steps is the mean p(v | h_k), just as a VAE sample
is the decoder mean p(x | z). Each chain length is scored with the same
Fréchet distance and timed; a chain of k steps costs k steps from the start.

NumPy's BLAS is held to one thread here: on a shared 2-core machine
OpenBLAS's spinning threads made small-batch training 20 times slower.
"""

import time

import numpy as np
from sklearn.neural_network import BernoulliRBM
from threadpoolctl import threadpool_limits

from kvae.data import pipeline


def train_rbm(x_train, n_components, epochs, seed, batch_size=100, learning_rate=0.01):
    """x_train uint8 (n, 28, 28, 1) -> fitted BernoulliRBM; one re-binarization and shuffle per epoch.

    learning_rate 0.01: with 0.05 chains longer than 10 steps scored worse, with 0.02 the 1,000-step
    chains all fell into one class (sneakers) — in trials with 256 hidden units and 5 to 15 epochs.
    """
    rbm = BernoulliRBM(n_components=n_components, learning_rate=learning_rate, batch_size=batch_size, random_state=seed)
    rng = np.random.default_rng(seed)
    flat = x_train.reshape(len(x_train), -1)
    with threadpool_limits(1, "blas"):
        for epoch in range(epochs):
            x = pipeline.binarize_once(flat[rng.permutation(len(flat))], seed=seed * 1000 + epoch)
            for i in range(0, len(x) - batch_size + 1, batch_size):  # full batches: the persistent chains have batch_size rows
                rbm.partial_fit(x[i : i + batch_size])
    return rbm


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def gibbs_chains(rbm, n, steps, seed, image_shape=(28, 28, 1)):
    """n chains from uniform binary noise; returns {k: (p(v|h_k) images, seconds for k steps)} for k in steps."""
    w = rbm.components_.astype(np.float32)
    b_h, b_v = rbm.intercept_hidden_.astype(np.float32), rbm.intercept_visible_.astype(np.float32)
    rng = np.random.default_rng(seed)
    v = (rng.random((n, w.shape[1]), dtype=np.float32) < 0.5).astype(np.float32)
    out, elapsed = {}, 0.0
    with threadpool_limits(1, "blas"):
        for k in range(1, max(steps) + 1):
            start = time.perf_counter()
            p_h = _sigmoid(v @ w.T + b_h)
            h = (rng.random(p_h.shape, dtype=np.float32) < p_h).astype(np.float32)
            p_v = _sigmoid(h @ w + b_v)
            v = (rng.random(p_v.shape, dtype=np.float32) < p_v).astype(np.float32)
            elapsed += time.perf_counter() - start
            if k in steps:
                out[k] = (p_v.reshape((n, *image_shape)), elapsed)
    return out


def run(splits, scorer, vae, n_samples, n_components, epochs, steps, seed):
    """Returns (results dict, {name: images} for the figure). `vae` is experiment 1's Bernoulli VAE."""
    start = time.perf_counter()
    rbm = train_rbm(splits.x_train, n_components, epochs, seed)
    train_seconds = time.perf_counter() - start
    rows, images = [], {}
    for k, (x, seconds) in gibbs_chains(rbm, n_samples, steps, seed + 1).items():
        name = f"RBM, {k} Gibbs step{'s' if k > 1 else ''}"
        rows.append(_row(name, scorer, x, seconds, n_samples))
        images[name] = x
    start = time.perf_counter()
    x = vae.sample(n_samples, seed=seed + 2)
    rows.append(_row("VAE, one decoder pass", scorer, x, time.perf_counter() - start, n_samples))
    images["VAE, one decoder pass"] = x
    results = {"n_samples": n_samples, "n_components": n_components, "epochs": epochs,
               "train_seconds": train_seconds, "rows": rows}
    return results, images


def _row(name, scorer, x, seconds, n):
    return {"sampler": name, "frechet": scorer.score(x), "seconds_per_1000": seconds * 1000.0 / n}
