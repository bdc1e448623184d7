"""Proof that the written artifacts compute what the Keras model computes.

Keras (model.encoder, model.decoder + model.output_mean) is the reference;
the reloaded SavedModel and an onnxruntime CPU session must agree with it
within TOLERANCE (max absolute difference) on every output. A VampPrior's
two models are checked against its components as Keras computes them
(model.prior_components()): the prior's draw in float64 NumPy, and log p(z)
by kvae.priors.log_mixture_numpy (float64). log p(z) is a log-density whose
size grows with the distance from the components (hundreds of nats for z
far from all of them), and float32 holds it to about 1e-7 of its size, so
log_pz is held to TOLERANCE * max(1, |log p(z)|): absolute below 1 nat,
relative above. Bernoulli logits (x_logits) are log-odds with the same
property: a well-trained decoder is sure of its background pixels, with
logits of -30 and beyond, where float32 and a different summation order
(oneDNN vs onnxruntime's kernels) move them by a few 1e-5 (4.2e-5 measured on
the 350-epoch fashion-mlp model); they are held to the same relative bound.
x_mean, the probabilities, stays absolute.

A two-level HVAE (kvae.hvae.HVAE) has four models of its own
(hierarchical_checks): each is checked against the same computation done
with its Keras sub-models, the densities (log_qz, log_pz) in float64 as
kvae.evaluate does them, and held to the same tolerances (log_qz, a
log-density too, relative to its size like log_pz).
"""

import numpy as np

from kvae_contract import artifacts as names

from . import saved_model
from .errors import VerificationError

TOLERANCE = 1e-5
CHECK_SEED = 0  # seed of the random latents the decoders are checked on
NUM_CHECK_LATENTS = 256
RELATIVE_OUTPUTS = (names.LOG_PZ, names.LOG_QZ, names.X_LOGITS)  # checked within TOLERANCE * max(1, |expected|)


def check_latents(latent_dim):
    """(256, latent_dim) float32 draws of N(0, I), with the contract's sampling convention."""
    return names.draw_prior_noise(NUM_CHECK_LATENTS, latent_dim, CHECK_SEED)[0]


def check_labels(n, num_classes):
    """One-hot labels (n, C) cycling through the classes, or None for an unconditional model."""
    return None if num_classes is None else names.one_hot(names.default_labels(n, num_classes), num_classes)


def check_components(n, num_components):
    """One-hot mixture components (n, K), float32, drawn uniformly with PCG64(CHECK_SEED + 1)."""
    rows = np.random.default_rng(CHECK_SEED + 1).integers(0, num_components, size=n)
    return names.one_hot(rows, num_components)


def prior_draws(model):
    """256 codes (256, latent_dim) drawn from the model's own prior, with CHECK_SEED."""
    return model.sample_prior(NUM_CHECK_LATENTS, seed=CHECK_SEED)


def prior_check_latents(model):
    """Latents (2 * 256, latent_dim) the log_prior is checked on: N(0, I) draws, then draws from the model's prior."""
    return np.concatenate([check_latents(model.latent_dim), prior_draws(model)])


def keras_outputs(model, x, z, y_x=None, y_z=None):
    """The reference outputs, {"encoder": {...}, "decoder": {...}} of NumPy arrays (y_*: one-hot labels or None)."""
    z_mean, z_log_var = model.run_encoder(x, y_x)
    reconstruction = model.run_decoder(z, y_z)
    decoder = {names.X_MEAN: np.asarray(model.output_mean(reconstruction))}
    if model.likelihood == "bernoulli":
        decoder[names.X_LOGITS] = np.asarray(reconstruction)  # the Bernoulli decoder's raw output is logits
    encoder = {names.Z_MEAN: np.asarray(z_mean), names.Z_LOG_VAR: np.asarray(z_log_var)}
    return {names.ENCODER: encoder, names.DECODER: decoder}


def prior_components(model):
    """The VampPrior's (means, log_vars) as Keras computes them: float32 NumPy, each (K, latent_dim)."""
    return tuple(np.asarray(t, np.float32) for t in model.prior_components())


def prior_reference(means, log_vars, eps, component):
    """What the prior model must output: component @ means + exp(0.5 * component @ log_vars) * eps, in float64."""
    means, log_vars, component = (np.asarray(a, np.float64) for a in (means, log_vars, component))
    return {names.Z: component @ means + np.exp(0.5 * (component @ log_vars)) * eps}


