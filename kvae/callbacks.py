"""Training callbacks: KL warm-up, a crash-safe per-epoch checkpoint, a NaN guard."""

import json
import os
import shutil

import keras
import numpy as np

STATE_FILE = "state.json"
MODEL_FILE = "model.keras"
BEST_FILE = "best.keras"
HISTORY_FILE = "history.csv"
CHECKPOINT_DIR = "checkpoints"


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

    Layout in `run_dir`: checkpoints/epoch-NNNN.keras (model with optimizer
    state), state.json (the last completed epoch, the history rows and the
    best epoch so far; it is replaced atomically and only after its
    checkpoint is complete, so a kill at any moment leaves a consistent
    pair), model.keras and history.csv (the model to use and its history,
    also replaced atomically). model.keras is the last epoch's model, or
    with keep_best=True the best one by `monitor` (lower is better), which
    is also kept as best.keras while training goes on.

    Args:
        run_dir: the run directory.
        history: rows of the epochs already done (when resuming).
        monitor: the log to rank epochs by, e.g. "val_negative_elbo"; None ranks none.
        keep_best: model.keras holds the best epoch instead of the last.
        patience: None, or stop training after this many epochs without a new best.
        best: {"epoch": e, "value": v} saved by an earlier call (when resuming), or None.
    """

    def __init__(self, run_dir, history=(), monitor=None, keep_best=False, patience=None, best=None):
        super().__init__()
        if (keep_best or patience) and monitor is None:
            raise ValueError(f"keep_best and patience need a `monitor`. Received: monitor=None, keep_best={keep_best}, patience={patience}")
        self.run_dir = run_dir
        self.rows = list(history)
        self.monitor = monitor
        self.keep_best = keep_best
        self.patience = patience
        self.best = dict(best) if best else None
        self.stopped_early = False

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
        ckpt_dir = os.path.join(self.run_dir, CHECKPOINT_DIR)
        os.makedirs(ckpt_dir, exist_ok=True)
        ckpt = os.path.join(ckpt_dir, f"epoch-{epoch + 1:04d}.keras")
        self.model.save(ckpt)
        best_path = os.path.join(self.run_dir, BEST_FILE)
        if self.keep_best and improved:
            _atomic_copy(ckpt, best_path)
        state = {
            "epoch": epoch + 1, "checkpoint": os.path.basename(ckpt), "history": self.rows,
            "best": self.best, "stopped_early": self.stopped_early,
        }
        _atomic_write(os.path.join(self.run_dir, STATE_FILE), json.dumps(state, indent=1))
        # Older checkpoints are no longer referenced by state.json.
        for name in os.listdir(ckpt_dir):
            if name != os.path.basename(ckpt):
                os.remove(os.path.join(ckpt_dir, name))
        _atomic_copy(best_path if self.keep_best else ckpt, os.path.join(self.run_dir, MODEL_FILE))
        _atomic_write(os.path.join(self.run_dir, HISTORY_FILE), history_csv(self.rows))


def load_state(run_dir):
    """The saved training state of a run, or None if it has finished no epoch."""
    path = os.path.join(run_dir, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        state = json.load(f)
    state["checkpoint_path"] = os.path.join(run_dir, CHECKPOINT_DIR, state["checkpoint"])
    return state


def history_csv(rows):
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = [",".join(keys)] + [",".join(repr(row.get(k, "")) for k in keys) for row in rows]
    return "\n".join(lines) + "\n"


def _atomic_write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_copy(src, dst):
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
