"""The PyTorch reference: the same VAEs, the same objective, a plain training loop.

Same math as kvae: Bernoulli decoder logits, -log p(x|z) as binary
cross-entropy with logits summed over pixels, the analytic KL to N(0, I),
their sum averaged over the batch, Adam(1e-3). Images are binarized anew in
every batch (x ~ Bernoulli(pixel / 255)) and reshuffled every epoch; the last
partial batch is kept, as in kvae.data.pipeline.train_dataset.

Layouts: the MLP sees (batch, 784); the conv model NCHW (batch, 1, 28, 28),
PyTorch's native layout. Conv padding: PyTorch pads "same" symmetrically
where TF pads the extra row and column at the end; shapes and FLOPs agree.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class MLPVAE(nn.Module):
    """784-200-200-L with tanh, two linear heads; decoder L-200-200-784 with tanh."""

    def __init__(self, latent_dim=50, hidden=(200, 200), pixels=784):
        super().__init__()
        dims = [pixels, *hidden]
        self.encoder = nn.Sequential(*[m for a, b in zip(dims, dims[1:]) for m in (nn.Linear(a, b), nn.Tanh())])
        self.z_mean = nn.Linear(hidden[-1], latent_dim)
        self.z_log_var = nn.Linear(hidden[-1], latent_dim)
        dims = [latent_dim, *hidden]
        layers = [m for a, b in zip(dims, dims[1:]) for m in (nn.Linear(a, b), nn.Tanh())]
        self.decoder = nn.Sequential(*layers, nn.Linear(hidden[-1], pixels))

    def encode(self, x):
        h = self.encoder(x)
        return self.z_mean(h), self.z_log_var(h)

    def decode(self, z):
        return self.decoder(z)


class ConvVAE(nn.Module):
    """Conv 32/64 stride 2 + Dense 16 (relu); decoder Dense 7*7*64, ConvT 64/32 stride 2, ConvT 1."""

    def __init__(self, latent_dim=2, dense_units=16):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(7 * 7 * 64, dense_units), nn.ReLU(),
        )
        self.z_mean = nn.Linear(dense_units, latent_dim)
        self.z_log_var = nn.Linear(dense_units, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 7 * 7 * 64), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 3, padding=1),
        )

    def encode(self, x):
        h = self.encoder(x)
        return self.z_mean(h), self.z_log_var(h)

    def decode(self, z):
        return self.decoder(z)


def build(architecture, latent_dim):
    return MLPVAE(latent_dim) if architecture == "mlp" else ConvVAE(latent_dim)


def negative_elbo(model, x):
    """Batch mean of -log p(x|z) + KL[q(z|x) || p(z)], one z per example."""
    z_mean, z_log_var = model.encode(x)
    z = z_mean + torch.exp(0.5 * z_log_var) * torch.randn_like(z_mean)
    logits = model.decode(z)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = -0.5 * (1 + z_log_var - z_mean.square() - z_log_var.exp()).sum(1)
    return (recon + kl).mean()


class Trainer:
    """x_uint8 (n, 28, 28, 1) -> one epoch at a time of shuffled, freshly binarized batches."""

    def __init__(self, architecture, latent_dim, x_uint8, batch_size, learning_rate=1e-3, seed=0):
        torch.manual_seed(seed)
        self.model = build(architecture, latent_dim)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate)
        p = torch.from_numpy(np.ascontiguousarray(x_uint8, dtype=np.float32) / 255.0)
        self.p = p.reshape(len(p), -1) if architecture == "mlp" else p.permute(0, 3, 1, 2).contiguous()
        self.batch_size = batch_size

    def epoch(self):
        """One pass over the data; returns the mean loss (a float)."""
        self.model.train()
        order = torch.randperm(len(self.p))
        total = torch.zeros(())
        for i in range(0, len(order), self.batch_size):
            x = torch.bernoulli(self.p[order[i : i + self.batch_size]])
            loss = negative_elbo(self.model, x)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.detach() * len(x)
        return float(total) / len(order)


def keras_weights(model):
    """The MLP's weights in the order of kvae's encoder.get_weights() and decoder.get_weights().

    PyTorch's Linear keeps (out, in); Keras's Dense kernel is (in, out).
    """
    if not isinstance(model, MLPVAE):
        raise TypeError("keras_weights maps the MLP only")

    def dense(layer):
        return [layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy()]

    enc = [w for layer in model.encoder if isinstance(layer, nn.Linear) for w in dense(layer)]
    enc += dense(model.z_mean) + dense(model.z_log_var)
    dec = [w for layer in model.decoder if isinstance(layer, nn.Linear) for w in dense(layer)]
    return enc, dec


def load_keras_weights(model, encoder_weights, decoder_weights):
    """The inverse of keras_weights: Keras Dense weights into the PyTorch MLP."""
    linears = [m for m in model.encoder if isinstance(m, nn.Linear)] + [model.z_mean, model.z_log_var]
    linears += [m for m in model.decoder if isinstance(m, nn.Linear)]
    flat = list(encoder_weights) + list(decoder_weights)
    with torch.no_grad():
        for layer, (kernel, bias) in zip(linears, zip(flat[::2], flat[1::2])):
            layer.weight.copy_(torch.from_numpy(np.asarray(kernel).T))
            layer.bias.copy_(torch.from_numpy(np.asarray(bias)))