def log_prior_reference(means, log_vars, z):
    """What the log_prior model must output: log p(z) (n,), float64, by kvae.priors.log_mixture_numpy."""
    from kvae.priors import log_mixture_numpy

    return {names.LOG_PZ: log_mixture_numpy(z, means, log_vars)}


def prior_checks(model):
    """{"prior": (inputs, expected), "log_prior": (inputs, expected)} for a VampPrior model.

    The prior is fed N(0, I) noise with random one-hot components; log_prior
    gets N(0, I) latents and draws from the prior (the z it will see).
    """
    means, log_vars = prior_components(model)
    eps, component = check_latents(model.latent_dim), check_components(NUM_CHECK_LATENTS, len(means))
    z = prior_check_latents(model)
    return {
        names.PRIOR: ({names.EPS: eps, names.COMPONENT: component}, prior_reference(means, log_vars, eps, component)),
        names.LOG_PRIOR: ({names.Z: z}, log_prior_reference(means, log_vars, z)),
    }


def one_level_checks(model, paths, x, z, y_x=None, y_z=None):
    """{model: (inputs, expected)} for a one-level VAE: encoder on x, decoder on z[, prior_checks(model)]."""
    expected = keras_outputs(model, x, z, y_x, y_z)
    inputs = {names.ENCODER: {names.X: x}, names.DECODER: {names.Z: z}}
    if y_x is not None:
        inputs[names.ENCODER][names.LABELS], inputs[names.DECODER][names.LABELS] = y_x, y_z
    checks = {name: (inputs[name], expected[name]) for name in (names.ENCODER, names.DECODER)}
    if names.PRIOR in paths:
        checks.update(prior_checks(model))
    return checks


def run_onnx(path, inputs):
    """Runs an ONNX file on onnxruntime's CPU provider: dict of NumPy in, dict of NumPy out."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


# The two-level HVAE: references computed with its Keras sub-models (float32), densities in float64.


def hierarchical_encoder_reference(model, x, eps):
    """What the HVAE's encoder model must output for x (n, *input_shape) and eps (n, d1 + d2).

    z2 = z2_mean + exp(0.5 z2_log_var) * eps2, then z1 from q(z1|x, z2) the
    same way, in float32 as kvae.evaluate draws them; log_qz (n,) in float64
    from the noise (kvae.priors.log_normal_from_noise_numpy, what evaluate uses).
    """
    from kvae.priors import log_normal_from_noise_numpy

    d1 = model.latent_dims[0]
    eps1, eps2 = eps[:, :d1], eps[:, d1:]
    z2_mean, z2_log_var = (np.asarray(t) for t in model.run(model.encoder_z2, x))
    z2 = z2_mean + np.exp(0.5 * z2_log_var) * eps2
    z1_mean, z1_log_var = (np.asarray(t) for t in model.run(model.encoder_z1, [x, z2]))
    z1 = z1_mean + np.exp(0.5 * z1_log_var) * eps1
    log_qz = log_normal_from_noise_numpy(eps1, z1_log_var) + log_normal_from_noise_numpy(eps2, z2_log_var)
    return {names.Z: np.concatenate([z1, z2], axis=-1), names.LOG_QZ: log_qz}


def hierarchical_decoder_reference(model, z):
    """What the HVAE's decoder model must output for flat codes z: x_mean[, x_logits] from decoder([z1, z2])."""
    reconstruction = np.asarray(model.decoder([np.asarray(t) for t in model.split(z)], training=False))
    decoder = {names.X_MEAN: np.asarray(model.output_mean(reconstruction))}
    if model.likelihood == "bernoulli":
        decoder[names.X_LOGITS] = reconstruction
    return decoder


def hierarchical_log_prior_reference(model, z):
    """What the HVAE's log_prior model must output: log p(z1|z2) + log p(z2), (n,), float64 (p(z1|z2) from Keras)."""
    from kvae.priors import log_normal_diag_numpy

    z1, z2 = model.split(z)
    mean, log_var = model.run(model.prior_z1, z2)
    return {names.LOG_PZ: log_normal_diag_numpy(z1, mean, log_var) + model.numpy_log_prior()(z2)}


def hierarchical_decoder_codes(model, x):
    """The codes an HVAE's decoder is checked on: 256 draws from its prior, then the check images' deterministic codes.

    These are the decoder's inputs in use (generation, reconstruction). Flat N(0, I) codes, as a one-level
    decoder is checked on, are not: z1 comes from p(z1|z2), far narrower in most directions, and N(0, I) codes
    drive a trained decoder to logits of 100 whose near-zero neighbours lose float32 digits to cancellation
    (2.2e-5 relative on fashion-hvae, against 5.7e-6 on its prior draws and 4.8e-6 on test codes).
    """
    return np.concatenate([prior_draws(model), model.encode(x)[0]]).astype(np.float32)


