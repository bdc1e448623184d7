"""`kvae train`: data -> VAE -> model.fit, with resume, a NaN guard and pictures."""

import dataclasses
import os

import keras
import numpy as np

from kvae import architectures, figures
from kvae.callbacks import EpochCheckpoint, KLWarmup, StopOnNaN
from kvae.config import TrainConfig
from kvae.data import load_dataset
from kvae.data.splits import describe_data
from kvae.data import pipeline
from kvae.distribute import is_chief, is_multi_worker, make_strategy, scalar_logs_callback
from kvae.optimizers import FusedAdam
from kvae.precision import policy_scope
from kvae.rundir import RunDir
from kvae.hvae import HVAE
from kvae.vae import VAE
from kvae_contract.errors import ConfigError, RunDirError, TrainingDiverged  # TrainingDiverged: also kvae.train's


@dataclasses.dataclass
class TrainResult:
    model: VAE | HVAE
    history: list  # one dict of logs per completed epoch
    test_metrics: dict
    resumed_from: int  # epochs already done when this call started


def build_model(config, input_shape):
    """The VAE (levels 1) or HVAE (levels 2) a config describes (untrained), its layers under config.dtype_policy."""
    output_activation = None if config.likelihood == "bernoulli" else "sigmoid"
    objective = dict(
        likelihood=config.likelihood, beta=config.beta, free_bits=config.free_bits,
        gaussian_variance=config.gaussian_variance, seed=config.seed, prior=config.prior,
        num_pseudo_inputs=config.num_pseudo_inputs, objective=config.objective, iw_samples=config.iw_samples,
    )
    with policy_scope(config.dtype_policy):
        if config.levels == 2:
            submodels = architectures.hierarchical_mlp(
                input_shape, (config.latent_dim, config.latent_dim), hidden=config.mlp_hidden_units,
                layer=config.mlp_layer, log_var_bounds=config.log_var_bounds, output_activation=output_activation,
            )
            return HVAE(**submodels, **objective)
        encoder, decoder = architectures.build(
            config.architecture, input_shape, config.latent_dim, output_activation=output_activation,
            dense_units=config.conv_dense_units, num_classes=config.num_classes, hidden=config.mlp_hidden_units,
            mlp_layer=config.mlp_layer, log_var_bounds=config.log_var_bounds,
        )
        return VAE(encoder, decoder, num_classes=config.num_classes, **objective)


def init_pseudo_inputs(model, x_train_uint8, seed):
    """Sets a VampPrior's pseudo-inputs to K distinct training images (grey levels), drawn with PCG64(seed).

    Starting from data puts every component where posteriors live; the
    pseudo-inputs then move freely in [0, 1] with training.
    """
    if len(x_train_uint8) < model.num_pseudo_inputs:
        raise ConfigError(
            f"The VampPrior's {model.num_pseudo_inputs} pseudo-inputs start as distinct training images, but there are "
            f"only {len(x_train_uint8)}. Lower --num-pseudo-inputs. Received: num_pseudo_inputs={model.num_pseudo_inputs}"
        )
    rows = np.random.default_rng(seed).choice(len(x_train_uint8), model.num_pseudo_inputs, replace=False)
    model.pseudo_inputs.assign(np.asarray(x_train_uint8)[np.sort(rows)].astype(np.float32) / 255.0)


def monitored_bound(config):
    """The validation log that ranks epochs: the bound the objective optimizes, at KL weight 1."""
    return "val_negative_iw_bound" if config.objective == "iwae" else "val_negative_elbo"


def model_inputs(config, splits):
    """(train, validation, test) inputs: uint8 training images, prepared evaluation images.

    For a conditional model each is a `pipeline.labeled` dataset of
    {"x": image, "y": label} with the split's labels, checked against num_classes.
    """
    x_train = splits.x_train[: config.train_limit]
    x_val, x_test = pipeline.evaluation_views(splits.x_val, splits.x_test, config.binarize)  # the published draw
    n = config.eval_limit  # cut after the draw: the first n of the same binary images
    x_val, x_test = x_val[:n], x_test[:n]
    if config.num_classes is None:
        return x_train, x_val, x_test
    labels = (splits.y_train[: config.train_limit], splits.y_val[:n], splits.y_test[:n])
    for y in labels:
        if len(y) and (y.min() < 0 or y.max() >= config.num_classes):
            raise ConfigError(
                f"num_classes={config.num_classes} needs labels in [0, {config.num_classes}): set --num-classes to "
                f"the dataset's number of classes. Received: labels from {y.min()} to {y.max()} in {config.dataset}"
            )
    return tuple(pipeline.labeled(x, y) for x, y in zip((x_train, x_val, x_test), labels))


