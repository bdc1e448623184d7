"""manifest.json: what the artifacts are, how to feed them, and a sha256 for every file."""

import hashlib
import json
import os

FILE = "manifest.json"
FORMAT_VERSION = 1
PREPROCESSING = (
    "x is float32 NHWC [batch, height, width, channels]: uint8 pixels divided by 255.0, values in [0, 1], "
    "no other normalization. Bernoulli models were trained on binarized pixels but take grey levels at inference. "
    "Sampling: z = temperature * numpy.random.default_rng(seed).standard_normal((n, latent_dim), dtype=float32), "
    "then the decoder; x_mean is the image. Test-set protocol for Bernoulli likelihoods: the t10k images binarized once, "
    "x = (numpy.random.default_rng(0).random(shape, dtype=float32) < pixels / 255)."
)
CONDITIONAL = (
    " Conditional model: encoder and decoder also take y, float32 one-hot [batch, num_classes] "
    "(row i has a 1.0 in column label_i); sampling without labels uses label_i = i % num_classes."
)


def build(out, kvae_version, input_shape, latent_dim, likelihood, tensors, training_config, test_metrics,
          observation_log_var=None, num_classes=None):
    """The manifest dict of ARTIFACTS.md for the files now under `out` (hashes them).

    Conditional models add "num_classes" (after "latent_dim"); unconditional manifests do not have the key.
    """
    models = {
        name: {
            "onnx": f"onnx/{name}/1/model.onnx",
            "saved_model": f"saved_model/{name}/1",
            "inputs": tensors[name]["inputs"],
            "outputs": tensors[name]["outputs"],
        }
        for name in ("encoder", "decoder")
    }
    return {
        "format_version": FORMAT_VERSION,
        "kvae_version": kvae_version,
        "latent_dim": int(latent_dim),
        **({} if num_classes is None else {"num_classes": int(num_classes)}),
        "input_shape": [int(d) for d in input_shape],
        "likelihood": likelihood,
        "observation_log_var": observation_log_var,  # Gaussian: log of the pixel variance; else null
        "value_range": [0.0, 1.0],
        "preprocessing": PREPROCESSING + ("" if num_classes is None else CONDITIONAL),
        "models": models,
        "files": file_hashes(out),
        "training_config": training_config,
        "test_metrics": test_metrics,
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
