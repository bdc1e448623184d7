"""The terms of the negative ELBO, per example, in nats, written with keras.ops.

Shapes: x and decoder outputs are (batch, *input_shape); latents (batch, latent_dim).
Every function returns one value per example, shape (batch,), summed over
pixels or latent dimensions, so a batch mean is the negative ELBO in nats.
"""

import math

from keras import ops

LOG_2PI = math.log(2.0 * math.pi)


def kl_per_dim(z_mean, z_log_var):
    """KL[N(mu, sigma^2) || N(0, 1)] for each latent dimension: (batch, latent_dim)."""
    return -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))


def kl_divergence(z_mean, z_log_var):
    """KL[N(mu, diag sigma^2) || N(0, I)] = -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2): (batch,)."""
    return ops.sum(kl_per_dim(z_mean, z_log_var), axis=-1)


def free_bits_kl(z_mean, z_log_var, free_bits):
    """Batch KL with a floor of `free_bits` nats per latent dimension (Kingma et al., 2016).

    Each dimension's KL is averaged over the batch, then raised to at least
    `free_bits`: below the floor it gets no gradient, which keeps the encoder
    from collapsing it to the prior early in training. Returns a scalar.
    """
    per_dim = ops.mean(kl_per_dim(z_mean, z_log_var), axis=0)
    return ops.sum(ops.maximum(per_dim, free_bits))


def _sum_over_pixels(t):
    return ops.sum(ops.reshape(t, (ops.shape(t)[0], -1)), axis=-1)


def bernoulli_nll(x, logits):
    """-log Bernoulli(x | sigmoid(logits)), the stable binary cross-entropy from logits: (batch,)."""
    per_pixel = ops.maximum(logits, 0.0) - logits * x + ops.log1p(ops.exp(-ops.abs(logits)))
    return _sum_over_pixels(per_pixel)


def gaussian_nll(x, mean, log_var):
    """-log N(x | mean, exp(log_var)) with one shared variance: (batch,).

    With log_var fixed this is the squared error ||x - f(z)||^2 / (2 sigma^2)
    of the classic derivation plus a constant, so it is still a density in nats.
    """
    per_pixel = 0.5 * (ops.square(x - mean) * ops.exp(-log_var) + log_var + LOG_2PI)
    return _sum_over_pixels(per_pixel)


def squared_error(x, x_hat):
    """||x - x_hat||^2 per example: (batch,). The autoencoder's objective."""
    return _sum_over_pixels(ops.square(x - x_hat))
