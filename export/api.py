"""export_vae and export_run: a trained VAE -> the artifacts folder of ARTIFACTS.md.

TensorFlow, tf2onnx and Keras are imported inside the functions so that
importing `export` (and the CLI) stays cheap.
"""

import dataclasses
import json
import os

import numpy as np

from kvae_contract.artifacts import (
    DECODER, ENCODER, KL_PER_DIM, LOG_PRIOR, PRIOR, hierarchical_model_tensors, hierarchy_entry, model_tensors, onnx_path,
    saved_model_path, triton_config_path,
)
from kvae_contract.errors import DataError, MissingPathError, RunDirError

from . import publish
from .errors import ExportError

NUM_CHECK_IMAGES = 256


@dataclasses.dataclass
class ExportResult:
    out: str  # absolute path of the published folder
    manifest: dict  # what manifest.json holds
    # {model: {"saved_model"|"onnx": {output: max |backend - Keras|}}}; models: encoder, decoder[, prior, log_prior];
    # log_pz, log_qz and x_logits: max |backend - Keras| / max(1, |Keras|) (export.verify.RELATIVE_OUTPUTS)
    max_abs_diff: dict


def export_vae(model, out, *, check_images, check_labels=None, force=False, training_config=None,
               test_metrics=None, kl_per_dim=None):
    """Writes `model` to `out` as SavedModel + ONNX + Triton configs + manifest.json.

    Args:
        model: a trained kvae.VAE or kvae.hvae.HVAE (any dtype policy: the export is float32).
        out: the artifacts folder to create (or replace, with force=True).
        check_images: float32 (n, *input_shape) in [0, 1]; the encoder is verified on them.
        check_labels: conditional models: the n labels of check_images (class
            ids or one-hot); by default the classes in turn.
        force: replace an existing `out`.
        training_config: dict stored as the manifest's "training_config" (the run's config.json).
        test_metrics: dict stored as the manifest's "test_metrics".
        kl_per_dim: latent_dim floats, each latent's mean KL in nats over the test set (the run's
            `kvae evaluate`), stored as the manifest's "kl_per_dim"; None leaves the key out.

    A VampPrior model (prior="vamp") also gets the prior and log_prior models,
    its K components baked in as constants (ARTIFACTS.md). A two-level HVAE
    gets format_version 3: the "hierarchy" key and its own four models
    (encoder x, eps -> z, log_qz; decoder; prior; log_prior), whatever its prior.
    All exported models are reloaded and compared with Keras before anything
    is published; a difference above export.verify.TOLERANCE raises VerificationError
    (an ExportError) and leaves `out` as it was. A model trained under a mixed-precision
    policy is exported as its float32 twin (same weights, float32 layers,
    kvae.precision.float32_twin), and verified against that twin. Up to 24 of the check
    images are also written as test_images.png (export.test_images), for the explorer page.
    Returns an ExportResult.
    """
    import keras

    import kvae
    from . import manifest, onnx_export, saved_model, test_images, triton, verify
    from kvae.hvae import HVAE
    from kvae.precision import float32_twin

    if keras.backend.backend() != "tensorflow":
        raise ExportError(
            "Export writes SavedModel and ONNX through TensorFlow and needs KERAS_BACKEND=tensorflow. "
            f"Received backend: {keras.backend.backend()}. Train on any backend, `model.save('model.keras')`, "
            "then export under TensorFlow: `KERAS_BACKEND=tensorflow kvae export RUN_DIR --out ARTIFACTS`."
        )
    if not isinstance(model, (kvae.VAE, HVAE)):
        raise ExportError(f"export_vae needs a kvae.VAE or a kvae.hvae.HVAE. Received: {type(model).__name__}")
    model = float32_twin(model)  # serving runtimes expect float32 graphs
    input_shape = tuple(int(d) for d in model.input_shape_)
    latent_dim, likelihood, num_classes = model.latent_dim, model.likelihood, model.num_classes
    num_components = model.num_pseudo_inputs if model.prior == "vamp" else None
    # An HVAE's levels (d1, d2) of its flat code z = [z1 | z2]; None for a one-level VAE.
    hierarchy = hierarchy_entry(model.latent_dims) if isinstance(model, HVAE) else None
    x = _check_images(check_images, input_shape)
    y_x, y_z = _check_labels(model, check_labels, len(x)), verify.check_labels(verify.NUM_CHECK_LATENTS, num_classes)
    kl_per_dim = _kl_per_dim(kl_per_dim, latent_dim)
    if hierarchy is None:
        tensors = model_tensors(input_shape, latent_dim, likelihood, num_classes, num_components)
        modules = _modules(model, input_shape, tensors)
    else:
        tensors = hierarchical_model_tensors(input_shape, model.latent_dims, likelihood, num_components)
        modules = _hierarchical_modules(model, tensors)
    out = os.path.abspath(os.fspath(out))
    with publish.staging(out, force) as tmp:
        paths = {}
        for name, module in modules.items():
            paths[name] = {
                "saved_model": _under(tmp, saved_model_path(name)),
                "onnx": _under(tmp, onnx_path(name)),
            }
            saved_model.save(module, paths[name]["saved_model"])
            os.makedirs(os.path.dirname(paths[name]["onnx"]))
            metadata = {
                "model": name,
                "latent_dim": latent_dim,
                "input_shape": list(input_shape),
                "likelihood": likelihood,
                "prior": model.prior,
                "kvae_version": kvae.__version__,
                **({} if num_classes is None else {"num_classes": num_classes}),
                **({} if num_components is None else {"num_components": num_components}),
                **({} if hierarchy is None else {"levels": hierarchy["levels"]}),
            }
            onnx_export.convert(module.serve, paths[name]["onnx"], name, tensors[name], metadata)
            triton.write_config(_under(tmp, triton_config_path(name)), name, tensors[name])
        diffs = verify.verify(model, paths, x, verify.check_latents(latent_dim), y_x, y_z)
        # The Gaussian's pixel variance lives in the VAE, not the decoder: a
        # likelihood computed from the artifacts needs it.
        log_var = float(np.asarray(model.log_var)) if likelihood == "gaussian" else None
        test_images.write(tmp, x, None if y_x is None else np.argmax(y_x, axis=1), num_classes)
        contents = manifest.build(
            tmp, kvae.__version__, input_shape, latent_dim, likelihood, tensors, training_config, test_metrics, log_var,
            num_classes, num_components, hierarchy, kl_per_dim,
        )
        manifest.write(tmp, contents)
    return ExportResult(out, contents, diffs)


