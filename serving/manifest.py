"""Reading and checking manifest.json, the artifact contract of ARTIFACTS.md."""

import hashlib
import json
import os

# The names fixed by ARTIFACTS.md come from the contract (kvae_export writes with the same module);
# the runtime and server use them as manifest.<NAME>.
from kvae_contract.artifacts import (  # noqa: F401
    COMPONENT, DECODER, ENCODER, EPS, FORMAT_VERSIONS, LABELS, LOG_PRIOR, LOG_PZ, MANIFEST, MODEL_VERSION, MODELS,
    NORMAL, PRIOR, VAMP, VAMP_MODELS, X, X_LOGITS, X_MEAN, Z, Z_LOG_VAR, Z_MEAN,
)

from .errors import ArtifactError, MissingArtifactsError

# What serving relies on in each model (inputs, outputs); the manifest may declare more (x_logits, y).
REQUIRED_TENSORS = {
    ENCODER: ([X], [Z_MEAN, Z_LOG_VAR]),
    DECODER: ([Z], [X_MEAN]),
    PRIOR: ([EPS, COMPONENT], [Z]),
    LOG_PRIOR: ([Z], [LOG_PZ]),
}
REQUIRED_KEYS = ("format_version", "latent_dim", "input_shape", "models", "files")


def prior_of(manifest):
    """The manifest's prior, {"type": "normal"} or {"type": "vamp", "num_components": K}; format 1 implies normal."""
    return manifest.get("prior", {"type": NORMAL}) if manifest["format_version"] == 1 else manifest["prior"]


def model_names(manifest):
    """The models serving loads: encoder and decoder, and for a VampPrior prior and log_prior."""
    vamp = prior_of(manifest)["type"] == VAMP
    return [*MODELS, *(VAMP_MODELS if vamp else ())]


def load(artifacts_dir):
    """manifest.json of `artifacts_dir` as a dict, after checking what serving relies on."""
    path = os.path.join(artifacts_dir, MANIFEST)
    redo = f"Re-export the model (kvae export) into {artifacts_dir}."
    if not os.path.isdir(artifacts_dir):
        raise MissingArtifactsError(
            f"Artifacts directory {artifacts_dir} does not exist: pass the folder `kvae export --out` wrote."
        )
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise MissingArtifactsError(
            f"{path} is missing: {artifacts_dir} is not a kvae artifacts directory. {redo}"
        ) from None
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
    if m["format_version"] not in FORMAT_VERSIONS or isinstance(m["format_version"], bool):
        raise ArtifactError(
            f"format_version {m['format_version']!r}, this server reads {' and '.join(map(str, FORMAT_VERSIONS))}"
        )
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
    _check_prior(m)
    for name in model_names(m):
        inputs, outputs = REQUIRED_TENSORS[name]
        inputs = inputs + [LABELS] if conditional and name in (ENCODER, DECODER) else inputs
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
    if prior_of(m)["type"] == VAMP:
        _check_components(m)


def _check_prior(m):
    """The "prior" key (format_version 2 on): {"type": "normal"} or {"type": "vamp", "num_components": K}."""
    if m["format_version"] >= 2 and "prior" not in m:
        raise ArtifactError(f"format_version {m['format_version']} needs the key 'prior'")
    prior = prior_of(m)
    if not isinstance(prior, dict) or prior.get("type") not in (NORMAL, VAMP):
        raise ArtifactError(
            f"prior must be {{'type': {NORMAL!r}}} or {{'type': {VAMP!r}, 'num_components': K}}, got {prior!r}"
        )
    if prior["type"] == VAMP and not (_is_int(prior.get("num_components")) and prior["num_components"] >= 1):
        raise ArtifactError(f"a vamp prior needs num_components, a positive int; got {prior.get('num_components')!r}")


def _check_components(m):
    """The prior's component input is one-hot over the manifest's num_components: shape [-1, K]."""
    k = m["prior"]["num_components"]
    shape = next(t["shape"] for t in m["models"][PRIOR]["inputs"] if t["name"] == COMPONENT)
    if shape != [-1, k]:
        raise ArtifactError(
            f"models.{PRIOR} input {COMPONENT!r} has shape {shape}, expected [-1, {k}] (num_components)"
        )


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
