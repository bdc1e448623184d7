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
FORMAT_VERSION = 2  # what kvae export writes for a one-level VAE: the "prior" key, a VampPrior's prior and log_prior
HIERARCHICAL_FORMAT_VERSION = 3  # what it writes for a two-level HVAE: the "hierarchy" key and four models (below)
FORMAT_VERSIONS = (1, 2, 3)  # every version this contract describes, all read by serving; 1 has no "prior" key
NORMAL, VAMP = "normal", "vamp"  # manifest["prior"]["type"]; for an HVAE, the prior of its top level z2
HIERARCHY = "hierarchy"  # the manifest key of format_version 3: {"levels": [{"name", "latent_dim"}, ...]}
LEVELS = ("z1", "z2")  # an HVAE's levels, the one next to x first; its flat code is z = [z1 | z2]
# Optional manifest key: [latent_dim] floats, each dimension's mean KL(q(z_d|x) || N(0, 1)) in nats over the test
# set (an HVAE's z1: against p(z1|z2)), from the run's `kvae evaluate` (evaluation.json); absent when the run was
# not evaluated. It says which latents the model uses.
KL_PER_DIM = "kl_per_dim"

# Models.
ENCODER, DECODER = "encoder", "decoder"
PRIOR, LOG_PRIOR = "prior", "log_prior"  # VampPrior and HVAE artifacts only
MODELS = (ENCODER, DECODER)  # every artifacts folder has them
VAMP_MODELS = (PRIOR, LOG_PRIOR)  # and a VampPrior's also these, after them
HIERARCHICAL_MODELS = (ENCODER, DECODER, PRIOR, LOG_PRIOR)  # an HVAE's, always all four (p(z1|z2) is learned)

# The folder layout: paths relative to the artifacts folder, "/"-separated (as the manifest writes them).
MODEL_VERSION = "1"  # the only version the layout holds (TensorFlow Serving's and Triton's version folder)


def onnx_path(model):
    """onnx/<model>/1/model.onnx: the ONNX file, inside a Triton model repository."""
    return f"onnx/{model}/{MODEL_VERSION}/model.onnx"


def triton_config_path(model):
    """onnx/<model>/config.pbtxt: the Triton model configuration of the ONNX file."""
    return f"onnx/{model}/config.pbtxt"


# A few of the export's check images (real test images), for the explorer page: one PNG, the images side by side
# in one row, each of the model's input size and channels, listed in "files" like every other file.
TEST_IMAGES = "test_images.png"
NUM_TEST_IMAGES = 24  # at most; fewer when the export had fewer check images (or classes ran short)


