"""Experiment 1: decoding random codes. Autoencoder vs a VAE of the same size on Fashion-MNIST.

Both use kvae's MLP (784-200-200-L, tanh). The autoencoder has a tanh code
and a sigmoid output and minimises squared error on grey-level pixels; the
VAE has a Bernoulli likelihood and trains on pixels binarized anew each
epoch (the project's protocol). Their samples are decoder means, scored by
the Fréchet distance to the test images in a classifier's feature space.
"""

import keras
import numpy as np
from scipy import ndimage

from kvae import VAE, Autoencoder, architectures
from kvae.data import pipeline
from kvae.evaluate import ACTIVE_UNIT_THRESHOLD


def train_autoencoder(x_train, latent_dim, epochs, seed, batch_size=100, verbose=0):
    keras.utils.set_random_seed(seed)  # weight initialisation
    enc, dec = architectures.build("mlp", x_train.shape[1:], latent_dim, output_activation="sigmoid", variational=False)
    model = Autoencoder(enc, dec)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(pipeline.train_dataset(x_train, batch_size, binarize=False, seed=seed), epochs=epochs, shuffle=False, verbose=verbose)
    return model


def train_vae(x_train, latent_dim, epochs, seed, batch_size=100, verbose=0):
    keras.utils.set_random_seed(seed)
    enc, dec = architectures.build("mlp", x_train.shape[1:], latent_dim)
    model = VAE(enc, dec, likelihood="bernoulli", seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(pipeline.train_dataset(x_train, batch_size, binarize=True, seed=seed), epochs=epochs, shuffle=False, verbose=verbose)
    return model


def fitted_gaussian_codes(codes, n, seed):
    """n draws from N(mean, full covariance) of the given codes."""
    codes = np.asarray(codes, np.float64)
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(codes.mean(axis=0), np.cov(codes, rowvar=False), size=n).astype(np.float32)


def code_diagnostics(codes, seed):
    """Where the autoencoder's codes live compared with N(0, I): the likely reason its prior samples fail."""
    z = np.random.default_rng(seed).standard_normal(codes.shape)
    std = codes.std(axis=0)
    return {
        "code_std_min": float(std.min()),
        "code_std_median": float(np.median(std)),
        "code_std_max": float(std.max()),
        "code_abs_mean": float(np.abs(codes).mean()),
        "codes_saturated_fraction": float(np.mean(np.abs(codes) > 0.99)),
        "normal_coords_outside_code_range": float(np.mean(np.abs(z) >= 1.0)),
        "normal_draws_inside_code_cube": float(np.mean(np.all(np.abs(z) < 1.0, axis=1))),
    }


def active_units(z_mean, threshold=ACTIVE_UNIT_THRESHOLD):
    """Latent dimensions whose posterior mean varies over the data (Burda et al., 2015), as kvae evaluate counts them."""
    return int(np.sum(np.var(z_mean, axis=0) > threshold))


def run(splits, scorer, n_samples, latent_dim, epochs, seed, verbose=0):
    """Trains both models, draws n_samples each way, scores them with `scorer` (scoring.Scorer).

    Also scores three degraded copies of the test images themselves (blurred, and each model's
    reconstructions), which say how much of a distance blur alone accounts for.
    Returns (results dict, {name: (n, 28, 28, 1) images}, vae); the VAE is reused by the RBM comparison.
    """
    ae = train_autoencoder(splits.x_train, latent_dim, epochs, seed, verbose=verbose)
    vae = train_vae(splits.x_train, latent_dim, epochs, seed + 1, verbose=verbose)
    x_train, x_test = splits.x_train / 255.0, splits.x_test[:n_samples] / 255.0
    train_codes = ae.encode(x_train)
    normal = np.random.default_rng(seed + 2).standard_normal((n_samples, latent_dim), dtype=np.float32)
    samples = {
        "test images": x_test,
        "VAE, z ~ N(0, I)": vae.sample(n_samples, seed=seed + 3),
        "autoencoder, z ~ N(0, I)": ae.decode(normal),
        "autoencoder, z ~ N(mean, cov) of its codes": ae.decode(fitted_gaussian_codes(train_codes, n_samples, seed + 4)),
    }
    references = {
        "training images (floor)": splits.x_train[:n_samples] / 255.0,
        "test images, Gaussian blur sigma = 1 pixel": ndimage.gaussian_filter(x_test, sigma=(0, 1, 1, 0)),
        "VAE reconstructions of the test images": vae.reconstruct(x_test),
        "autoencoder reconstructions of the test images": ae.reconstruct(x_test),
    }
    scores = {name: scorer.score(images) for name, images in samples.items() if name != "test images"}
    results = {
        "n_samples": n_samples,
        "latent_dim": latent_dim,
        "epochs": epochs,
        "frechet": scores,
        "frechet_references": {name: scorer.score(images) for name, images in references.items()},
        "autoencoder_codes": code_diagnostics(train_codes, seed + 5),
        "vae_active_units": active_units(vae.encode(x_train)[0]),
    }
    return results, samples, vae
