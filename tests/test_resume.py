"""A run killed at any point and resumed is the run that was never killed: same history, weights and test metrics.

The killed run is a real `python -m kvae_cli train` process; the uninterrupted run and the resumes go through
the same command's entry point in the test process, and the numbers agree bit for bit across the two.
"""

import json
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from kvae.callbacks import load_state
from kvae.train import steps_per_execution

ARGS = ["--train-limit", "700", "--eval-limit", "1000", "--epochs", "3", "--latent-dim", "4", "--mlp-hidden-units", "32", "--seed", "3"]


def _argv(run_dir):
    return ["train", "--run-dir", str(run_dir), *ARGS]


def _train(run_dir):
    """`python -m kvae_cli train` in a real subprocess, to be killed."""
    return subprocess.Popen([sys.executable, "-m", "kvae_cli", *_argv(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _train_here(run_dir):
    """The same command through its entry point in this process (no kill to survive: no subprocess needed)."""
    from kvae_cli import main

    assert main(_argv(run_dir)) == 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("resume") / "whole"
    _train_here(run_dir)
    return run_dir


def _same_run(a, b):
    assert load_state(a)["history"] == load_state(b)["history"]  # every logged number, exactly
    assert json.loads((a / "test_metrics.json").read_text()) == json.loads((b / "test_metrics.json").read_text())
    for wa, wb in zip(keras.saving.load_model(a / "model.keras").get_weights(),
                      keras.saving.load_model(b / "model.keras").get_weights()):
        np.testing.assert_array_equal(wa, wb)


# An epoch here is 7 steps and a pass over 1,000 validation images: at least a few tenths of a second.
@pytest.mark.parametrize("delay", [0.0, 0.05], ids=["after-a-checkpoint", "mid-epoch"])
def test_a_killed_run_resumes_to_exactly_the_uninterrupted_run(uninterrupted, tmp_path, delay, capsys):
    run_dir = tmp_path / "killed"
    process = _train(run_dir)
    deadline = time.time() + 240
    while (load_state(run_dir) or {}).get("epoch", 0) < 1 and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    time.sleep(delay)
    process.kill()
    process.communicate(timeout=60)
    done = load_state(run_dir)["epoch"]
    assert 1 <= done < 3, f"the kill came too late (after epoch {done})"
    capsys.readouterr()
    _train_here(run_dir)
    assert f"Resuming {run_dir} after epoch {done} of 3." in capsys.readouterr().out
    _same_run(uninterrupted, run_dir)
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + 3  # the header and one row per epoch
    assert len(list((run_dir / "checkpoints").iterdir())) == 1  # only the last epoch's checkpoint is kept


def test_rerunning_a_finished_run_changes_nothing(uninterrupted, capsys):
    before = {p.name: p.read_bytes() for p in uninterrupted.iterdir() if p.is_file()}
    capsys.readouterr()
    _train_here(uninterrupted)
    assert "nothing to do" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in uninterrupted.iterdir() if p.is_file()} == before


def test_steps_per_execution_divides_the_epoch():
    # Keras runs whole executions on kvae's one-iterator-per-run batches: a count that does not divide
    # the epoch would run into the next epoch's batches (700 images in batches of 100: 7 steps).
    assert [steps_per_execution(n) for n in (7, 500, 391, 1)] == [7, 20, 17, 1]
    assert steps_per_execution(None) == 20 and steps_per_execution(500, replicas=2) == 1