def _under(folder, relpath):
    """Where a contract path ("/"-separated, relative to the artifacts folder) lies under `folder`."""
    return os.path.join(folder, *relpath.split("/"))


def _modules(model, input_shape, tensors):
    """{model name: tf.Module with a `serve` tf.function}, in the tensor table's order.

    A VampPrior's components are computed here, once, from the trained
    pseudo-inputs (model.prior_components()), and baked into the prior and
    log_prior graphs as constants.
    """
    from . import saved_model
    from .verify import prior_components

    modules = {
        ENCODER: saved_model.EncoderModule(model.encoder, input_shape, model.num_classes),
        DECODER: saved_model.DecoderModule(model.decoder, model.latent_dim, model.likelihood, model.num_classes),
    }
    if PRIOR in tensors:
        means, log_vars = prior_components(model)
        modules[PRIOR] = saved_model.PriorModule(means, log_vars, tensors[PRIOR])
        modules[LOG_PRIOR] = saved_model.LogPriorModule(means, log_vars, tensors[LOG_PRIOR])
    return modules


def _hierarchical_modules(model, tensors):
    """{model name: tf.Module} of an HVAE: encoder, decoder, prior, log_prior (kvae_export.saved_model's Hierarchical*).

    A VampPrior's components (over z2) are computed here, once, and baked into prior and log_prior as constants.
    """
    from . import saved_model
    from .verify import prior_components

    levels = model.latent_dims
    components = prior_components(model) if model.prior == "vamp" else (None, None)
    return {
        ENCODER: saved_model.HierarchicalEncoderModule(model.encoder_z2, model.encoder_z1, levels, tensors[ENCODER]),
        DECODER: saved_model.HierarchicalDecoderModule(model.decoder, levels, model.likelihood),
        PRIOR: saved_model.HierarchicalPriorModule(model.prior_z1, levels, tensors[PRIOR], *components),
        LOG_PRIOR: saved_model.HierarchicalLogPriorModule(model.prior_z1, levels, tensors[LOG_PRIOR], *components),
    }


