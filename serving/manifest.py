"""Reading and checking manifest.json, the artifact contract of ARTIFACTS.md."""

import hashlib
import json
import math
import os

# The names fixed by ARTIFACTS.md come from the contract (kvae_export writes with the same module);
# the runtime and server use them as manifest.<NAME>.
from kvae_contract.artifacts import (  # noqa: F401
    COMPONENT, DECODER, ENCODER, EPS, FORMAT_VERSIONS, HIERARCHICAL_FORMAT_VERSION, HIERARCHICAL_MODELS, HIERARCHY,
    KL_PER_DIM, LABELS, LEVELS, LOG_PRIOR, LOG_PZ, LOG_QZ, MANIFEST, MODEL_VERSION, MODELS, NORMAL, PRIOR, TEST_IMAGES,
    VAMP, VAMP_MODELS, X, X_LOGITS, X_MEAN, Z, Z_LOG_VAR, Z_MEAN,
)

from .errors import ArtifactError, MissingArtifactsError

# What serving relies on in each model (inputs, outputs); the manifest may declare more (x_logits, y).
REQUIRED_TENSORS = {
    ENCODER: ([X], [Z_MEAN, Z_LOG_VAR]),
    DECODER: ([Z], [X_MEAN]),
    PRIOR: ([EPS, COMPONENT], [Z]),
    LOG_PRIOR: ([Z], [LOG_PZ]),
}
# The same for the four models of a two-level HVAE (format_version 3); a VampPrior over z2 adds COMPONENT to PRIOR.
HIERARCHICAL_REQUIRED_TENSORS = {
    ENCODER: ([X, EPS], [Z, LOG_QZ]),
    DECODER: ([Z], [X_MEAN]),
    PRIOR: ([EPS], [Z]),
    LOG_PRIOR: ([Z], [LOG_PZ]),
}
REQUIRED_KEYS = ("format_version", "latent_dim", "input_shape", "models", "files")


def prior_of(manifest):
    """The manifest's prior, {"type": "normal"} or {"type": "vamp", "num_components": K}; format 1 implies normal.

    For a hierarchical manifest it is the prior of the top level z2.
    """
    return manifest.get("prior", {"type": NORMAL}) if manifest["format_version"] == 1 else manifest["prior"]


def is_hierarchical(manifest):
    """True for a two-level HVAE's artifacts: format_version 3, which has the "hierarchy" key and four models."""
    return manifest["format_version"] == HIERARCHICAL_FORMAT_VERSION


def latent_dims(manifest):
    """(d1, d2) of a hierarchical manifest's levels z1, z2 (the flat code z = [z1 | z2]); None for one level."""
    if not is_hierarchical(manifest):
        return None
    return tuple(level["latent_dim"] for level in manifest[HIERARCHY]["levels"])


def model_names(manifest):
    """The models serving loads: encoder and decoder, and for a VampPrior prior and log_prior; an HVAE's four."""
    if is_hierarchical(manifest):
        return list(HIERARCHICAL_MODELS)
    vamp = prior_of(manifest)["type"] == VAMP
    return [*MODELS, *(VAMP_MODELS if vamp else ())]


def required_tensors(manifest, name):
    """([input names], [output names]) serving relies on in model `name` of this manifest."""
    if is_hierarchical(manifest):
        inputs, outputs = HIERARCHICAL_REQUIRED_TENSORS[name]
        vamp = prior_of(manifest)["type"] == VAMP
        return (inputs + [COMPONENT] if vamp and name == PRIOR else inputs), outputs
    inputs, outputs = REQUIRED_TENSORS[name]
    conditional = "num_classes" in manifest
    return (inputs + [LABELS] if conditional and name in (ENCODER, DECODER) else inputs), outputs


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
            f"format_version {m['format_version']!r}, this server reads "
            f"{', '.join(map(str, FORMAT_VERSIONS[:-1]))} and {FORMAT_VERSIONS[-1]}"
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
    _check_hierarchy(m)
    _check_kl_per_dim(m)
    for name in model_names(m):
        inputs, outputs = required_tensors(m, name)
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
    if is_hierarchical(m):
        _check_code_shapes(m)


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


def _check_kl_per_dim(m):
    """The optional "kl_per_dim": latent_dim finite numbers (each latent's mean KL over the test set, in nats)."""
    if KL_PER_DIM not in m:
        return
    kl = m[KL_PER_DIM]
    finite = isinstance(kl, list) and all(_is_finite_number(v) for v in kl)
    if not (finite and len(kl) == m["latent_dim"]):
        received = f"{len(kl)} values" if isinstance(kl, list) else type(kl).__name__
        raise ArtifactError(
            f"{KL_PER_DIM} must be a list of {m['latent_dim']} finite numbers (latent_dim), received {received}"
            + (" with a non-number, NaN or Inf" if isinstance(kl, list) and len(kl) == m["latent_dim"] else "")
        )


def _check_hierarchy(m):
    """The "hierarchy" key, in format_version 3 only: {"levels": [{"name": "z1", "latent_dim": d1}, {...z2...}]}.

    Names in the order of the flat code, positive sizes adding up to latent_dim; no num_classes beside it.
    """
    expected = (
        f"{{'levels': [{{'name': {LEVELS[0]!r}, 'latent_dim': d1}}, {{'name': {LEVELS[1]!r}, 'latent_dim': d2}}]}} "
        f"with positive ints d1 + d2 = latent_dim"
    )
    if not is_hierarchical(m):
        if HIERARCHY in m:
            raise ArtifactError(
                f"the key {HIERARCHY!r} belongs to format_version {HIERARCHICAL_FORMAT_VERSION}, "
                f"this manifest is format_version {m['format_version']}"
            )
        return
    if HIERARCHY not in m:
        raise ArtifactError(f"format_version {m['format_version']} needs the key {HIERARCHY!r}: {expected}")
    if "num_classes" in m:
        raise ArtifactError(f"a hierarchical manifest ({HIERARCHY!r}) cannot be conditional (num_classes)")
    hierarchy = m[HIERARCHY]
    levels = hierarchy.get("levels") if isinstance(hierarchy, dict) else None
    well_formed = (
        isinstance(levels, list)
        and [level.get("name") if isinstance(level, dict) else None for level in levels] == list(LEVELS)
        and all(_is_int(level.get("latent_dim")) and level["latent_dim"] >= 1 for level in levels)
    )
    if not well_formed:
        raise ArtifactError(f"{HIERARCHY} must be {expected}, got {hierarchy!r}")
    dims = [level["latent_dim"] for level in levels]
    if sum(dims) != m["latent_dim"]:
        raise ArtifactError(
            f"the {HIERARCHY} levels' latent_dim add up to {' + '.join(map(str, dims))} = {sum(dims)}, "
            f"but latent_dim is {m['latent_dim']} (the flat code z = [z1 | z2])"
        )


def _check_code_shapes(m):
    """Hierarchical manifests: every code and noise tensor (z, eps) is [-1, latent_dim], the flat [z1 | z2]."""
    code = [-1, m["latent_dim"]]
    for name in model_names(m):
        for kind in ("inputs", "outputs"):
            for t in m["models"][name][kind]:
                if t["name"] in (Z, EPS) and t["shape"] != code:
                    raise ArtifactError(
                        f"models.{name} {kind[:-1]} {t['name']!r} has shape {t['shape']}, expected {code} (latent_dim)"
                    )


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


def _is_finite_number(v):
    """An int or float (not a bool) with a finite float value (JSON allows NaN, Infinity and 400-digit ints)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)
