"""Reading a finished run directory back: its config, model and data."""

import json
import os

from kvae.config import TrainConfig
from kvae.rundir import RunDir, keras_file_problem
from kvae_contract.errors import MissingPathError, RunDirError


def load_run(run_dir):
    """Returns (config, model) of a run directory, with errors that say what is missing.

    A folder without config.json or model.keras raises MissingPathError (not a finished run);
    a model.keras Keras cannot load, RunDirError.
    """
    import keras

    run = RunDir(run_dir)
    config_path, model_path = run.config, run.model
    for path in (config_path, model_path):
        if not os.path.exists(path):
            raise MissingPathError(
                f"{path} not found: {run_dir} is not a finished kvae run "
                f"(train it with `kvae train --run-dir {run_dir}`)."
            )
    config = TrainConfig.load(config_path)
    problem = keras_file_problem(model_path)  # Keras says "File not found" for a file that is there but no .keras
    if problem:
        raise RunDirError(
            f"{model_path} {problem}. Copy a checkpoint from {run.checkpoints} to it, or train the run again."
        )
    try:
        model = keras.saving.load_model(model_path)
    except Exception as e:  # a damaged or foreign file: Keras raises ValueError, zipfile errors, ...
        raise RunDirError(
            f"{model_path} cannot be loaded ({type(e).__name__}: {e}). Copy a checkpoint from "
            f"{RunDir(run_dir).checkpoints} to it, or train the run again."
        ) from None
    return config, model


def evaluate_run(run_dir, k=5000, seed=0, limit=None, batch_size=100, verbose=1):
    """Evaluates a run on its test set (binarized once if Bernoulli) and writes evaluation.json.

    The batches done so far are kept in the run directory until the end, so the same call
    continues a stopped evaluation (kvae.evaluate_progress); verbose 2 prints a line per batch.
    """
    from kvae.data import load_dataset, protocol  # NumPy only: evaluation runs on any Keras backend
    from kvae.evaluate import evaluate

    config, model = load_run(run_dir)
    splits = load_dataset(config.dataset, config.data_dir, config.image_size, config.color_mode,
                          skip_bad_images=config.skip_bad_images)
    _, x = protocol.evaluation_views(splits.x_val, splits.x_test, config.binarize)  # drawn whole, then cut
    run = RunDir(run_dir)
    result = evaluate(model, x[:limit], splits.y_test[:limit], k=k, seed=seed, batch_size=batch_size, verbose=verbose,
                      progress_path=run.evaluation_progress)
    result["test_draw"] = protocol.draw_name(config.binarize)
    run.write_json(run.evaluation, result)
    os.remove(run.evaluation_progress)  # after evaluation.json: a kill in between leaves a record that finishes at once
    return result


def compare_runs(run_dir_a, run_dir_b):
    """Paired comparison of two evaluated runs (their evaluation.json files); see kvae.evaluate.compare."""
    from kvae.evaluate import compare

    results = []
    for run_dir in (run_dir_a, run_dir_b):
        path = RunDir(run_dir).evaluation
        if not os.path.exists(path):
            raise MissingPathError(f"{path} not found: evaluate the run first with `kvae evaluate {run_dir}`.")
        try:
            with open(path) as f:
                results.append(json.load(f))
        except ValueError as e:
            raise RunDirError(f"{path} is not valid JSON ({e}): evaluate the run again with `kvae evaluate {run_dir}`.") from None
    return compare(*results)


def plot_run(run_dir):
    """Redraws every picture of a run; returns their paths."""
    from kvae import figures
    from kvae.callbacks import load_state
    from kvae.data import load_dataset

    config, model = load_run(run_dir)
    splits = load_dataset(config.dataset, config.data_dir, config.image_size, config.color_mode,
                          skip_bad_images=config.skip_bad_images)
    state = load_state(run_dir)
    rows = state["history"] if state else []
    return figures.write_all(
        model, splits.x_test, splits.y_test, rows, run_dir, config.seed, config.dataset, splits.class_names
    )
