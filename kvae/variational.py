"""What the one-level VAE and the two-level HVAE share: the likelihood, the objective, the KL weight, the metrics.

Both are subclassed Keras models trained with plain `compile(optimizer=...)`
+ `fit(x)`: their `call` adds the loss terms with `add_loss`, and
`compute_loss` below only updates the metrics. This base holds what is the
same in both, so that neither copies it:

- the checks of the shared arguments (likelihood, beta, free bits, prior, objective);
- the model's own state: the sampling layer, the KL weight a warm-up ramps, the
  Gaussian's pixel log-variance, and (VampPrior) the pseudo-inputs;
- -log p(x|z) from a decoder output, and the output's mean;
- the metrics: reconstruction, KL (in total and, for several levels, per level),
  negative ELBO and the importance-weighted bound;
- compile (no `loss`), and compile on load so that a resumed run keeps its optimizer.
"""

import math

import keras
from keras import ops

from kvae import distribute, losses, priors
from kvae.config import LIKELIHOODS, OBJECTIVES
from kvae.layers import Sampling
from kvae_contract.errors import ConfigError


class VariationalModel(keras.Model):
    """Base of VAE and HVAE; see their docstrings for the arguments.

    Subclasses call `super().__init__(...)` with the shared arguments, create
    their own weights, then `self.add_objective_state(input_shape)`. Their
    `call` returns a dict with, per example, "reconstruction_nll", "kl" (all
    levels together) and, under objective="iwae", "iw_bound"; a model with
    several latent levels also returns "kl_<level>" for each of `kl_levels`.
    """

    def __init__(self, likelihood="bernoulli", beta=1.0, free_bits=0.0, gaussian_variance="learned", seed=None,
                 prior="normal", num_pseudo_inputs=500, objective="elbo", iw_samples=1, kl_levels=(), **kwargs):
        # No autocasting in the model's own call: x, the loss terms and the
        # kl_weight/log_var variables stay float32 under a mixed policy; the
        # sub-models still cast to their compute dtype themselves.
        super().__init__(**{**kwargs, "autocast": False})
        if likelihood not in LIKELIHOODS:
            raise ConfigError(f"`likelihood` must be one of {LIKELIHOODS}. Received: likelihood={likelihood!r}")
        if not beta >= 0:
            raise ConfigError(f"`beta` must be >= 0. Received: beta={beta!r}")
        if not free_bits >= 0:
            raise ConfigError(f"`free_bits` must be >= 0. Received: free_bits={free_bits!r}")
        if gaussian_variance != "learned" and not (
            isinstance(gaussian_variance, (int, float)) and gaussian_variance > 0
        ):
            raise ConfigError(
                f"`gaussian_variance` must be 'learned' or a number > 0. Received: gaussian_variance={gaussian_variance!r}"
            )
        if prior not in priors.PRIORS:
            raise ConfigError(f"`prior` must be one of {priors.PRIORS}. Received: prior={prior!r}")
        if not (isinstance(num_pseudo_inputs, int) and num_pseudo_inputs >= 1):
            raise ConfigError(f"`num_pseudo_inputs` must be a positive int. Received: num_pseudo_inputs={num_pseudo_inputs!r}")
        if objective not in OBJECTIVES:
            raise ConfigError(f"`objective` must be one of {OBJECTIVES}. Received: objective={objective!r}")
        if not (isinstance(iw_samples, int) and iw_samples >= 1):
            raise ConfigError(f"`iw_samples` must be a positive int. Received: iw_samples={iw_samples!r}")
        if objective == "elbo" and iw_samples != 1:
            raise ConfigError(f"`iw_samples` > 1 needs objective='iwae'. Received: iw_samples={iw_samples!r}")
        if free_bits > 0 and (prior != "normal" or objective != "elbo"):
            raise ConfigError(
                "Free bits need the per-dimension KL of the N(0, I) prior and the ELBO. "
                f"Received: free_bits={free_bits!r}, prior={prior!r}, objective={objective!r}"
            )
        self.likelihood = likelihood
        self.beta = float(beta)
        self.free_bits = float(free_bits)
        self.gaussian_variance = gaussian_variance
        self.seed = seed
        self.prior = prior
        self.num_pseudo_inputs = num_pseudo_inputs
        self.objective = objective
        self.iw_samples = iw_samples
        self.kl_levels = tuple(kl_levels)

    # === State ===

    def add_pseudo_inputs(self, input_shape):
        """The VampPrior's K trainable pseudo-inputs, (K, *input_shape); kvae.train sets them to training images."""
        self.pseudo_inputs = self.add_weight(
            shape=(self.num_pseudo_inputs, *input_shape), initializer=keras.initializers.RandomUniform(0.0, 1.0),
            name="pseudo_inputs", dtype="float32",
        )

    def add_objective_state(self):
        """The sampling layer, the KL weight, the pixel log-variance and the metrics (after the subclass's weights)."""
        self.sampling = Sampling(seed=self.seed, name="sampling", dtype="float32")  # z and its noise in float32
        # The KL weight actually applied; a warm-up callback ramps it to `beta`.
        self.kl_weight = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.beta), trainable=False, name="kl_weight"
        )
        gaussian = self.likelihood == "gaussian"
        learned = gaussian and self.gaussian_variance == "learned"
        initial = 0.0 if learned or not gaussian else math.log(self.gaussian_variance)
        self.log_var = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(initial), trainable=learned, name="log_var"
        )
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")
        self.elbo_tracker = keras.metrics.Mean(name="negative_elbo")
        self.iw_bound_tracker = keras.metrics.Mean(name="negative_iw_bound") if self.objective == "iwae" else None
        self.level_trackers = [keras.metrics.Mean(name=f"kl_{level}") for level in self.kl_levels]

    # === Likelihood ===

    def reconstruction_nll(self, x, reconstruction):
        """-log p(x|z) per example, (batch,), from the decoder output; computed in float32."""
        x, reconstruction = ops.cast(x, "float32"), ops.cast(reconstruction, "float32")
        if self.likelihood == "bernoulli":
            return losses.bernoulli_nll(x, reconstruction)
        return losses.gaussian_nll(x, reconstruction, self.log_var)

    def output_mean(self, reconstruction):
        """The mean of p(x|z) from a decoder output (sigmoid of Bernoulli logits), float32 NumPy."""
        reconstruction = ops.cast(reconstruction, "float32")
        if self.likelihood == "bernoulli":
            return ops.convert_to_numpy(ops.sigmoid(reconstruction))
        return ops.convert_to_numpy(reconstruction)

    # === Objective ===

    def add_iw_loss(self, log_w):
        """Adds -mean log (1/k) sum_i w_i for log_w (k, batch), k = iw_samples; returns the bound, (batch,)."""
        bound = iw_bound(log_w)
        self.add_loss(-ops.mean(bound))
        return bound

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Only the metrics are updated here (Keras updates metrics in compute_loss
        # on every backend); the loss itself is the sum of the add_loss terms.
        self.reconstruction_tracker.update_state(y_pred["reconstruction_nll"])
        self.kl_tracker.update_state(y_pred["kl"])
        self.elbo_tracker.update_state(y_pred["reconstruction_nll"] + y_pred["kl"])
        if self.iw_bound_tracker is not None:
            self.iw_bound_tracker.update_state(-y_pred["iw_bound"])
        for level, tracker in zip(self.kl_levels, self.level_trackers):
            tracker.update_state(y_pred[f"kl_{level}"])
        return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)

    def get_metrics_result(self):
        result = super().get_metrics_result()
        if distribute.needs_vector_logs():  # multi-worker runs: see kvae.distribute
            return {name: ops.reshape(value, (1,)) for name, value in result.items()}
        return result

    def compile(self, optimizer="adam", loss=None, **kwargs):
        if loss is not None:
            raise ConfigError(
                f"{type(self).__name__} computes its own loss (reconstruction + beta * KL); call compile(optimizer=...) "
                f"without `loss`. Received: loss={loss!r}"
            )
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        # Keras skips compile on load for models that override compile(); this
        # restores the saved optimizer (and its state) so training can go on.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # === Evaluation (kvae.evaluate) ===

    def numpy_log_prior(self):
        """float64 log p(z) of the prior the subclass's prior_components() describe: (n, d) -> (n,).

        The VAE's z, the HVAE's top level z2: N(0, I) in closed form, or the VampPrior's mixture.
        """
        if self.prior == "normal":
            return priors.log_standard_normal_numpy
        means, log_vars = (ops.convert_to_numpy(t) for t in self.prior_components())
        return lambda z: priors.log_mixture_numpy(z, means, log_vars)

    # === Config ===

    def objective_config(self):
        """The shared arguments, for the subclass's get_config."""
        return {
            "likelihood": self.likelihood,
            "beta": self.beta,
            "free_bits": self.free_bits,
            "gaussian_variance": self.gaussian_variance,
            "seed": self.seed,
            "prior": self.prior,
            "num_pseudo_inputs": self.num_pseudo_inputs,
            "objective": self.objective,
            "iw_samples": self.iw_samples,
        }


def iw_bound(log_w):
    """log (1/k) sum_i w_i for log_w (k, batch): (batch,)."""
    return ops.logsumexp(log_w, axis=0) - float(math.log(log_w.shape[0]))
