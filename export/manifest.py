"""manifest.json: what the artifacts are, how to feed them, and a sha256 for every file."""

import hashlib
import json
import os

from kvae_contract import artifacts as names
from kvae_contract.artifacts import FORMAT_VERSION, HIERARCHICAL_FORMAT_VERSION, prior_entry

FILE = names.MANIFEST
PREPROCESSING = (
    "x is float32 NHWC [batch, height, width, channels]: uint8 pixels divided by 255.0, values in [0, 1], "
    "no other normalization. Bernoulli models were trained on binarized pixels but take grey levels at inference. "
    "Sampling: rng = numpy.random.default_rng(seed); eps = rng.standard_normal((n, latent_dim), dtype=float32) first. "
    "Prior type normal: z = temperature * eps. "
    "Prior type vamp: then component = rng.integers(0, num_components, size=n), and z is the prior model's output for "
    "eps = temperature * eps and component = the one-hot rows of component (float32 [n, num_components]), "
    "i.e. z = means[component] + exp(0.5 * log_vars[component]) * temperature * eps. "
    "Then the decoder; x_mean is the image. "
    "Test-set protocol for Bernoulli likelihoods (the published draw): validation = rows 50000..59999 of "
    "train-images-idx3-ubyte, test = t10k-images-idx3-ubyte, each as float64 [n, pixels] / 255; "
    "numpy.random.seed(777); x_val = numpy.random.binomial(1, validation); x_test = numpy.random.binomial(1, test) "
    "(the validation draw comes first, in the same stream). Gaussian likelihoods: the test pixels / 255."
)
HIERARCHICAL = (
    " Hierarchical model (format_version 3, the hierarchy key): every code is the flat z = [z1 | z2] of latent_dim = "
    "d1 + d2 numbers, and sampling always goes through the prior model: eps and (vamp prior over z2) component are "
    "drawn as above with this latent_dim, then z is the prior model's output for eps = temperature * eps "
    "[and the one-hot component]. The encoder takes x and eps (N(0, I) noise [batch, latent_dim]) and returns "
    "z and log_qz = log q(z|x); eps = 0 gives the deterministic code. log_prior returns log p(z1|z2) + log p(z2)."
)
CONDITIONAL = (
    " Conditional model: encoder and decoder also take y, float32 one-hot [batch, num_classes] "
    "(row i has a 1.0 in column label_i); sampling without labels uses label_i = i % num_classes."
)


def build(out, kvae_version, input_shape, latent_dim, likelihood, tensors, training_config, test_metrics,
          observation_log_var=None, num_classes=None, num_components=None, hierarchy=None, kl_per_dim=None):
    """The manifest dict of ARTIFACTS.md for the files now under `out` (hashes them).

    Every model of `tensors` (the table of kvae_contract.artifacts.model_tensors) is
    listed under "models", in the table's order. Conditional models add
    "num_classes" (after "latent_dim"); unconditional manifests do not have
    the key. "prior" is prior_entry(num_components): VampPrior exports pass
    K, and their tensors hold the prior and log_prior models. An HVAE passes
    hierarchy (kvae_contract.artifacts.hierarchy_entry) and the table of
    hierarchical_model_tensors: its manifest is format_version 3 with the key
    "hierarchy" after "latent_dim"; one-level manifests stay version 2, without it.
    kl_per_dim (latent_dim floats, from the run's evaluation) adds the optional key "kl_per_dim" at the end.
    """
    models = {
        name: {
            "onnx": names.onnx_path(name),
            "saved_model": names.saved_model_path(name),
            "inputs": model["inputs"],
            "outputs": model["outputs"],
        }
        for name, model in tensors.items()
    }
    vamp = num_components is not None
    if hierarchy is not None:
        levels = sum(level["latent_dim"] for level in hierarchy["levels"])
        if list(models) != list(names.HIERARCHICAL_MODELS) or num_classes is not None or levels != latent_dim:
            raise ValueError(
                f"a hierarchical manifest needs the models {list(names.HIERARCHICAL_MODELS)}, no num_classes and "
                f"levels that add up to latent_dim; received models {list(models)}, num_classes={num_classes!r}, "
                f"levels {hierarchy['levels']}, latent_dim={latent_dim}"
            )
    elif vamp != ({names.PRIOR, names.LOG_PRIOR} <= set(models)):
        raise ValueError(f"num_components={num_components!r} does not fit the models {list(models)}")
    return {
        "format_version": FORMAT_VERSION if hierarchy is None else HIERARCHICAL_FORMAT_VERSION,
        "kvae_version": kvae_version,
        "latent_dim": int(latent_dim),
        **({} if hierarchy is None else {names.HIERARCHY: hierarchy}),
        **({} if num_classes is None else {"num_classes": int(num_classes)}),
        "input_shape": [int(d) for d in input_shape],
        "likelihood": likelihood,
        "prior": prior_entry(num_components),
        "observation_log_var": observation_log_var,  # Gaussian: log of the pixel variance; else null
        "value_range": [0.0, 1.0],
        "preprocessing": PREPROCESSING + ("" if num_classes is None else CONDITIONAL)
        + ("" if hierarchy is None else HIERARCHICAL),
        "models": models,
        "files": file_hashes(out),
        "training_config": training_config,
        "test_metrics": test_metrics,
        **({} if kl_per_dim is None else {names.KL_PER_DIM: [float(v) for v in kl_per_dim]}),
    }


def write(out, manifest):
    with open(os.path.join(out, FILE), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


def file_hashes(out):
    """{relative/posix/path: sha256 hex} of every file under `out` but the manifest, sorted by path."""
    hashes = {}
    for folder, _, names in os.walk(out):
        for name in names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, out).replace(os.sep, "/")
            if rel != FILE:
                hashes[rel] = sha256(path)
    return dict(sorted(hashes.items()))


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