def learning_rate(config, num_train):
    """A float, or a cosine decay to 0 over all training steps (kept in the optimizer, so resume-safe)."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    steps = config.epochs * -(-num_train // config.batch_size)
    return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps)


def train(config, splits=None, verbose="auto", strategy=None, callbacks=(), optimizer=None, train_data=None):
    """Trains (or resumes) the run in `config.run_dir` and writes its files.

    Re-running with the same config resumes after the last completed epoch;
    a different config for an existing run directory is an error. `strategy`
    (a tf.distribute strategy) overrides `config.strategy`. Under a
    multi-worker strategy every worker runs this; only the chief writes.

    Hooks, so that users and the benchmarks extend training without patching it:
        callbacks: Keras callbacks run after kvae's own (warm-up, NaN guard,
            checkpoint, TensorBoard), in the order given.
        optimizer: a Keras optimizer to use instead of FusedAdam with the
            config's learning rate and schedule. A resumed run loads its saved
            optimizer state into it, so pass the same kind of optimizer again.
        train_data: a callable (x_train, config) -> tf.data.Dataset of training
            batches, instead of kvae.data.pipeline.train_dataset.
    """
    strategy = strategy or make_strategy(config.strategy)
    chief = is_chief()
    run = RunDir(config.run_dir)
    # Nothing is written to the run directory until the data, the config and the saved state (if any) have been
    # accepted: a failed start (a typo in --image-folder) leaves no config.json that would refuse the corrected command.
    if splits is None:
        splits = load_dataset(config.dataset, config.data_dir, config.image_size, config.color_mode,
                              skip_bad_images=config.skip_bad_images)
    # config.json records the image size and colour mode the data turned out to have (not compared on resume).
    config = dataclasses.replace(config, resolved_data=describe_data(splits))
    x_train, x_val, x_test = model_inputs(config, splits)
    if chief:
        _check_config(config)  # an existing run's config.json: read only

    checkpoint = EpochCheckpoint(
        run, monitor=monitored_bound(config), keep_best=config.keep_best, patience=config.early_stopping_patience
    )
    keras.utils.set_random_seed(config.seed)  # weight initialisation
    with strategy.scope():  # variables, optimizer state and checkpoints live under the strategy
        model = build_model(config, splits.input_shape)
        if config.prior == "vamp":
            init_pseudo_inputs(model, x_train, config.seed)
        model.compile(
            optimizer=optimizer or FusedAdam(learning_rate(config, len(x_train))),  # Adam's math, fewer passes
            steps_per_execution=steps_per_execution(
                pipeline.batches_per_epoch(len(x_train), config.batch_size) if train_data is None else None,
                strategy.num_replicas_in_sync,
            ),
        )
        # One validation batch builds the model before a checkpoint's weights are loaded into it (resumes only).
        example = next(iter(pipeline.eval_dataset(x_val, 2))) if checkpoint.saved is not None else None
        done = checkpoint.resume(model, example)  # the last checkpoint's weights and optimizer state, if any
    finished = done >= config.epochs or checkpoint.stopped_early
    if finished and chief and os.path.exists(run.test_metrics):
        # A finished run is left as it is (nothing is written): check that its model loads, report what it measured.
        source = run.best if config.keep_best and checkpoint.best is not None else checkpoint.saved["checkpoint_path"]
        run.load_weights(
            model, run.model, "the finished run's model",
            f"Copy {source} (the {'best' if source == run.best else 'last'} epoch's model) to {run.model}, "
            f"or delete {run.path} and train again.",
        )
        metrics = run.read_json(
            run.test_metrics, fix=f"Delete {run.test_metrics} and run the same command to evaluate the run again."
        )
        print(f"{config.run_dir} finished after epoch {done}; nothing to do.")
        return TrainResult(model, checkpoint.rows, metrics, done)
    # Everything has been accepted: only now is the run directory created and config.json written.
    os.makedirs(run.path, exist_ok=True)
    if chief:
        _write_config(config)
    if done:
        print(f"Resuming {config.run_dir} after epoch {done} of {config.epochs}.")
    if chief:
        print(describe_devices(strategy))

    nan_guard = StopOnNaN()
    kvae_callbacks = [nan_guard]
    if chief:
        kvae_callbacks += [checkpoint, keras.callbacks.TensorBoard(run.logs)]
    if config.warmup_epochs:
        kvae_callbacks.insert(0, KLWarmup(config.beta, config.warmup_epochs))
    if is_multi_worker(strategy):
        kvae_callbacks.insert(0, scalar_logs_callback())
    if not finished:
        if train_data is None:  # each epoch's batches from (seed, epoch) alone: a resumed run draws the same ones
            batches = pipeline.train_dataset(
                x_train, config.batch_size, config.binarize, seed=config.seed, epochs=config.epochs, first_epoch=done
            )
            steps = pipeline.batches_per_epoch(len(x_train), config.batch_size)
        else:
            batches, steps = train_data(x_train, config), None
        model.fit(
            _shard_by_data(batches),
            epochs=config.epochs,
            initial_epoch=done,
            steps_per_epoch=steps,
            validation_data=pipeline.eval_dataset(x_val, config.batch_size),
            callbacks=kvae_callbacks + list(callbacks),
            shuffle=False,  # the pipeline shuffles, seeded
            verbose=verbose,
        )
    if nan_guard.failed_at is not None:
        epoch, batch = nan_guard.failed_at
        saved = len(checkpoint.rows)
        kept = f"{run.model} keeps the last good model (epoch {saved})" if saved else "no epoch had completed, so no model was saved"
        raise TrainingDiverged(
            f"The loss became NaN/Inf in epoch {epoch + 1}, batch {batch + 1}; training stopped and {kept}. "
            "Lower --learning-rate, use a warm-up (--warmup-epochs), or check the data for NaN."
        )

    if config.keep_best and checkpoint.best is not None:
        # Evaluate (and draw) the best-validation weights, which model.keras holds.
        run.load_weights(model, run.model, "the best epoch's model", f"Copy {run.best} to {run.model} and run again.")
    model.kl_weight.assign(config.beta)
    test_metrics = evaluate_elbo(model, x_test, config.batch_size)  # collective: every worker runs it
    if not chief:
        return TrainResult(model, checkpoint.rows, test_metrics, done)
    run.write_json(run.test_metrics, test_metrics)
    n = config.eval_limit
    figures.write_all(model, splits.x_test[:n], splits.y_test[:n], checkpoint.rows, run.path, config.seed, config.dataset,
                      splits.class_names)
    return TrainResult(model, checkpoint.rows, test_metrics, done)


def steps_per_execution(steps_per_epoch, replicas=1, most=20):
    """Training steps per tf.function call: up to `most` (1.31x samples/s at 20 on the MLP, BENCHMARKS.md).

    kvae's epoch-indexed batches keep one iterator across epochs, and Keras
    runs whole executions, so the count must divide the steps of an epoch,
    or an execution would run into the next epoch's batches. One step under
    several replicas, where Keras 3's multi-step loop fails multi-worker.
    """
    if replicas > 1:
        return 1
    if steps_per_epoch is None:  # a dataset of the caller's: Keras stops an execution at its end
        return most
    return max(d for d in range(1, most + 1) if steps_per_epoch % d == 0)


def describe_devices(strategy):
    """One line: the Keras backend and the devices training runs on."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        return f"Keras backend: {backend}"
    import tensorflow as tf

    gpus = [d.name.replace("/physical_device:", "") for d in tf.config.list_physical_devices("GPU")]
    where = ", ".join(gpus) if gpus else "CPU (no GPU visible to TensorFlow)"
    return (
        f"Keras backend: tensorflow {tf.__version__}; training on {where}; "
        f"{strategy.num_replicas_in_sync} replica(s) under {type(strategy).__name__}"
    )


