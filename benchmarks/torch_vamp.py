"""The PyTorch reference of `kvae train --preset fashion-vamp`: VampPrior, IWAE k = 5, gated MLP.

The recipe is read from the same dict as kvae's TrainConfig (kvae.config.PRESETS["fashion-vamp"]):

* Encoder 784-300-300 of gated dense layers, h = (x W_h + b_h) * sigmoid(x W_g + b_g)
  with one fused (in, 2 * units) kernel, linear half first (as kvae.layers.GatedDense);
  heads z_mean and z_log_var, the latter clipped to `log_var_bounds`. Decoder
  latent-300-300 gated, then a linear layer to 784 Bernoulli logits.
* VampPrior: p(z) = (1/K) sum_k N(z | mu_k, diag exp(log_var_k)), (mu_k, log_var_k) the
  encoder's posterior of pseudo-input u_k, clipped to [0, 1] where used; u starts as K
  distinct training images / 255, rows drawn with np.random.default_rng(seed).choice(n, K,
  replace=False), sorted (as kvae.train.init_pseudo_inputs). The mixture is computed with
  three matmuls, as kvae.priors.component_log_densities does.
* Objective: -mean_b log (1/k) sum_i w_i, log w_i = log p(x|z_i) + kl_weight (log p(z_i) -
  log q(z_i|x)), k draws per example laid out sample-major (row s * b + i is draw s of
  example i), as kvae.vae.VAE.importance_weighted.
* KL weight warm-up: epoch e (0-based) uses min(1, (e + 1) / warmup_epochs) (kvae.callbacks.KLWarmup).
* Adam, Keras's epsilon (1e-7), learning rate on keras.optimizers.schedules.CosineDecay's
  curve: step t (0-based) uses lr * (1 + cos(pi * min(t, T) / T)) / 2, T = epochs * batches
  per epoch, over the whole recipe's epochs (kvae.train.learning_rate). PyTorch's Adam puts
  epsilon after the bias correction of sqrt(v), Keras's before: the same update up to
  epsilon's scale, which differs by sqrt(1 - beta_2^t) (1 after the first few thousand steps).
* Initialization as Keras's defaults: Glorot-uniform kernels (the gated layers over their
  fused (in, 2 * units) shape), zero biases.
* Data: shuffled every epoch, binarized anew in every batch (x ~ Bernoulli(pixel / 255)),
  last partial batch kept.

The one liberty taken for speed: a training step runs the encoder once on the batch and the
pseudo-inputs together (kvae calls it twice); the numbers are the same.
`tests/test_benchmarks.py` checks that this module's loss and gradients equal kvae's on the
same weights and the same noise.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2.0 * math.pi)
KERAS_ADAM_EPSILON = 1e-7


class GatedDense(nn.Module):
    """h = (x W_h + b_h) * sigmoid(x W_g + b_g) with one Linear(in, 2 * units): rows [:units] linear, [units:] gate."""

    def __init__(self, in_features, units):
        super().__init__()
        self.units = units
        self.linear = nn.Linear(in_features, 2 * units)

    def forward(self, x):
        h, gate = self.linear(x).split(self.units, dim=1)
        return h * torch.sigmoid(gate)


class VampVAE(nn.Module):
    """Gated MLP encoder/decoder, Bernoulli logits, VampPrior over K pseudo-inputs (K, pixels)."""

    def __init__(self, latent_dim=40, hidden=(300, 300), num_pseudo_inputs=500, log_var_bounds=(-6.0, 2.0), pixels=784):
        super().__init__()
        dims = [pixels, *hidden]
        self.encoder = nn.Sequential(*[GatedDense(a, b) for a, b in zip(dims, dims[1:])])
        self.z_mean = nn.Linear(hidden[-1], latent_dim)
        self.z_log_var = nn.Linear(hidden[-1], latent_dim)
        self.log_var_bounds = None if log_var_bounds is None else tuple(float(v) for v in log_var_bounds)
        dims = [latent_dim, *hidden[::-1]]
        self.decoder = nn.Sequential(*[GatedDense(a, b) for a, b in zip(dims, dims[1:])])
        self.output = nn.Linear(dims[-1], pixels)
        self.pseudo_inputs = nn.Parameter(torch.rand(num_pseudo_inputs, pixels))
        self.latent_dim = latent_dim
        for m in self.modules():
            if isinstance(m, nn.Linear):
                glorot_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def encode(self, x):
        h = self.encoder(x)
        log_var = self.z_log_var(h)
        if self.log_var_bounds is not None:
            log_var = log_var.clamp(*self.log_var_bounds)
        return self.z_mean(h), log_var

    def decode(self, z):
        return self.output(self.decoder(z))

    def prior_components(self):
        """(means, log_vars), each (K, latent_dim): the posteriors of the clipped pseudo-inputs."""
        return self.encode(self.pseudo_inputs.clamp(0.0, 1.0))

    def encode_with_prior(self, x):
        """(z_mean, z_log_var) of x and the prior's (means, log_vars), one encoder pass over both."""
        mean, log_var = self.encode(torch.cat([x, self.pseudo_inputs.clamp(0.0, 1.0)]))
        b = len(x)
        return (mean[:b], log_var[:b]), (mean[b:], log_var[b:])


