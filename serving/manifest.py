"""Reading and checking manifest.json, the artifact contract of ARTIFACTS.md."""

import hashlib
import json
import os

from serving.errors import ArtifactError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
MODEL_VERSION = "1"  # the only version the layout holds: onnx/<model>/1/model.onnx

# Tensor names fixed by ARTIFACTS.md; the runtime checks that the manifest declares them.
ENCODER, DECODER = "encoder", "decoder"
ENCODER_INPUT = "x"  # (batch, *input_shape), pixels in [0, 1]
Z_MEAN, Z_LOG_VAR = "z_mean", "z_log_var"  # (batch, latent_dim)
DECODER_INPUT = "z"  # (batch, latent_dim)
X_MEAN, X_LOGITS = "x_mean", "x_logits"  # (batch, *input_shape); x_logits for Bernoulli only
LABELS = "y"  # conditional models: float32 one-hot (batch, num_classes), an input of both models

REQUIRED_TENSORS = {ENCODER: ([ENCODER_INPUT], [Z_MEAN, Z_LOG_VAR]), DECODER: ([DECODER_INPUT], [X_MEAN])}
REQUIRED_KEYS = ("format_version", "latent_dim", "input_shape", "models", "files")


def load(artifacts_dir):
    """manifest.json of `artifacts_dir` as a dict, after checking what serving relies on."""
    path = os.path.join(artifacts_dir, MANIFEST)
    redo = f"Re-export the model (kvae export) into {artifacts_dir}."
    if not os.path.isdir(artifacts_dir):
        raise ArtifactError(f"Artifacts directory {artifacts_dir} does not exist.")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing: {artifacts_dir} is not a kvae artifacts directory. {redo}") from None
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}). {redo}") from None
    try:
        _check(manifest)
    except (ArtifactError, KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path} does not follow the artifact contract: {e}. {redo}") from None
    return manifest


def _check(m):
    if not isinstance(m, dict):
        raise ArtifactError("the top level is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise ArtifactError(f"missing keys {missing}")
    if m["format_version"] != FORMAT_VERSION:
        raise ArtifactError(f"format_version {m['format_version']!r}, this server reads {FORMAT_VERSION}")
    if not (_is_int(m["latent_dim"]) and m["latent_dim"] >= 1):
        raise ArtifactError(f"latent_dim must be a positive int, got {m['latent_dim']!r}")
    shape = m["input_shape"]
    if not (isinstance(shape, list) and shape and all(_is_int(d) and d >= 1 for d in shape)):
        raise ArtifactError(f"input_shape must be a list of positive ints, got {shape!r}")
    if not isinstance(m["models"], dict):
        raise ArtifactError("models must map model names to their files and tensors")
    conditional = "num_classes" in m
    if conditional and not (_is_int(m["num_classes"]) and m["num_classes"] >= 2):
        raise ArtifactError(f"num_classes must be an int >= 2, got {m['num_classes']!r}")
    for name, (inputs, outputs) in REQUIRED_TENSORS.items():
        inputs = inputs + [LABELS] if conditional else inputs
        model = m["models"].get(name)
        if not isinstance(model, dict) or not isinstance(model.get("onnx"), str):
            raise ArtifactError(f"models.{name}.onnx is missing")
        for kind, required in (("inputs", inputs), ("outputs", outputs)):
            tensors = model.get(kind)
            if not isinstance(tensors, list):
                raise ArtifactError(f"models.{name}.{kind} is missing")
            for t in tensors:
                if not (
                    isinstance(t, dict)
                    and isinstance(t.get("name"), str)
                    and isinstance(t.get("datatype"), str)
                    and isinstance(t.get("shape"), list)
                    and all(_is_int(d) for d in t["shape"])
                ):
                    raise ArtifactError(f"models.{name}.{kind} has a malformed tensor {t!r}")
            names = [t["name"] for t in tensors]
            if not set(required) <= set(names):
                raise ArtifactError(f"models.{name}.{kind} must declare {required}, it declares {names}")
    if not isinstance(m["files"], dict):
        raise ArtifactError("files must map paths to sha256 digests")


def read_verified(artifacts_dir, manifest, relpath):
    """The bytes of `relpath`, after checking them against the sha256 in manifest["files"]."""
    path = os.path.join(artifacts_dir, relpath)
    redo = f"Re-export the model (kvae export) into {artifacts_dir}."
    expected = manifest["files"].get(relpath)
    if not isinstance(expected, str):
        raise ArtifactError(f"manifest.json lists no sha256 for {relpath}. {redo}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ArtifactError(f"{path} cannot be read ({e.strerror}). {redo}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected.lower():
        raise ArtifactError(
            f"{path} is corrupt or was changed after export: sha256 {actual}, manifest.json says {expected}. {redo}"
        )
    return data


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)
