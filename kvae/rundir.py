"""The run directory: the one place that knows where a training run keeps its files.

    RUN/
      config.json          the TrainConfig (written once the data and config are accepted)
      state.json           last completed epoch, history rows, best epoch (replaced atomically)
      checkpoints/epoch-NNNN.keras   the last completed epoch: model + optimizer state
      model.keras          the model to use: the last epoch, or the best one with keep_best
      best.keras           keep_best: the best-validation epoch while training goes on
      history.csv          one row per completed epoch
      test_metrics.json    test negative ELBO and its parts, written at the end of training
      evaluation.json      `kvae evaluate`: NLL, errors, per-image NLL
      evaluation.partial.npz   an unfinished `kvae evaluate`: the batches done so far (removed when it ends)
      logs/                TensorBoard
      *.png                pictures (kvae.figures names them)

Every other module asks a RunDir for a path; none spells a file name of a run.
Writes that replace a file go through a temporary file and `os.replace`, so a
kill at any moment leaves the old file or the new one, never half of one.
"""

import json
import numbers
import os
import shutil
import zipfile

from kvae_contract.errors import RunDirError


class RunDir:
    """The files of one run, under `path` (a str or os.PathLike)."""

    CONFIG = "config.json"
    STATE = "state.json"
    CHECKPOINTS = "checkpoints"
    MODEL = "model.keras"
    BEST = "best.keras"
    HISTORY = "history.csv"
    TEST_METRICS = "test_metrics.json"
    EVALUATION = "evaluation.json"
    EVALUATION_PROGRESS = "evaluation.partial.npz"
    LOGS = "logs"

    def __init__(self, path):
        self.path = os.fspath(path.path if isinstance(path, RunDir) else path)

    def __repr__(self):
        return f"RunDir({self.path!r})"

    def file(self, name):
        """The path of `name` inside the run directory."""
        return os.path.join(self.path, name)

    # === Paths ===

    @property
    def config(self):
        return self.file(self.CONFIG)

    @property
    def state(self):
        return self.file(self.STATE)

    @property
    def model(self):
        return self.file(self.MODEL)

    @property
    def best(self):
        return self.file(self.BEST)

    @property
    def history(self):
        return self.file(self.HISTORY)

    @property
    def test_metrics(self):
        return self.file(self.TEST_METRICS)

    @property
    def evaluation(self):
        return self.file(self.EVALUATION)

    @property
    def evaluation_progress(self):
        return self.file(self.EVALUATION_PROGRESS)

    @property
    def logs(self):
        return self.file(self.LOGS)

    @property
    def checkpoints(self):
        return self.file(self.CHECKPOINTS)

    def checkpoint(self, epochs_done):
        """The checkpoint written after `epochs_done` completed epochs."""
        return os.path.join(self.checkpoints, f"epoch-{epochs_done:04d}.keras")

    # === Reading and writing ===

    def read_state(self):
        """The saved training state (dict with "checkpoint_path" added), or None if no epoch has completed.

        state.json is checked key by key (RunDirError naming the file, the key and the fix),
        so a damaged one stops a resume here instead of as a KeyError deep in training.
        """
        if not os.path.exists(self.state):
            return None
        state = self.read_json(self.state, fix=self.restart_hint())
        problem = _state_problem(state)
        if problem:
            raise RunDirError(f"{self.state} is damaged: {problem}. {self.restart_hint()}")
        state["checkpoint_path"] = os.path.join(self.checkpoints, state["checkpoint"])
        return state

    def restart_hint(self):
        """The fix for a run whose saved progress is lost: start over, in place or elsewhere."""
        return f"Delete {self.state} to train {self.path} from the start, or use a new --run-dir."

    def write_state(self, state):
        atomic_write(self.state, json.dumps(state, indent=1))

    def read_json(self, path, fix=None):
        """The JSON value in `path`; RunDirError naming the file (and `fix`, what to do) if it is not valid JSON."""
        try:
            with open(path) as f:
                return json.load(f)
        except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise RunDirError(
                f"{path} is not valid JSON ({e}): the run directory is damaged. {fix or 'Use a new --run-dir.'}"
            ) from None

    def load_weights(self, model, path, what, fix):
        """model.load_weights(path) for a .keras file of this run, or RunDirError naming it, `what` it is and `fix`.

        A missing or non-zip file is named as such (Keras itself would say "File not found" for a file
        that exists but is not a .keras archive); a zip that Keras refuses keeps Keras's reason.
        """
        problem = keras_file_problem(path)
        if problem is None:
            try:
                model.load_weights(path)
                return
            except Exception as e:  # missing layers, another model's weights: Keras raises several types
                problem = f"cannot be loaded ({type(e).__name__}: {e})"
        raise RunDirError(f"{path}, {what}, {problem}. {fix}")

    def write_json(self, path, data):
        atomic_write(path, json.dumps(data, indent=2))

    def keep_only_checkpoint(self, path):
        """Removes every checkpoint but `path` (state.json no longer refers to them)."""
        for name in os.listdir(self.checkpoints):
            if os.path.join(self.checkpoints, name) != path:
                os.remove(os.path.join(self.checkpoints, name))


def keras_file_problem(path):
    """None if `path` looks like a .keras file (a zip archive), else what is wrong with it, in words."""
    if not os.path.exists(path):
        return "is missing"
    if not os.path.isfile(path):
        return "is not a file"
    if not zipfile.is_zipfile(path):
        return "is not a Keras model file (not a zip archive: truncated, or overwritten by something else)"
    return None


def _state_problem(state):
    """What is wrong with a state.json value (as EpochCheckpoint writes it), or None.

    Keys: epoch (int >= 1), checkpoint (a file name in checkpoints/), history (list of dicts),
    best (None or {"epoch": int, "value": number}), stopped_early (bool), noise_state
    (optional: None or a list of ints). Unknown keys are allowed (a newer kvae may add some).
    """
    if not isinstance(state, dict):
        return f"it must hold a JSON object, not {type(state).__name__}"
    missing = [k for k in ("epoch", "checkpoint") if k not in state]
    if missing:
        return f"it has no {' and no '.join(repr(k) for k in missing)} key (keys: {sorted(state)})"
    epoch, checkpoint = state["epoch"], state["checkpoint"]
    if not _is_int(epoch) or epoch < 1:
        return f"'epoch' must be an int >= 1, not {epoch!r}"
    if not isinstance(checkpoint, str) or not checkpoint or os.path.basename(checkpoint) != checkpoint \
            or checkpoint in (".", ".."):
        return f"'checkpoint' must be a file name in checkpoints/, not {checkpoint!r}"
    history = state.get("history", [])
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        return "'history' must be a list of objects (one per completed epoch)"
    best = state.get("best")
    if best is not None and not (
        isinstance(best, dict) and _is_int(best.get("epoch")) and _is_number(best.get("value"))
    ):
        return f"'best' must be null or {{\"epoch\": int, \"value\": number}}, not {best!r}"
    if not isinstance(state.get("stopped_early", False), bool):
        return f"'stopped_early' must be true or false, not {state['stopped_early']!r}"
    noise = state.get("noise_state")
    if noise is not None and not (isinstance(noise, list) and all(_is_int(v) for v in noise)):
        return f"'noise_state' must be null or a list of ints, not {noise!r}"
    return None


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def atomic_write(path, data):
    """Replaces `path` with `data` (str, or bytes), through a synced temporary file and `os.replace`."""
    tmp = path + ".tmp"
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_copy(src, dst):
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
