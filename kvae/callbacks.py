"""Training callbacks: KL warm-up, a crash-safe per-epoch checkpoint, a NaN guard."""

import os

import keras
import numpy as np

from kvae.rundir import RunDir, atomic_copy, atomic_write, keras_file_problem
from kvae_contract.errors import ConfigError, RunDirError


class KLWarmup(keras.callbacks.Callback):
    """Ramps the KL weight linearly to `beta` over the first `epochs` epochs.

    Epoch e (0-based) trains with beta * min(1, (e + 1) / epochs), so the
    decoder is not starved early on and the weight reaches beta in epoch `epochs`.
    """

    def __init__(self, beta, epochs):
        super().__init__()
        self.beta = beta
        self.epochs = epochs

    def weight(self, epoch):
        return self.beta * min(1.0, (epoch + 1) / self.epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.kl_weight.assign(self.weight(epoch))


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where it happened."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.failed_at = None  # (epoch, batch), 0-based

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.all(np.isfinite(loss)):
            self.failed_at = (self.epoch, batch)
            self.model.stop_training = True


class EpochCheckpoint(keras.callbacks.Callback):
    """After every finished epoch with a finite loss: saves the model and the history.

    Files (kvae.rundir.RunDir names them): the epoch's checkpoint (model with
    optimizer state), state.json (the last completed epoch, the history rows
    and the best epoch so far; it is replaced atomically and only after its
    checkpoint is complete, so a kill at any moment leaves a consistent
    pair), model.keras and history.csv (the model to use and its history,
    also replaced atomically). model.keras is the last epoch's model, or
    with keep_best=True the best one by `monitor` (lower is better), which
    is also kept as best.keras while training goes on.

    Resuming lives here too, as in Keras's BackupAndRestore: `resume(model)`
    loads the last checkpoint's weights and optimizer state into a freshly
    built model, and the rows, best epoch and epoch count come from state.json.

    Args:
        run_dir: the run directory (a path or a RunDir).
        history: rows of the epochs already done; by default those of state.json.
        monitor: the log to rank epochs by, e.g. "val_negative_elbo"; None ranks none.
        keep_best: model.keras holds the best epoch instead of the last.
        patience: None, or stop training after this many epochs without a new best.
    """

    def __init__(self, run_dir, history=None, monitor=None, keep_best=False, patience=None):
        super().__init__()
        if (keep_best or patience) and monitor is None:
            raise ConfigError(f"keep_best and patience need a `monitor`. Received: monitor=None, keep_best={keep_best}, patience={patience}")
        self.run = RunDir(run_dir)
        self.monitor = monitor
        self.keep_best = keep_best
        self.patience = patience
        self.saved = self.run.read_state()  # None: a new run
        saved = self.saved or {}
        self.rows = list(saved.get("history", []) if history is None else history)
        self.best = saved.get("best")
        self.stopped_early = saved.get("stopped_early", False)
        self.initial_epoch = saved.get("epoch", 0)  # epochs already done

    def resume(self, model, example):
        """Loads the last checkpoint (weights and optimizer state) into `model`, compiled as saved.

        `example`: one batch of model inputs, to build a model that has not
        been called yet. Returns the number of epochs already done (0 for a new run).
        """
        if self.saved is None:
            return 0
        if not model.built:
            model(example)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        self.run.load_weights(
            model, self.saved["checkpoint_path"], f"the checkpoint {self.run.state} resumes from", self.run.restart_hint()
        )
        if self.keep_best and self.best is not None:  # copied to model.keras and loaded after training: check it now
            problem = keras_file_problem(self.run.best)
            if problem:
                raise RunDirError(
                    f"{self.run.best}, the best epoch's model (keep_best; epoch {self.best['epoch']}), {problem}. "
                    f"{self.run.restart_hint()}"
                )
        noise = getattr(model, "sampling", None)
        if noise is not None and self.saved.get("noise_state") is not None:
            state = noise.seed_generator.state
            saved = self.saved["noise_state"]
            if len(saved) != int(np.prod(state.shape)):
                raise RunDirError(
                    f"{self.run.state} is damaged: 'noise_state' has {len(saved)} values, the model's noise "
                    f"state {tuple(state.shape)}. {self.run.restart_hint()}"
                )
            state.assign(np.asarray(saved, dtype=state.dtype).reshape(state.shape))
        return self.initial_epoch

    def on_epoch_end(self, epoch, logs=None):
        # np.mean: under a multi-worker strategy logs are length-1 vectors (see kvae.distribute).
        logs = {k: float(np.mean(v)) for k, v in (logs or {}).items()}
        if not np.isfinite(logs.get("loss", np.nan)):
            return  # keep the last good checkpoint
        self.rows.append({"epoch": epoch, **logs})
        value = logs.get(self.monitor, np.nan) if self.monitor else np.nan
        improved = bool(np.isfinite(value)) and (self.best is None or value < self.best["value"])
        if improved:
            self.best = {"epoch": epoch + 1, "value": value}
        if self.patience and self.best and epoch + 1 - self.best["epoch"] >= self.patience:
            self.stopped_early = True
            self.model.stop_training = True
        os.makedirs(self.run.checkpoints, exist_ok=True)
        ckpt = self.run.checkpoint(epoch + 1)
        self.model.save(ckpt)
        if self.keep_best and improved:
            atomic_copy(ckpt, self.run.best)
        self.run.write_state({
            "epoch": epoch + 1, "checkpoint": os.path.basename(ckpt), "history": self.rows,
            "best": self.best, "stopped_early": self.stopped_early,
            # The sampling layer's noise stream: not in the .keras file, needed for an exact resume.
            "noise_state": _noise_state(self.model),
        })
        self.run.keep_only_checkpoint(ckpt)  # older ones are no longer referenced by state.json
        atomic_copy(self.run.best if self.keep_best else ckpt, self.run.model)
        atomic_write(self.run.history, history_csv(self.rows))


def _noise_state(model):
    noise = getattr(model, "sampling", None)
    return None if noise is None else [int(v) for v in keras.ops.convert_to_numpy(noise.seed_generator.state)]


def load_state(run_dir):
    """The saved training state of a run, or None if it has finished no epoch."""
    return RunDir(run_dir).read_state()


def history_csv(rows):
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = [",".join(keys)] + [",".join(repr(row.get(k, "")) for k in keys) for row in rows]
    return "\n".join(lines) + "\n"