def glorot_uniform_(weight):
    """Keras's glorot_uniform on a PyTorch (out, in) weight: U(-l, l), l = sqrt(6 / (in + out))."""
    fan_out, fan_in = weight.shape
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return weight.uniform_(-limit, limit)


def log_normal_diag(z, mean, log_var):
    """log N(z | mean, diag exp(log_var)): (n,)."""
    return -0.5 * (LOG_2PI + log_var + (z - mean).square() * torch.exp(-log_var)).sum(-1)


def log_mixture(z, means, log_vars):
    """log (1/K) sum_k N(z | mu_k, diag exp(log_var_k)) for z (n, d): (n,), with matmuls as kvae.priors."""
    precision = torch.exp(-log_vars)  # (K, d)
    quadratic = z.square() @ precision.T - 2.0 * (z @ (means * precision).T) + (means.square() * precision).sum(-1)
    log_comp = -0.5 * (quadratic + log_vars.sum(-1) + z.shape[-1] * LOG_2PI)  # (n, K)
    return torch.logsumexp(log_comp, dim=-1) - math.log(len(means))


def iwae_loss(model, x, eps, kl_weight=1.0):
    """-mean_b log (1/k) sum_i w_i for x (b, pixels) and noise eps (k * b, latent), sample-major."""
    k = len(eps) // len(x)
    (z_mean, z_log_var), (means, log_vars) = model.encode_with_prior(x)
    mean_k, log_var_k = z_mean.repeat(k, 1), z_log_var.repeat(k, 1)  # (k * b, d): row s * b + i
    z = mean_k + torch.exp(0.5 * log_var_k) * eps
    logits = model.decode(z)
    recon = F.binary_cross_entropy_with_logits(logits, x.repeat(k, 1), reduction="none").sum(1)  # -log p(x|z_i)
    kl = log_normal_diag(z, mean_k, log_var_k) - log_mixture(z, means, log_vars)  # log q - log p
    log_w = -(recon + kl_weight * kl).view(k, -1)  # (k, b)
    return -(torch.logsumexp(log_w, dim=0) - math.log(k)).mean()


def kl_weight(epoch, warmup_epochs, beta=1.0):
    """kvae.callbacks.KLWarmup: beta * min(1, (epoch + 1) / warmup_epochs); beta without a warm-up."""
    return beta * min(1.0, (epoch + 1) / warmup_epochs) if warmup_epochs else beta


def cosine_learning_rate(step, initial, decay_steps):
    """keras.optimizers.schedules.CosineDecay(initial, decay_steps) at `step` (alpha 0, no warm-up)."""
    return initial * 0.5 * (1.0 + math.cos(math.pi * min(step, decay_steps) / decay_steps))


def initial_pseudo_inputs(x_uint8, num_pseudo_inputs, seed):
    """K distinct training images / 255, (K, pixels) float32, chosen as kvae.train.init_pseudo_inputs."""
    if len(x_uint8) < num_pseudo_inputs:
        raise ValueError(f"{num_pseudo_inputs} pseudo-inputs need as many training images; there are {len(x_uint8)}")
    rows = np.sort(np.random.default_rng(seed).choice(len(x_uint8), num_pseudo_inputs, replace=False))
    return np.asarray(x_uint8)[rows].reshape(num_pseudo_inputs, -1).astype(np.float32) / 255.0


def build(recipe):
    """The model a kvae TrainConfig dict (the fashion-vamp preset's keys) describes, untrained."""
    return VampVAE(recipe["latent_dim"], tuple(recipe["mlp_hidden_units"]), recipe["num_pseudo_inputs"],
                   recipe.get("log_var_bounds"))


