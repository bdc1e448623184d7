"""The variational autoencoder as a subclassed Keras model.

Training is plain `compile(optimizer=...)` + `fit(x)`: `call` adds the
reconstruction term and the (weighted) KL term with `add_loss`, and
`compute_loss` tracks both as metrics. No `train_step`, no GradientTape, only
`keras.ops`, so the model is not tied to one backend.
"""

import keras
import numpy as np
from keras import ops

from kvae import conditional, losses, priors, submodels
from kvae.variational import VariationalModel, iw_bound
from kvae_contract.artifacts import draw_prior_noise
from kvae_contract.errors import ConfigError


@keras.saving.register_keras_serializable(package="kvae")
class VAE(VariationalModel):
    """A VAE with encoder q(z|x) = N(z_mean, exp(z_log_var)) and decoder p(x|z).

    Args:
        encoder: Keras model, x (batch, *input_shape) -> [z_mean, z_log_var],
            each (batch, latent_dim).
        decoder: Keras model, z (batch, latent_dim) -> (batch, *input_shape):
            logits for "bernoulli", means for "gaussian".
        likelihood: "bernoulli" (binary pixels) or "gaussian".
        beta: weight of the KL term (1.0 gives the ELBO).
        free_bits: KL floor in nats per latent dimension; 0 disables it.
        gaussian_variance: "learned", or a fixed pixel variance > 0 (gaussian only).
        seed: int or None, seed of the sampling layer's noise.
        num_classes: None, or C >= 2 for a conditional VAE q(z|x, y), p(x|z, y):
            then the encoder maps [x, y] and the decoder [z, y], y being
            float32 one-hot (batch, C), and the model's inputs are the dict
            {"x": images, "y": labels} (labels: class ids or one-hot rows;
            see kvae/conditional.py).
        prior: "normal" for N(0, I), or "vamp" for the VampPrior (Tomczak &
            Welling, 2018): p(z) = (1/K) sum_k q(z | u_k) over K trainable
            pseudo-inputs u_k (the weight `pseudo_inputs`, (K, *input_shape),
            clipped to [0, 1] where used). The KL term then becomes the
            one-sample estimate log q(z|x) - log p(z).
        num_pseudo_inputs: K, for prior="vamp".
        objective: "elbo", or "iwae" for the importance-weighted bound of
            Burda et al. (2015), -log (1/k) sum_i w_i with k = `iw_samples`
            draws per example and w_i = p(x|z_i) p(z_i) / q(z_i|x); the KL
            weight multiplies log p(z_i) - log q(z_i|x) during a warm-up.
            With k = 1 it is the one-sample negative ELBO.
        iw_samples: k, for objective="iwae".

    Called on x (or {"x", "y"}) it returns a dict: "reconstruction" (decoder
    output), "z_mean", "z_log_var", "z", and per example in nats
    "reconstruction_nll" (-log p(x|z)) and "kl".

    Mixed precision: under a "mixed_*" dtype policy the encoder and decoder
    compute in 16 bits, while the sampling, the KL and the likelihood are
    computed in float32 (the VAE does not autocast its own inputs or weights).
    """

    def __init__(
        self,
        encoder,
        decoder,
        likelihood="bernoulli",
        beta=1.0,
        free_bits=0.0,
        gaussian_variance="learned",
        seed=None,
        num_classes=None,
        prior="normal",
        num_pseudo_inputs=500,
        objective="elbo",
        iw_samples=1,
        **kwargs,
    ):
        super().__init__(
            likelihood=likelihood, beta=beta, free_bits=free_bits, gaussian_variance=gaussian_variance, seed=seed,
            prior=prior, num_pseudo_inputs=num_pseudo_inputs, objective=objective, iw_samples=iw_samples, **kwargs,
        )
        self.encoder = encoder
        self.decoder = decoder
        if num_classes is not None and not (isinstance(num_classes, int) and num_classes >= 2):
            raise ConfigError(f"`num_classes` must be None or an int >= 2. Received: num_classes={num_classes!r}")
        self.num_classes = num_classes
        self.latent_dim = check_signatures(encoder, decoder, num_classes)
        if prior == "vamp" and num_classes is not None:
            raise ConfigError(f"The VampPrior is for unconditional VAEs. Received: prior='vamp', num_classes={num_classes!r}")
        self.input_shape_ = tuple(int(d) for d in encoder.inputs[0].shape[1:])
        if prior == "vamp":
            self.add_pseudo_inputs(self.input_shape_)  # before the objective's state: the saved weights' order
        self.add_objective_state()

    def call(self, inputs, training=False):
        x, y = self.split_inputs(inputs)
        z_mean, z_log_var = self.run_encoder(x, y, training=training)
        if self.objective == "iwae":
            return self.importance_weighted(x, y, z_mean, z_log_var, training)
        z = self.sampling([z_mean, z_log_var])
        reconstruction = self.run_decoder(z, y, training=training)
        # Both terms of the objective go through add_loss, so Keras aggregates
        # them (and scales them under tf.distribute) like any other layer loss.
        recon = self.reconstruction_nll(x, reconstruction)
        if self.prior == "normal":
            kl = losses.kl_divergence(z_mean, z_log_var)  # closed form
        else:
            kl = priors.log_normal_diag(z, z_mean, z_log_var) - self.log_prior(z)  # one-sample estimate
        if self.free_bits > 0:
            penalty = losses.free_bits_kl(z_mean, z_log_var, self.free_bits)
        else:
            penalty = ops.mean(kl)
        self.add_loss(ops.mean(recon))
        self.add_loss(self.kl_weight * penalty)
        return {
            "reconstruction": reconstruction,
            "z_mean": z_mean,
            "z_log_var": z_log_var,
            "z": z,
            "reconstruction_nll": recon,
            "kl": kl,
        }

    def importance_weighted(self, x, y, z_mean, z_log_var, training=False):
        """The IWAE objective: k = iw_samples draws per example, one add_loss of -log (1/k) sum_i w_i.

        Rows are sample-major: row s * batch + i holds draw s of example i.
        """
        k = self.iw_samples
        tile = lambda t: ops.tile(t, (k,) + (1,) * (len(t.shape) - 1))  # (b, ...) -> (k * b, ...)
        mean_k, log_var_k = tile(z_mean), tile(z_log_var)
        z = self.sampling([mean_k, log_var_k])  # (k * b, d)
        reconstruction = self.run_decoder(z, None if y is None else tile(y), training=training)
        recon = self.reconstruction_nll(tile(x), reconstruction)  # -log p(x|z_i), (k * b,)
        kl = priors.log_normal_diag(z, mean_k, log_var_k) - self.log_prior(z)  # log q - log p, (k * b,)
        self.add_iw_loss(ops.reshape(-(recon + self.kl_weight * kl), (k, -1)))  # log w: (k, b)
        batch = ops.shape(z_mean)[0]
        return {
            "reconstruction": reconstruction[:batch],
            "z_mean": z_mean,
            "z_log_var": z_log_var,
            "z": z[:batch],
            "reconstruction_nll": ops.mean(ops.reshape(recon, (k, -1)), axis=0),
            "kl": ops.mean(ops.reshape(kl, (k, -1)), axis=0),
            # The bound at KL weight 1, what a test NLL estimate would use.
            "iw_bound": iw_bound(ops.reshape(-(recon + kl), (k, -1))),
        }

    def prior_components(self):
        """VampPrior: (means, log_vars), each (K, latent_dim): the encoder's posteriors of the pseudo-inputs."""
        if self.prior != "vamp":
            raise ConfigError(f"Only the VampPrior has components. Received: prior={self.prior!r}")
        return self.run_encoder(ops.clip(self.pseudo_inputs, 0.0, 1.0))

    def log_prior(self, z):
        """log p(z) under the model's prior, z (n, latent_dim) -> (n,), float32."""
        if self.prior == "normal":
            return priors.log_standard_normal(z)
        means, log_vars = self.prior_components()
        return priors.log_mixture(z, means, log_vars)

    def split_inputs(self, inputs):
        """Model inputs -> (x, y): y is float32 one-hot (batch, C) for a conditional VAE, else None."""
        if self.num_classes is None:
            return (inputs["x"] if isinstance(inputs, dict) else inputs), None
        if not (isinstance(inputs, dict) and {"x", "y"} <= set(inputs)):
            raise ConfigError(
                f"A conditional VAE (num_classes={self.num_classes}) takes the dict {{'x': images, 'y': labels}}; "
                "for a tf.data.Dataset of (x, y) pairs use kvae.conditional.with_labels(dataset). "
                f"Received: {type(inputs).__name__}"
                + (f" with keys {sorted(inputs)}" if isinstance(inputs, dict) else "")
            )
        return inputs["x"], conditional.one_hot(inputs["y"], self.num_classes)

    def run_encoder(self, x, y=None, training=False):
        """x (batch, *input_shape) [and one-hot y (batch, C)] -> (z_mean, z_log_var), float32 (batch, latent_dim)."""
        z_mean, z_log_var = self.encoder(x if y is None else [x, y], training=training)
        return ops.cast(z_mean, "float32"), ops.cast(z_log_var, "float32")

    def run_decoder(self, z, y=None, training=False):
        """z (batch, latent_dim) [and one-hot y (batch, C)] -> the decoder output in float32 (batch, *input_shape)."""
        return ops.cast(self.decoder(z if y is None else [z, y], training=training), "float32")

    # Inference helpers on NumPy arrays. Deterministic unless they say otherwise.
    # `labels` (conditional VAEs only, required there): an int, n class ids or
    # (n, C) one-hot rows; see kvae.conditional.one_hot_numpy.

    def encode(self, x, labels=None, batch_size=512):
        """x (n, *input_shape) in [0, 1] -> (z_mean, z_log_var), each (n, latent_dim)."""
        y = self.labels_for(labels, len(x))
        outputs = submodels.batched(lambda x, y: self.run_encoder(x, y), x, y, batch_size)
        return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])

    def decode(self, z, labels=None, batch_size=512):
        """z (n, latent_dim) -> x_mean (n, *input_shape), the mean of p(x|z[, y])."""
        y = self.labels_for(labels, len(z))
        outputs = submodels.batched(lambda z, y: self.run_decoder(z, y), z, y, batch_size)
        return np.concatenate([self.output_mean(o) for o in outputs])

    def labels_for(self, labels, n):
        """NumPy labels -> float32 one-hot (n, C) for a conditional VAE; None for an unconditional one."""
        if self.num_classes is None:
            if labels is not None:
                raise ConfigError(f"This VAE is not conditional (num_classes=None). Received: labels={labels!r}")
            return None
        if labels is None:
            raise ConfigError(f"A conditional VAE (num_classes={self.num_classes}) needs `labels`. Received: labels=None")
        return conditional.one_hot_numpy(labels, self.num_classes, n)

    def sample(self, n, seed=None, temperature=1.0, labels=None):
        """n images decoded from prior draws z made with NumPy's PCG64(seed).

        N(0, I) prior: z = temperature * eps. VampPrior: eps first, then the
        components c ~ U{0..K-1}, and z = mu_c + temperature * exp(log_var_c / 2) * eps.
        The same seed gives the same z as the onnxruntime runtime in serving/.
        Conditional VAEs decode each z with its label: an int (one class for
        all), n labels, or by default 0, 1, ..., C-1, 0, 1, ... (every class in turn).
        """
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"`n` must be a positive int. Received: n={n!r}")
        if self.num_classes is not None and labels is None:
            labels = conditional.cycling_labels(n, self.num_classes)
        return self.decode(self.sample_prior(n, seed, temperature), labels)

    def sample_prior(self, n, seed=None, temperature=1.0):
        """n latent codes from the prior, (n, latent_dim) float32, drawn as `sample` describes.

        The noise is the contract's seeded draw (kvae_contract.artifacts.draw_prior_noise), as in serving/.
        """
        num_components = self.num_pseudo_inputs if self.prior == "vamp" else None
        eps, component = draw_prior_noise(n, self.latent_dim, seed, num_components)
        if self.prior == "normal":
            return temperature * eps
        means, log_vars = (ops.convert_to_numpy(t) for t in self.prior_components())
        return means[component] + np.float32(temperature) * np.exp(0.5 * log_vars[component]) * eps

    def reconstruct(self, x, labels=None):
        """Decodes the posterior mean: x -> x_mean, deterministic."""
        return self.decode(self.encode(x, labels)[0], labels)

    # === Evaluation (kvae.evaluate): float64 NumPy ===

    def posterior_summary(self, x, y=None):
        """Per image: the posterior means (b, d) and each dimension's KL against N(0, I) in nats (b, d).

        For a VampPrior the KL against N(0, I) is not its KL term but still measures each latent's usage.
        """
        z_mean, z_log_var = self.run_encoder(x, y)
        return ops.convert_to_numpy(z_mean), ops.convert_to_numpy(losses.kl_per_dim(z_mean, z_log_var))

    def importance_terms(self, x, y, eps, log_prior):
        """Importance sampling from q(z|x) with noise eps (b, c, d): log p(x|z_i) (b, c) and {"z": log p - log q} (b, c).

        float64; log q comes from the noise itself, log p from `log_prior` (numpy_log_prior()).
        """
        b, c, d = eps.shape
        z_mean, z_log_var = (ops.convert_to_numpy(t) for t in self.run_encoder(x, y))
        z = z_mean[:, None] + np.exp(0.5 * z_log_var)[:, None] * eps  # (b, c, d)
        out = self.run_decoder(z.reshape(b * c, d), None if y is None else np.repeat(y, c, axis=0))
        log_px_z = -ops.convert_to_numpy(self.reconstruction_nll(np.repeat(x, c, axis=0), out)).astype(np.float64)
        log_pz = log_prior(z.reshape(b * c, d)).reshape(b, c)
        log_qz = priors.log_normal_from_noise_numpy(eps, z_log_var[:, None])  # (b, c)
        return log_px_z.reshape(b, c), {"z": log_pz - log_qz}

    def get_config(self):
        return {
            **submodels.get_config(self, super().get_config()),
            **self.objective_config(),
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_config(cls, config):
        return submodels.from_config(cls, config)


def check_signatures(encoder, decoder, num_classes=None):
    """Checks the encoder and decoder signatures; returns latent_dim.

    Unconditional: encoder x -> [z_mean, z_log_var], decoder z -> x-shaped output.
    Conditional (num_classes=C): encoder [x, y] -> [z_mean, z_log_var] and
    decoder [z, y] -> x-shaped output, with y of shape (C,) (one-hot).
    Any Keras model with known symbolic inputs fits: functional, Sequential,
    or a subclassed model wrapped as keras.Model(inputs, subclassed(inputs)).
    """
    enc_in, enc_out = submodels.signature(encoder, "encoder")
    dec_in, dec_out = submodels.signature(decoder, "decoder")
    labels = [] if num_classes is None else [(num_classes,)]
    wanted = "x" if num_classes is None else f"[x, y] with y of shape ({num_classes},)"
    if len(enc_in) != 1 + len(labels) or enc_in[1:] != labels or len(enc_out) != 2 or enc_out[0] != enc_out[1] \
            or len(enc_out[0]) != 1:
        raise ConfigError(
            f"The encoder must map {wanted} to two outputs [z_mean, z_log_var] of shape (batch, latent_dim). "
            f"Received: inputs {enc_in}, outputs {enc_out} (shapes without the batch axis)"
        )
    latent = enc_out[0]
    if dec_in != [latent, *labels] or len(dec_out) != 1 or dec_out[0] != enc_in[0]:
        z = f"z of shape {latent}" + ("" if num_classes is None else f" and y of shape ({num_classes},)")
        raise ConfigError(
            f"The decoder must map {z} to one output of the input's shape {enc_in[0]}. "
            f"Received: inputs {dec_in}, outputs {dec_out} (shapes without the batch axis)"
        )
    return int(latent[0])

