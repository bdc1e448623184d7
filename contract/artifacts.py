"""The artifact contract of ARTIFACTS.md as data: the one place its names and rules are spelled.

What `kvae export` (kvae_export) writes and what the runtime and server
(kvae_serving) read: the manifest's format version, the folder layout, the
model names, the tensor table (names, datatypes, shapes, which model), the
label convention (one-hot y) and the sampling convention (the seeded draw of
the prior's noise). kvae's VAE.sample_prior draws with draw_prior_noise too,
so that the same seed gives the same z in Keras and in onnxruntime.

NumPy only, nothing else: every install (serving-only included) imports it.
tests/test_contract.py reads ARTIFACTS.md and checks it against this module.
"""

import numpy as np

# manifest.json
MANIFEST = "manifest.json"  # at the top of the artifacts folder
FORMAT_VERSION = 2  # what kvae export writes: 2 adds the "prior" key and a VampPrior's prior and log_prior models
FORMAT_VERSIONS = (1, 2)  # every version this contract describes, all read by serving; 1 has no "prior" key
NORMAL, VAMP = "normal", "vamp"  # manifest["prior"]["type"]

# Models.
ENCODER, DECODER = "encoder", "decoder"
PRIOR, LOG_PRIOR = "prior", "log_prior"  # VampPrior artifacts only
MODELS = (ENCODER, DECODER)  # every artifacts folder has them
VAMP_MODELS = (PRIOR, LOG_PRIOR)  # and a VampPrior's also these, after them

# The folder layout: paths relative to the artifacts folder, "/"-separated (as the manifest writes them).
MODEL_VERSION = "1"  # the only version the layout holds (TensorFlow Serving's and Triton's version folder)


def onnx_path(model):
    """onnx/<model>/1/model.onnx: the ONNX file, inside a Triton model repository."""
    return f"onnx/{model}/{MODEL_VERSION}/model.onnx"


def triton_config_path(model):
    """onnx/<model>/config.pbtxt: the Triton model configuration of the ONNX file."""
    return f"onnx/{model}/config.pbtxt"


def saved_model_path(model):
    """saved_model/<model>/1: the SavedModel folder (TensorFlow Serving's model_base_path/<version>)."""
    return f"saved_model/{model}/{MODEL_VERSION}"


def prior_entry(num_components=None):
    """The manifest's "prior": {"type": "normal"}, or {"type": "vamp", "num_components": K}."""
    if num_components is None:
        return {"type": NORMAL}
    return {"type": VAMP, "num_components": int(num_components)}


# Tensors: the same names in the manifest, the ONNX graphs, the SavedModel signatures and the Triton configs.
FP32 = "FP32"  # the contract's only datatype (Open Inference Protocol name)
DTYPES = {FP32: np.float32}  # datatype -> NumPy
X, LABELS = "x", "y"  # images [batch, *input_shape]; conditional models: one-hot labels [batch, C]
Z_MEAN, Z_LOG_VAR = "z_mean", "z_log_var"  # [batch, latent_dim]
Z = "z"  # latent code [batch, latent_dim]: the decoder's and log_prior's input, the prior's output
X_MEAN, X_LOGITS = "x_mean", "x_logits"  # [batch, *input_shape]; x_logits for Bernoulli only
EPS, COMPONENT = "eps", "component"  # prior inputs: temperature * N(0, I) noise [batch, latent_dim]; one-hot [batch, K]
LOG_PZ = "log_pz"  # log_prior output: log p(z) [batch], nats


def model_tensors(input_shape, latent_dim, likelihood, num_classes=None, num_components=None):
    """{"encoder": {"inputs": [...], "outputs": [...]}, "decoder": {...}[, "prior", "log_prior"]} for one VAE.

    Each tensor is a dict {"name", "datatype", "shape"} in the manifest's own
    format: Open Inference Protocol datatypes and -1 for the dynamic batch
    dimension; inputs and outputs in their order. A conditional VAE
    (num_classes=C) adds the input y, float32 one-hot [batch, C], after x
    (encoder) and after z (decoder). A VampPrior VAE (num_components=K) adds
    two models: prior (eps [batch, latent_dim], component [batch, K] one-hot
    -> z [batch, latent_dim]) and log_prior (z [batch, latent_dim] -> log_pz [batch]).
    """
    image = [-1, *input_shape]  # [batch, height, width, channels]
    code = [-1, latent_dim]  # [batch, latent_dim]
    labels = [] if num_classes is None else [_fp32(LABELS, [-1, num_classes])]  # [batch, C], one-hot
    decoder_outputs = [_fp32(X_MEAN, image)]
    if likelihood == "bernoulli":
        decoder_outputs.append(_fp32(X_LOGITS, image))
    tensors = {
        ENCODER: {
            "inputs": [_fp32(X, image), *labels],
            "outputs": [_fp32(Z_MEAN, code), _fp32(Z_LOG_VAR, code)],
        },
        DECODER: {"inputs": [_fp32(Z, code), *labels], "outputs": decoder_outputs},
    }
    if num_components is not None:
        tensors[PRIOR] = {
            "inputs": [_fp32(EPS, code), _fp32(COMPONENT, [-1, num_components])],
            "outputs": [_fp32(Z, code)],
        }
        tensors[LOG_PRIOR] = {"inputs": [_fp32(Z, code)], "outputs": [_fp32(LOG_PZ, [-1])]}
    return tensors


def names(tensors, kind):
    """The tensor names of one model's "inputs" or "outputs", in the table's order."""
    return [t["name"] for t in tensors[kind]]


def _fp32(name, shape):
    return {"name": name, "datatype": FP32, "shape": [int(d) for d in shape]}


# Labels of conditional models.


def one_hot(class_ids, num_classes):
    """Class ids (n,) -> the label input y, float32 (n, num_classes): row i has 1.0 in column class_ids[i]."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(class_ids)]


def default_labels(n, num_classes):
    """The labels of sampling without explicit labels: 0, 1, ..., C-1, 0, 1, ... (row i gets i % C), (n,)."""
    return np.arange(n) % num_classes


# Sampling.


def draw_prior_noise(n, latent_dim, seed=None, num_components=None):
    """The seeded randomness of a draw from the prior: (eps, component).

    rng = numpy.random.default_rng(seed); eps = rng.standard_normal((n,
    latent_dim), float32), always drawn first; for a VampPrior (num_components
    = K) then component = rng.integers(0, K, size=n), from the same rng, else
    None. z is then temperature * eps (N(0, I)), or means[component] +
    exp(0.5 * log_vars[component]) * temperature * eps (the VampPrior).
    """
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((n, latent_dim), dtype=np.float32)
    component = None if num_components is None else rng.integers(0, num_components, size=n)
    return eps, component