def test_images_sprite(images):
    """uint8 images (n, h, w, c) -> the picture of TEST_IMAGES, (h, n * w, c): image i in columns i*w .. (i+1)*w."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    return images.transpose(1, 0, 2, 3).reshape(h, n * w, c)


def test_images_from_sprite(picture, input_shape):
    """The picture of TEST_IMAGES (h, n * w, c) -> the images (n, h, w, c); ValueError if it does not fit input_shape."""
    h, w, c = input_shape
    picture = np.asarray(picture)
    if picture.ndim == 2:
        picture = picture[..., None]
    if picture.shape[0] != h or picture.shape[1] % w or picture.shape[1] == 0 or picture.shape[2] != c:
        raise ValueError(f"{TEST_IMAGES} is {list(picture.shape)}, not a row of images shaped {list(input_shape)}")
    return picture.reshape(h, picture.shape[1] // w, w, c).transpose(1, 0, 2, 3)


def saved_model_path(model):
    """saved_model/<model>/1: the SavedModel folder (TensorFlow Serving's model_base_path/<version>)."""
    return f"saved_model/{model}/{MODEL_VERSION}"


def prior_entry(num_components=None):
    """The manifest's "prior": {"type": "normal"}, or {"type": "vamp", "num_components": K}."""
    if num_components is None:
        return {"type": NORMAL}
    return {"type": VAMP, "num_components": int(num_components)}


def hierarchy_entry(latent_dims):
    """The manifest's "hierarchy" of an HVAE with latent_dims (d1, d2).

    {"levels": [{"name": "z1", "latent_dim": d1}, {"name": "z2", "latent_dim": d2}]}:
    the levels in the order of the flat code z = [z1 | z2] (and of the noise
    eps that makes it), so z1 = z[:, :d1] and z2 = z[:, d1:d1 + d2].
    """
    dims = [int(d) for d in latent_dims]
    if len(dims) != len(LEVELS) or min(dims) < 1:
        raise ValueError(
            f"latent_dims must be {len(LEVELS)} positive ints, one per level {LEVELS}. "
            f"Received: latent_dims={latent_dims!r}"
        )
    return {"levels": [{"name": name, "latent_dim": d} for name, d in zip(LEVELS, dims)]}


# Tensors: the same names in the manifest, the ONNX graphs, the SavedModel signatures and the Triton configs.
FP32 = "FP32"  # the contract's only datatype (Open Inference Protocol name)
DTYPES = {FP32: np.float32}  # datatype -> NumPy
X, LABELS = "x", "y"  # images [batch, *input_shape]; conditional models: one-hot labels [batch, C]
Z_MEAN, Z_LOG_VAR = "z_mean", "z_log_var"  # [batch, latent_dim]
Z = "z"  # latent code [batch, latent_dim]: the decoder's and log_prior's input, the prior's output
X_MEAN, X_LOGITS = "x_mean", "x_logits"  # [batch, *input_shape]; x_logits for Bernoulli only
EPS, COMPONENT = "eps", "component"  # prior inputs: temperature * N(0, I) noise [batch, latent_dim]; one-hot [batch, K]
LOG_PZ = "log_pz"  # log_prior output: log p(z) [batch], nats
LOG_QZ = "log_qz"  # HVAE encoder output: log q(z|x) [batch] at the z it drew from its input eps, nats


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
    tensors = {
        ENCODER: {
            "inputs": [_fp32(X, image), *labels],
            "outputs": [_fp32(Z_MEAN, code), _fp32(Z_LOG_VAR, code)],
        },
        DECODER: {"inputs": [_fp32(Z, code), *labels], "outputs": _decoder_outputs(image, likelihood)},
    }
    if num_components is not None:
        tensors[PRIOR] = {
            "inputs": [_fp32(EPS, code), _fp32(COMPONENT, [-1, num_components])],
            "outputs": [_fp32(Z, code)],
        }
        tensors[LOG_PRIOR] = {"inputs": [_fp32(Z, code)], "outputs": [_fp32(LOG_PZ, [-1])]}
    return tensors


def hierarchical_model_tensors(input_shape, latent_dims, likelihood, num_components=None):
    """The tensor table of a two-level HVAE (format_version 3): encoder, decoder, prior, log_prior, always.

    latent_dims = (d1, d2); every code is the flat z = [z1 | z2] of
    latent_dim = d1 + d2 numbers, and so is the noise eps that makes one.
      encoder:   x [batch, *input_shape], eps [batch, latent_dim] -> z [batch, latent_dim], log_qz [batch]
                 (a reparameterized draw from q(z2|x) q(z1|x, z2) and its log-density; eps = 0: the
                 deterministic code)
      decoder:   z -> x_mean[, x_logits], as model_tensors' decoder
      prior:     eps [batch, latent_dim][, component [batch, K] one-hot for a VampPrior over z2] -> z
      log_prior: z -> log_pz [batch] = log p(z1|z2) + log p(z2)
    """
    hierarchy_entry(latent_dims)  # checks them: two positive ints
    image, code = [-1, *input_shape], [-1, sum(int(d) for d in latent_dims)]
    components = [] if num_components is None else [_fp32(COMPONENT, [-1, num_components])]
    return {
        ENCODER: {"inputs": [_fp32(X, image), _fp32(EPS, code)], "outputs": [_fp32(Z, code), _fp32(LOG_QZ, [-1])]},
        DECODER: {"inputs": [_fp32(Z, code)], "outputs": _decoder_outputs(image, likelihood)},
        PRIOR: {"inputs": [_fp32(EPS, code), *components], "outputs": [_fp32(Z, code)]},
        LOG_PRIOR: {"inputs": [_fp32(Z, code)], "outputs": [_fp32(LOG_PZ, [-1])]},
    }


def _decoder_outputs(image, likelihood):
    """x_mean [batch, *input_shape], and for a Bernoulli likelihood x_logits after it."""
    return [_fp32(X_MEAN, image), *([_fp32(X_LOGITS, image)] if likelihood == "bernoulli" else [])]


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
    An HVAE draws the same (eps, component) with latent_dim = d1 + d2 and
    feeds temperature * eps (and the one-hot component) to its prior model.
    """
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((n, latent_dim), dtype=np.float32)
    component = None if num_components is None else rng.integers(0, num_components, size=n)
    return eps, component
