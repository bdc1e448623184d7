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
      logs/                TensorBoard
      *.png                pictures (kvae.figures names them)

Every other module asks a RunDir for a path; none spells a file name of a run.
Writes that replace a file go through a temporary file and `os.replace`, so a
kill at any moment leaves the old file or the new one, never half of one.
"""

import json
import os
import shutil

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
        """The saved training state (dict with "checkpoint_path" added), or None if no epoch has completed."""
        if not os.path.exists(self.state):
            return None
        state = self.read_json(self.state)
        if not isinstance(state, dict) or not isinstance(state.get("checkpoint"), str):
            raise RunDirError(
                f"{self.state} names no checkpoint: the run directory is damaged. Delete {self.state} to train "
                f"from the start, or use a new --run-dir."
            )
        state["checkpoint_path"] = os.path.join(self.checkpoints, state["checkpoint"])
        return state

    def write_state(self, state):
        atomic_write(self.state, json.dumps(state, indent=1))

    def read_json(self, path):
        """The JSON value in `path`; RunDirError if it is not valid JSON (a damaged run file)."""
        try:
            with open(path) as f:
                return json.load(f)
        except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise RunDirError(f"{path} is not valid JSON ({e}): the run directory is damaged.") from None

    def write_json(self, path, data):
        atomic_write(path, json.dumps(data, indent=2))

    def keep_only_checkpoint(self, path):
        """Removes every checkpoint but `path` (state.json no longer refers to them)."""
        for name in os.listdir(self.checkpoints):
            if os.path.join(self.checkpoints, name) != path:
                os.remove(os.path.join(self.checkpoints, name))


def atomic_write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_copy(src, dst):
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
