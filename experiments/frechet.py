"""The Fréchet distance between two Gaussians, and between two sets of features.

    d^2 = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

(Dowson & Landau, 1982; as "FID" in Heusel et al., 2017). The trace of the
matrix square root is computed from eigen-decompositions of symmetric
matrices only: (S_1 S_2)^(1/2) is similar to (A S_2 A)^(1/2) with A = S_1^(1/2),
and A S_2 A is symmetric positive semi-definite, so

    tr (S_1 S_2)^(1/2) = sum_i sqrt(lambda_i(A S_2 A)).

No complex parts to discard, as with scipy.linalg.sqrtm on a non-symmetric product.
"""

import numpy as np

from kvae_contract.errors import ConfigError


def gaussian_stats(features):
    """(n, d) features -> (mean (d,), covariance (d, d)), in float64, unbiased covariance."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ConfigError(f"`features` must be (n, d) with n >= 2. Received: shape={f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def psd_sqrt(s):
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(s1, s2):
    """tr (S_1 S_2)^(1/2) for symmetric PSD S_1, S_2."""
    a = psd_sqrt(s1)
    w = np.linalg.eigvalsh(a @ s2 @ a)
    return float(np.sum(np.sqrt(np.clip(w, 0.0, None))))


def frechet_distance(mu1, s1, mu2, s2):
    """The squared Fréchet (2-Wasserstein) distance between N(mu1, s1) and N(mu2, s2); >= 0."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ConfigError(f"Shapes do not fit: mu {mu1.shape} {mu2.shape}, covariances {s1.shape} {s2.shape}")
    d = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    return max(d, 0.0)  # rounding can leave a tiny negative number for identical inputs


def frechet_from_features(a, b):
    """The Fréchet distance between Gaussians fitted to two (n, d) feature sets."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