def evaluate_elbo(model, x, batch_size):
    """One-sample estimate of the test negative ELBO and its parts, in nats per image."""
    logs = model.evaluate(pipeline.eval_dataset(x, batch_size), return_dict=True, verbose=0)
    recon, kl = float(np.mean(logs["reconstruction_loss"])), float(np.mean(logs["kl_loss"]))
    metrics = {"negative_elbo": recon + kl, "reconstruction_loss": recon, "kl_loss": kl, "num_examples": len(x)}
    if "negative_iw_bound" in logs:
        metrics["negative_iw_bound"] = float(np.mean(logs["negative_iw_bound"]))
    return metrics


def _shard_by_data(dataset):
    """Multi-worker runs split the (global) batches by element: in-memory data has no files to shard by."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


#: Settings that may change between the runs of one run directory: more epochs, another strategy, and where the
#: directory is (a relative or absolute --run-dir, or a copied or moved run, is the same run).
RESUMABLE_CHANGES = ("epochs", "strategy", "run_dir", "resolved_data")  # resolved_data: written by train()


def _check_config(config):
    """Refuses a config that differs from the one saved in an existing run directory (reads only)."""
    path = RunDir(config.run_dir).config
    if not os.path.exists(path):
        return
    try:
        old = TrainConfig.load(path).to_dict()
    except ConfigError as e:  # valid JSON with invalid settings: a damaged file, not the user's flags
        raise RunDirError(
            f"{path} does not hold a valid training config ({e}). Restore it, or use a new --run-dir."
        ) from None
    new = config.to_dict()
    changed = {k: (old.get(k), new[k]) for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k]}
    if changed:
        raise ConfigError(
            f"{config.run_dir} holds a run with a different config {changed} (saved, requested). "
            "Use a new --run-dir, or the saved settings to resume it."
        )


def _write_config(config):
    """config.json, replaced atomically (a kill leaves the old file or the new one)."""
    path = RunDir(config.run_dir).config
    config.save(path + ".tmp")
    os.replace(path + ".tmp", path)
