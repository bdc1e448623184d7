"""The two-level hierarchical VAE (Tomczak & Welling, 2018, their HVAE) as a subclassed Keras model.

Inference runs top-down from x:   q(z2|x), then q(z1|x, z2).
Generation runs the other way:    p(z2) (N(0, I) or the VampPrior), p(z1|z2), p(x|z1, z2).

Every density is a diagonal Gaussian except p(x|z1, z2) and the VampPrior's
mixture. The ELBO is

    log p(x|z1, z2) - KL_z1 - KL_z2,
    KL_z1 = KL[q(z1|x, z2) || p(z1|z2)]  (closed form between two Gaussians, at the sampled z2),
    KL_z2 = KL[q(z2|x) || p(z2)]         (closed form under N(0, I); the one-sample
                                          log q(z2|x) - log p(z2) under the VampPrior),

both KL terms through `add_loss` (with the warm-up's KL weight), as in `VAE`.

Outside the model a latent code is one flat vector z = [z1 | z2] of
latent_dim = d1 + d2 numbers: `encode`, `decode`, `sample_prior` and the
exported graphs all use that layout, so a one-level and a two-level model
look alike to the evaluation, the export and the runtime.
"""

import keras
import numpy as np
from keras import ops

from kvae import losses, priors, submodels
from kvae.variational import VariationalModel, iw_bound
from kvae_contract.artifacts import draw_prior_noise
from kvae_contract.errors import ConfigError

LEVELS = ("z1", "z2")  # z1 next to x, z2 at the top; the flat code is [z1 | z2]
SUBMODELS = ("encoder_z2", "encoder_z1", "prior_z1", "decoder")