def hierarchical_checks(model, x, z):
    """{model: (inputs, expected)} for the four models of an HVAE.

    encoder: every check image twice, with N(0, I) noise and with eps = 0 (the
    deterministic code); decoder: codes from the prior and the check images'
    codes (hierarchical_decoder_codes); prior: the N(0, I) noise z [and random
    one-hot components] against HVAE.generate_codes; log_prior: N(0, I)
    latents and draws from the prior (prior_check_latents).
    """
    n, d = len(x), model.latent_dim
    eps = np.concatenate([names.draw_prior_noise(n, d, CHECK_SEED)[0], np.zeros((n, d), np.float32)])
    x2 = np.concatenate([x, x])
    prior_inputs, component_ids = {names.EPS: z}, None
    if model.prior == names.VAMP:
        prior_inputs[names.COMPONENT] = check_components(len(z), model.num_pseudo_inputs)
        component_ids = prior_inputs[names.COMPONENT].argmax(axis=1)
    latents, codes = prior_check_latents(model), hierarchical_decoder_codes(model, x)
    return {
        names.ENCODER: ({names.X: x2, names.EPS: eps}, hierarchical_encoder_reference(model, x2, eps)),
        names.DECODER: ({names.Z: codes}, hierarchical_decoder_reference(model, codes)),
        names.PRIOR: (prior_inputs, {names.Z: model.generate_codes(z, component_ids)}),
        names.LOG_PRIOR: ({names.Z: latents}, hierarchical_log_prior_reference(model, latents)),
    }


def verify(model, paths, x, z, y_x=None, y_z=None):
    """Checks both backends of every exported model against Keras.

    Args:
        model: the kvae VAE or HVAE (float32).
        paths: {"encoder": {"saved_model": dir, "onnx": file}, "decoder": {...}[, "prior", "log_prior"]}.
        x: check images (n, *input_shape) float32; z: check latents (m, latent_dim) float32.
        y_x, y_z: conditional models only: one-hot labels (n, C) of x and (m, C) of z.

    VampPrior models (paths has "prior") are also checked on prior_checks(model);
    an HVAE's four models on hierarchical_checks(model, x, z).
    Returns {model: {backend: {output: max difference}}} (absolute; for log_pz
    and log_qz max |diff| / max(1, |expected|)); raises VerificationError naming
    the model, output and backend when one differs by more than TOLERANCE.
    """
    from kvae.hvae import HVAE

    if isinstance(model, HVAE):
        checks = hierarchical_checks(model, x, z)
    else:
        checks = one_level_checks(model, paths, x, z, y_x, y_z)
    runners = {"saved_model": saved_model.run, "onnx": run_onnx}
    diffs = {}
    for name, (feed, want) in checks.items():
        diffs[name] = {}
        for backend, run in runners.items():
            got = run(paths[name][backend], feed)
            diffs[name][backend] = compare(name, backend, want, got)
    return diffs


def compare(model_name, backend, expected, got):
    """{output: max difference} of `got` against `expected`; VerificationError if any is too large.

    The difference is absolute, except for RELATIVE_OUTPUTS (log_pz, log_qz, x_logits): there
    max |got - expected| / max(1, |expected|).
    """
    if sorted(got) != sorted(expected):
        raise VerificationError(
            f"Verification failed: the {backend} {model_name} has outputs {sorted(got)}, expected {sorted(expected)}."
        )
    diffs = {}
    for name, want in expected.items():
        have = np.asarray(got[name])
        if have.shape != want.shape:
            raise VerificationError(
                f"Verification failed: {model_name} output {name!r} from {backend} has shape {have.shape}, "
                f"Keras gives {want.shape}."
            )
        error = np.abs(have.astype(np.float64) - want.astype(np.float64))
        relative = name in RELATIVE_OUTPUTS
        if relative:
            error = error / np.maximum(1.0, np.abs(want.astype(np.float64)))
        diff = float(np.max(error))
        if not diff <= TOLERANCE:  # also catches NaN
            measure = "max |diff| / max(1, |expected|)" if relative else "max abs"
            raise VerificationError(
                f"Verification failed: {model_name} output {name!r} from {backend} differs from Keras by "
                f"{measure} {diff:.3g} (tolerance {TOLERANCE:g}); nothing was published."
            )
        diffs[name] = diff
    return diffs
