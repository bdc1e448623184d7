"""The tensor table of ARTIFACTS.md, as data: names, datatypes and shapes of every model.

Each tensor is a dict {"name", "datatype", "shape"} in the manifest's own
format: Open Inference Protocol datatype names and -1 for the dynamic batch
dimension. The manifest, the Triton configs, the ONNX output order, the
SavedModel signatures and the verification all read this one table (and the
names below); serving/manifest.py repeats the names for the other side.
"""

# Models.
ENCODER, DECODER = "encoder", "decoder"
PRIOR, LOG_PRIOR = "prior", "log_prior"  # VampPrior exports only

# Tensors.
X, LABELS = "x", "y"  # images [batch, *input_shape]; conditional models: one-hot labels [batch, C]
Z_MEAN, Z_LOG_VAR = "z_mean", "z_log_var"  # [batch, latent_dim]
Z = "z"  # latent code [batch, latent_dim]: the decoder's and log_prior's input, the prior's output
X_MEAN, X_LOGITS = "x_mean", "x_logits"  # [batch, *input_shape]; x_logits for Bernoulli only
EPS, COMPONENT = "eps", "component"  # prior inputs: temperature * N(0, I) noise [batch, latent_dim]; one-hot [batch, K]
LOG_PZ = "log_pz"  # log_prior output: log p(z) [batch], nats


def model_tensors(input_shape, latent_dim, likelihood, num_classes=None, num_components=None):
    """{"encoder": {"inputs": [...], "outputs": [...]}, "decoder": {...}[, "prior", "log_prior"]} for one VAE.

    A conditional VAE (num_classes=C) adds the input y, float32 one-hot
    [batch, C], after x (encoder) and after z (decoder). A VampPrior VAE
    (num_components=K) adds two models: prior (eps [batch, latent_dim],
    component [batch, K] one-hot -> z [batch, latent_dim]) and log_prior
    (z [batch, latent_dim] -> log_pz [batch]).
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
    return {"name": name, "datatype": "FP32", "shape": [int(d) for d in shape]}