def export_run(run_dir, out, force=False):
    """Exports the model of a `kvae train` run directory, checked on its dataset's first 256 test images.

    Reads RUN_DIR/model.keras, config.json and (if present) test_metrics.json and evaluation.json:
    the manifest's "kl_per_dim" comes from evaluation.json (`kvae evaluate`), else from test_metrics.json
    if it has the key, else the manifest has none. A RUN_DIR without them
    raises MissingPathError, an OUT that exists without force OutputExistsError (both usage errors),
    damaged run files RunDirError, unreadable check images DataError.
    """
    from kvae.rundir import RunDir  # the run directory's layout is RunDir's to spell

    run_dir = os.fspath(run_dir)
    run = RunDir(run_dir)
    model_path, config_path, metrics_path, evaluation_path = run.model, run.config, run.test_metrics, run.evaluation
    for path in (model_path, config_path):
        if not os.path.isfile(path):
            raise MissingPathError(
                f"{run_dir} is not a kvae run directory: {path} is missing. Train one with `kvae train --run-dir ...`."
            )
    publish.check_target(os.path.abspath(os.fspath(out)), force)  # fail before the slow part
    config = _read_json(config_path)
    metrics = _read_json(metrics_path) if os.path.isfile(metrics_path) else None
    evaluation = _read_json(evaluation_path) if os.path.isfile(evaluation_path) else None
    kl_source, kl_per_dim = next(
        ((path, found[KL_PER_DIM]) for path, found in ((evaluation_path, evaluation), (metrics_path, metrics))
         if isinstance(found, dict) and KL_PER_DIM in found),
        (None, None),
    )

    import keras

    import kvae  # noqa: F401  registers kvae.VAE for load_model
    import kvae.hvae  # noqa: F401  and kvae.hvae.HVAE
    from kvae.data import load_dataset

    try:
        splits = load_dataset(
            config.get("dataset", "fashion_mnist"), config.get("data_dir"), config.get("image_size"),
            config.get("color_mode"), skip_bad_images=bool(config.get("skip_bad_images")),
        )
    except DataError as e:
        raise DataError(f"Cannot load the check images of {run_dir}: {e}") from e
    x = splits.x_test[:NUM_CHECK_IMAGES].astype(np.float32) / 255.0
    labels = splits.y_test[:NUM_CHECK_IMAGES] if config.get("num_classes") else None
    from kvae.rundir import keras_file_problem

    redo = f"Train the run again (`kvae train --run-dir {run_dir}`), or copy its last checkpoint to model.keras."
    problem = keras_file_problem(model_path)  # Keras says "File not found" for a file that is there but no .keras
    if problem:
        raise RunDirError(f"{model_path} {problem}. {redo}")
    try:
        model = keras.saving.load_model(model_path, compile=False)  # no optimizer needed to export
    except Exception as e:  # a corrupt or foreign file: Keras raises ValueError, zipfile errors, ...
        raise RunDirError(f"Cannot load {model_path}: {e}. {redo}") from e
    try:
        kl_per_dim = _kl_per_dim(kl_per_dim, model.latent_dim)
    except ExportError as e:
        raise RunDirError(
            f"{kl_source}: {e}. It is not this model's evaluation: run `kvae evaluate {run_dir}` again, or delete it."
        ) from None
    return export_vae(
        model, out, check_images=x, check_labels=labels, force=force, training_config=config, test_metrics=metrics,
        kl_per_dim=kl_per_dim,
    )


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise RunDirError(f"Cannot read {path}: {e}. The run directory is damaged: train it again.") from e


def _kl_per_dim(values, latent_dim):
    """`values` as a list of latent_dim finite floats (None stays None), or ExportError saying what is wrong."""
    if values is None:
        return None
    try:
        kl = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        kl = None
    if kl is None or kl.shape != (latent_dim,):
        received = "not a list of numbers" if kl is None else f"shape {list(kl.shape)}"
    elif not np.all(np.isfinite(kl)):
        received = "NaN or Inf"
    else:
        return [float(v) for v in kl]
    raise ExportError(f"{KL_PER_DIM} must be {latent_dim} finite numbers, one per latent dimension; received {received}")


def _check_labels(model, labels, n):
    """One-hot (n, C) labels for the encoder check of a conditional model; None for an unconditional one."""
    from .verify import check_labels

    if model.num_classes is None:
        if labels is not None:
            raise ExportError("check_labels is only for conditional models (num_classes=C).")
        return None
    if labels is None:
        return check_labels(n, model.num_classes)
    try:
        return model.labels_for(labels, n)
    except ValueError as e:
        raise ExportError(f"check_labels: {e}") from e


def _check_images(images, input_shape):
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 1 + len(input_shape) or x.shape[1:] != input_shape or len(x) == 0:
        raise ExportError(
            f"check_images must have shape (n, {', '.join(map(str, input_shape))}) with n > 0, "
            f"float32 in [0, 1]. Received: shape {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ExportError("check_images must be finite.")
    return x