@keras.saving.register_keras_serializable(package="kvae")
class HVAE(VariationalModel):
    """A VAE with two stochastic levels.

    Args:
        encoder_z2: Keras model, x (batch, *input_shape) -> [z2_mean, z2_log_var], each (batch, d2).
        encoder_z1: Keras model, [x, z2] -> [z1_mean, z1_log_var], each (batch, d1).
        prior_z1: Keras model, z2 (batch, d2) -> [mean, log_var] of p(z1|z2), each (batch, d1).
        decoder: Keras model, [z1, z2] -> (batch, *input_shape): logits for
            "bernoulli", means for "gaussian".
        likelihood, beta, free_bits, gaussian_variance, seed, objective, iw_samples:
            as for `VAE`. Free bits floor each level's per-dimension KL.
        prior: p(z2): "normal" for N(0, I), or "vamp" for the VampPrior over
            q(z2|u_k) of K pseudo-inputs u_k (the weight `pseudo_inputs`).
        num_pseudo_inputs: K, for prior="vamp".

    Called on x it returns a dict of per-example tensors: "reconstruction",
    "z" (flat [z1 | z2]), "reconstruction_nll", "kl" (both levels), "kl_z1",
    "kl_z2" and, under objective="iwae", "iw_bound". The history has
    kl_z1 and kl_z2 beside kl_loss.
    """

    def __init__(self, encoder_z2, encoder_z1, prior_z1, decoder, likelihood="bernoulli", beta=1.0, free_bits=0.0,
                 gaussian_variance="learned", seed=None, prior="normal", num_pseudo_inputs=500, objective="elbo",
                 iw_samples=1, **kwargs):
        super().__init__(
            likelihood=likelihood, beta=beta, free_bits=free_bits, gaussian_variance=gaussian_variance, seed=seed,
            prior=prior, num_pseudo_inputs=num_pseudo_inputs, objective=objective, iw_samples=iw_samples,
            kl_levels=LEVELS, **kwargs,
        )
        self.encoder_z2 = encoder_z2
        self.encoder_z1 = encoder_z1
        self.prior_z1 = prior_z1
        self.decoder = decoder
        self.input_shape_, self.latent_dims = check_signatures(encoder_z2, encoder_z1, prior_z1, decoder)
        self.latent_dim = sum(self.latent_dims)  # the flat code [z1 | z2]
        self.num_classes = None  # unconditional; the attribute the evaluation and the figures ask
        if prior == "vamp":
            self.add_pseudo_inputs(self.input_shape_)
        self.add_objective_state()

    # === Training ===

    def call(self, inputs, training=False):
        x = inputs["x"] if isinstance(inputs, dict) else inputs
        if self.objective == "iwae":
            k = self.iw_samples
            x = ops.tile(x, (k,) + (1,) * (len(x.shape) - 1))  # (k * b, ...), sample-major
        z2_mean, z2_log_var = self.run(self.encoder_z2, x, training)
        z2 = self.sampling([z2_mean, z2_log_var])
        z1_mean, z1_log_var = self.run(self.encoder_z1, [x, z2], training)
        z1 = self.sampling([z1_mean, z1_log_var])
        p1_mean, p1_log_var = self.run(self.prior_z1, z2, training)
        reconstruction = ops.cast(self.decoder([z1, z2], training=training), "float32")
        recon = self.reconstruction_nll(x, reconstruction)
        # log q - log p per level, one sample: what the IW bound and the VampPrior's KL use.
        ratio_z1 = priors.log_normal_diag(z1, z1_mean, z1_log_var) - priors.log_normal_diag(z1, p1_mean, p1_log_var)
        ratio_z2 = priors.log_normal_diag(z2, z2_mean, z2_log_var) - self.log_prior_z2(z2)
        out = {"reconstruction": reconstruction, "z": ops.concatenate([z1, z2], axis=-1)}
        if self.objective == "iwae":
            k = self.iw_samples
            per_example = lambda t: ops.mean(ops.reshape(t, (k, -1)), axis=0)  # (k * b,) -> (b,)
            self.add_iw_loss(ops.reshape(-(recon + self.kl_weight * (ratio_z1 + ratio_z2)), (k, -1)))
            batch = ops.shape(reconstruction)[0] // k
            out = {name: t[:batch] for name, t in out.items()}
            kl_z1, kl_z2, recon_mean = per_example(ratio_z1), per_example(ratio_z2), per_example(recon)
            out["iw_bound"] = iw_bound(ops.reshape(-(recon + ratio_z1 + ratio_z2), (k, -1)))
            out.update(reconstruction_nll=recon_mean, kl=kl_z1 + kl_z2, kl_z1=kl_z1, kl_z2=kl_z2)
            return out
        kl_z1_dims = kl_normal_per_dim(z1_mean, z1_log_var, p1_mean, p1_log_var)  # (b, d1), closed form given z2
        kl_z1 = ops.sum(kl_z1_dims, axis=-1)
        kl_z2 = losses.kl_divergence(z2_mean, z2_log_var) if self.prior == "normal" else ratio_z2
        if self.free_bits > 0:  # each level's per-dimension batch KL raised to the floor
            floor = lambda per_dim: ops.sum(ops.maximum(ops.mean(per_dim, axis=0), self.free_bits))
            penalty = floor(kl_z1_dims) + floor(losses.kl_per_dim(z2_mean, z2_log_var))
        else:
            penalty = ops.mean(kl_z1 + kl_z2)
        self.add_loss(ops.mean(recon))
        self.add_loss(self.kl_weight * penalty)
        out.update(reconstruction_nll=recon, kl=kl_z1 + kl_z2, kl_z1=kl_z1, kl_z2=kl_z2)
        return out

    def run(self, submodel, inputs, training=False):
        """A sub-model's two heads (mean, log_var), in float32. Inputs: tensors or NumPy arrays (not mixed in Keras)."""
        if isinstance(inputs, (list, tuple)):
            inputs = [ops.convert_to_tensor(t, "float32") for t in inputs]
        mean, log_var = submodel(inputs, training=training)
        return ops.cast(mean, "float32"), ops.cast(log_var, "float32")

    # === Priors ===

    def prior_components(self):
        """VampPrior: (means, log_vars), each (K, d2): q(z2|u_k) of the pseudo-inputs."""
        if self.prior != "vamp":
            raise ConfigError(f"Only the VampPrior has components. Received: prior={self.prior!r}")
        return self.run(self.encoder_z2, ops.clip(self.pseudo_inputs, 0.0, 1.0))

    def log_prior_z2(self, z2):
        """log p(z2), (n,)."""
        if self.prior == "normal":
            return priors.log_standard_normal(z2)
        means, log_vars = self.prior_components()
        return priors.log_mixture(z2, means, log_vars)

    def log_prior(self, z):
        """log p(z1, z2) = log p(z1|z2) + log p(z2) for flat codes z (n, d1 + d2): (n,)."""
        z1, z2 = self.split(z)
        p1_mean, p1_log_var = self.run(self.prior_z1, z2)
        return priors.log_normal_diag(z1, p1_mean, p1_log_var) + self.log_prior_z2(z2)

    def split(self, z):
        """Flat codes (n, d1 + d2) -> (z1 (n, d1), z2 (n, d2))."""
        d1 = self.latent_dims[0]
        return z[:, :d1], z[:, d1:]

    # === Inference helpers on NumPy arrays (deterministic unless they say otherwise) ===

    def encode(self, x, labels=None, batch_size=512):
        """x (n, *input_shape) in [0, 1] -> (z_mean, z_log_var), each (n, d1 + d2), flat [z1 | z2].

        The top level's posterior mean z2_mean, then q(z1|x, z2_mean): the
        deterministic path through both encoders.
        """
        self._no_labels(labels)
        means, log_vars = [], []
        for start in range(0, len(x), batch_size):
            xb = np.asarray(x[start : start + batch_size], np.float32)
            z2_mean, z2_log_var = self.run(self.encoder_z2, xb)
            z1_mean, z1_log_var = self.run(self.encoder_z1, [xb, z2_mean])
            means.append(ops.convert_to_numpy(ops.concatenate([z1_mean, z2_mean], axis=-1)))
            log_vars.append(ops.convert_to_numpy(ops.concatenate([z1_log_var, z2_log_var], axis=-1)))
        return np.concatenate(means), np.concatenate(log_vars)

    def decode(self, z, labels=None, batch_size=512):
        """Flat codes z (n, d1 + d2) -> x_mean (n, *input_shape), the mean of p(x|z1, z2)."""
        self._no_labels(labels)
        z = np.asarray(z, np.float32)
        return np.concatenate([
            self.output_mean(self.decoder([ops.convert_to_tensor(t) for t in self.split(z[i : i + batch_size])]))
            for i in range(0, len(z), batch_size)
        ])

    def sample_prior(self, n, seed=None, temperature=1.0):
        """n flat codes [z1 | z2] from p(z2) p(z1|z2), (n, d1 + d2) float32.

        eps (n, d1 + d2) and, under the VampPrior, the components come from the
        contract's seeded draw (kvae_contract.artifacts.draw_prior_noise), as in
        serving/: eps[:, d1:] makes z2 (temperature * eps2, or mu_c + temperature
        * exp(log_var_c / 2) * eps2), then eps[:, :d1] makes z1 = mean(z2) +
        temperature * exp(log_var(z2) / 2) * eps1.
        """
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"`n` must be a positive int. Received: n={n!r}")
        num_components = self.num_pseudo_inputs if self.prior == "vamp" else None
        eps, component = draw_prior_noise(n, self.latent_dim, seed, num_components)
        return self.generate_codes(np.float32(temperature) * eps, component)

    def generate_codes(self, eps, component=None):
        """Noise (n, d1 + d2), already scaled by the temperature, [and component ids (n,)] -> flat codes, NumPy.

        The deterministic map of generation: what the exported `prior` graph computes.
        """
        eps = np.asarray(eps, np.float32)
        eps1, eps2 = eps[:, : self.latent_dims[0]], eps[:, self.latent_dims[0] :]
        if self.prior == "normal":
            z2 = eps2
        else:
            means, log_vars = (ops.convert_to_numpy(t) for t in self.prior_components())
            z2 = means[component] + np.exp(0.5 * log_vars[component]) * eps2
        p1_mean, p1_log_var = (ops.convert_to_numpy(t) for t in self.run(self.prior_z1, z2))
        z1 = p1_mean + np.exp(0.5 * p1_log_var) * eps1
        return np.concatenate([z1, z2], axis=-1).astype(np.float32)

    def sample(self, n, seed=None, temperature=1.0, labels=None):
        """n images decoded from prior draws made with NumPy's PCG64(seed) (see `sample_prior`)."""
        self._no_labels(labels)
        return self.decode(self.sample_prior(n, seed, temperature))

    def reconstruct(self, x, labels=None):
        """Decodes the posterior means: x -> x_mean, deterministic."""
        return self.decode(self.encode(x, labels)[0])

    def labels_for(self, labels, n):
        self._no_labels(labels)
        return None

    def _no_labels(self, labels):
        if labels is not None:
            raise ConfigError(f"The HVAE is not conditional. Received: labels={labels!r}")

    # === Evaluation (kvae.evaluate): float64 NumPy ===

    def posterior_summary(self, x, y=None):
        """Per image: the flat posterior means (b, D) and the KL of each dimension in nats (b, D).

        z2 against N(0, I) (its usage; for a VampPrior not its KL term), z1
        against p(z1|z2) at z2 = z2_mean, both in closed form.
        """
        z2_mean, z2_log_var = self.run(self.encoder_z2, x)
        z1_mean, z1_log_var = self.run(self.encoder_z1, [x, z2_mean])
        p1_mean, p1_log_var = self.run(self.prior_z1, z2_mean)
        kl = ops.concatenate(
            [kl_normal_per_dim(z1_mean, z1_log_var, p1_mean, p1_log_var), losses.kl_per_dim(z2_mean, z2_log_var)], axis=-1
        )
        return ops.convert_to_numpy(ops.concatenate([z1_mean, z2_mean], axis=-1)), ops.convert_to_numpy(kl)

    def importance_terms(self, x, y, eps, log_prior_z2):
        """Importance sampling from q(z2|x) q(z1|x, z2) with noise eps (b, c, d1 + d2).

        Returns log p(x|z1, z2), (b, c), and {level: log p - log q}, each (b, c),
        all float64: z1's ratio is log p(z1|z2) - log q(z1|x, z2), z2's log p(z2) - log q(z2|x).
        `log_prior_z2` is `numpy_log_prior()`'s float64 log p(z2).
        """
        b, c, _ = eps.shape
        d1 = self.latent_dims[0]
        eps1, eps2 = eps[..., :d1].reshape(b * c, d1), eps[..., d1:].reshape(b * c, -1)
        x_rep = np.repeat(x, c, axis=0)
        z2_mean, z2_log_var = (np.repeat(ops.convert_to_numpy(t), c, axis=0) for t in self.run(self.encoder_z2, x))
        z2 = z2_mean + np.exp(0.5 * z2_log_var) * eps2
        z1_mean, z1_log_var = (ops.convert_to_numpy(t) for t in self.run(self.encoder_z1, [x_rep, z2]))
        z1 = z1_mean + np.exp(0.5 * z1_log_var) * eps1
        p1_mean, p1_log_var = (ops.convert_to_numpy(t) for t in self.run(self.prior_z1, z2))
        out = self.decoder([ops.convert_to_tensor(z1), ops.convert_to_tensor(z2)])
        log_px = -ops.convert_to_numpy(self.reconstruction_nll(x_rep, out)).astype(np.float64)
        log_q1 = priors.log_normal_from_noise_numpy(eps1, z1_log_var)
        log_q2 = priors.log_normal_from_noise_numpy(eps2, z2_log_var)
        log_p1 = priors.log_normal_diag_numpy(z1, p1_mean, p1_log_var)
        ratios = {"z1": log_p1 - log_q1, "z2": log_prior_z2(z2) - log_q2}
        return log_px.reshape(b, c), {level: r.reshape(b, c) for level, r in ratios.items()}

    # === Config ===

    def get_config(self):
        return {
            **super().get_config(),
            **{name: keras.saving.serialize_keras_object(getattr(self, name)) for name in SUBMODELS},
            **self.objective_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        submodels = [keras.saving.deserialize_keras_object(config.pop(name)) for name in SUBMODELS]
        return cls(*submodels, **config)


# === Densities ===


def kl_normal_per_dim(q_mean, q_log_var, p_mean, p_log_var):
    """KL[N(q_mean, e^q_log_var) || N(p_mean, e^p_log_var)] per dimension: (batch, d)."""
    return 0.5 * (p_log_var - q_log_var + (ops.exp(q_log_var) + ops.square(q_mean - p_mean)) * ops.exp(-p_log_var) - 1.0)


# === Checks ===


def check_signatures(encoder_z2, encoder_z1, prior_z1, decoder):
    """Checks the four sub-models against each other; returns (input_shape, (d1, d2))."""
    q2_in, q2_out = submodels.signature(encoder_z2, "encoder_z2")
    q1_in, q1_out = submodels.signature(encoder_z1, "encoder_z1")
    p1_in, p1_out = submodels.signature(prior_z1, "prior_z1")
    x_in, x_out = submodels.signature(decoder, "decoder")
    problems = []
    if len(q2_in) != 1 or len(q2_out) != 2 or q2_out[0] != q2_out[1] or len(q2_out[0]) != 1:
        problems.append(f"encoder_z2 must map x to [z2_mean, z2_log_var], each (batch, d2); it maps {q2_in} to {q2_out}")
    else:
        image, (d2,) = q2_in[0], q2_out[0]
        if len(q1_out) != 2 or q1_out[0] != q1_out[1] or len(q1_out[0]) != 1 or q1_in != [image, (d2,)]:
            problems.append(f"encoder_z1 must map [x {image}, z2 ({d2},)] to [z1_mean, z1_log_var], each (batch, d1); "
                            f"it maps {q1_in} to {q1_out}")
        else:
            (d1,) = q1_out[0]
            if p1_in != [(d2,)] or p1_out != [(d1,), (d1,)]:
                problems.append(f"prior_z1 must map z2 ({d2},) to [mean, log_var], each ({d1},); it maps {p1_in} to {p1_out}")
            if x_in != [(d1,), (d2,)] or x_out != [image]:
                problems.append(f"decoder must map [z1 ({d1},), z2 ({d2},)] to one output of shape {image}; "
                                f"it maps {x_in} to {x_out}")
    if problems:
        raise ConfigError("The HVAE's sub-models do not fit together: " + "; ".join(problems) + " (shapes without the batch axis)")
    return tuple(int(d) for d in image), (int(d1), int(d2))