class Trainer:
    """One epoch at a time of the fashion-vamp recipe on x_uint8 (n, 28, 28, 1)."""

    def __init__(self, recipe, x_uint8, seed=0):
        expected = {"architecture": "mlp", "mlp_layer": "gated", "prior": "vamp", "objective": "iwae",
                    "likelihood": "bernoulli", "lr_schedule": "cosine"}
        wrong = {k: recipe.get(k) for k, v in expected.items() if recipe.get(k) != v}
        if wrong or recipe.get("beta", 1.0) != 1.0:
            raise ValueError(f"torch_vamp implements {expected} with beta 1. Received: {wrong}")
        torch.manual_seed(seed)
        self.model = build(recipe)
        with torch.no_grad():
            start = initial_pseudo_inputs(x_uint8, recipe["num_pseudo_inputs"], seed)
            self.model.pseudo_inputs.copy_(torch.from_numpy(start))
        self.learning_rate = recipe["learning_rate"]
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.learning_rate, eps=KERAS_ADAM_EPSILON)
        self.p = torch.from_numpy(np.ascontiguousarray(x_uint8, dtype=np.float32).reshape(len(x_uint8), -1) / 255.0)
        self.batch_size = recipe["batch_size"]
        self.iw_samples = recipe["iw_samples"]
        self.warmup_epochs = recipe.get("warmup_epochs", 0)
        self.decay_steps = recipe["epochs"] * -(-len(self.p) // self.batch_size)
        self.step = 0
        self.epochs_done = 0

    def epoch(self):
        """One pass over the data; returns the mean training loss (a float)."""
        self.model.train()
        weight = kl_weight(self.epochs_done, self.warmup_epochs)
        order = torch.randperm(len(self.p))
        total = torch.zeros(())
        latent = self.model.latent_dim
        for i in range(0, len(order), self.batch_size):
            x = torch.bernoulli(self.p[order[i : i + self.batch_size]])
            for group in self.optimizer.param_groups:
                group["lr"] = cosine_learning_rate(self.step, self.learning_rate, self.decay_steps)
            loss = iwae_loss(self.model, x, torch.randn(self.iw_samples * len(x), latent), weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            total += loss.detach() * len(x)
        self.epochs_done += 1
        return float(total) / len(order)

    def state(self):
        """What a new Trainer needs to continue exactly where this one is (torch.save-able).

        The epoch's shuffle, binarization and noise come from PyTorch's global
        generator, so its state travels too.
        """
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "epochs_done": self.epochs_done, "rng": torch.get_rng_state()}

    def restore(self, state):
        """The inverse of state(): this Trainer continues as the one that saved it would have."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epochs_done = state["step"], state["epochs_done"]
        torch.set_rng_state(state["rng"])


# Keras names of the layers, in the order of kvae.architectures' gated MLP.
ENCODER_LAYERS = ("gated_0", "gated_1", "z_mean", "z_log_var_unbounded")
DECODER_LAYERS = ("gated_0", "gated_1", "output")


def _linears(model):
    enc = [g.linear for g in model.encoder] + [model.z_mean, model.z_log_var]
    dec = [g.linear for g in model.decoder] + [model.output]
    return ([(f"encoder/{n}", m) for n, m in zip(ENCODER_LAYERS, enc)]
            + [(f"decoder/{n}", m) for n, m in zip(DECODER_LAYERS, dec)])


def keras_weights(model, grads=False):
    """{"encoder/LAYER/kernel" | ".../bias" | "pseudo_inputs": array} in Keras's layouts.

    Kernels are (in, out), PyTorch's Linear (out, in); pseudo-inputs (K, 28, 28, 1).
    `grads`: the parameters' gradients instead of their values, in the same layout.
    """
    value = (lambda p: p.grad) if grads else (lambda p: p)
    out = {}
    for name, layer in _linears(model):
        out[f"{name}/kernel"] = value(layer.weight).detach().numpy().T.copy()
        out[f"{name}/bias"] = value(layer.bias).detach().numpy().copy()
    out["pseudo_inputs"] = value(model.pseudo_inputs).detach().numpy().reshape(-1, 28, 28, 1).copy()
    return out


def load_keras_weights(model, weights):
    """The inverse of keras_weights: a name -> Keras-layout array dict into the PyTorch model."""
    with torch.no_grad():
        for name, layer in _linears(model):
            layer.weight.copy_(torch.from_numpy(np.asarray(weights[f"{name}/kernel"]).T))
            layer.bias.copy_(torch.from_numpy(np.asarray(weights[f"{name}/bias"])))
        pseudo_inputs = np.asarray(weights["pseudo_inputs"]).reshape(len(model.pseudo_inputs), -1)
        model.pseudo_inputs.copy_(torch.from_numpy(pseudo_inputs))
