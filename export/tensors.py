"""The tensor table of ARTIFACTS.md, as data: names, datatypes and shapes of both models.

Each tensor is a dict {"name", "datatype", "shape"} in the manifest's own
format: Open Inference Protocol datatype names and -1 for the dynamic batch
dimension. The manifest, the Triton configs, the ONNX output order and the
verification all read this one table.
"""


def model_tensors(input_shape, latent_dim, likelihood, num_classes=None):
    """{"encoder": {"inputs": [...], "outputs": [...]}, "decoder": {...}} for one VAE.

    A conditional VAE (num_classes=C) adds the input y, float32 one-hot
    [batch, C], after x (encoder) and after z (decoder).
    """
    image = [-1, *input_shape]  # [batch, height, width, channels]
    code = [-1, latent_dim]  # [batch, latent_dim]
    labels = [] if num_classes is None else [_fp32("y", [-1, num_classes])]  # [batch, C], one-hot
    decoder_outputs = [_fp32("x_mean", image)]
    if likelihood == "bernoulli":
        decoder_outputs.append(_fp32("x_logits", image))
    return {
        "encoder": {
            "inputs": [_fp32("x", image), *labels],
            "outputs": [_fp32("z_mean", code), _fp32("z_log_var", code)],
        },
        "decoder": {"inputs": [_fp32("z", code), *labels], "outputs": decoder_outputs},
    }


def _fp32(name, shape):
    return {"name": name, "datatype": "FP32", "shape": [int(d) for d in shape]}
