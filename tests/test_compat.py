"""Files written by kvae before the house moved (commit 7e2f6c9: kvae.cli, top-level export/serving) still work.

The old code is taken from git history, run in a subprocess to write a run
directory and an export, and today's code resumes the run, loads its model
and serves the export.
"""

import io
import subprocess
import sys
import tarfile

import keras
import numpy as np
import pytest

from kvae.callbacks import load_state
from kvae_serving import Runtime

BEFORE_THE_MOVE = "7e2f6c9"
REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
ARGS = ["--train-limit", "300", "--latent-dim", "3", "--mlp-hidden-units", "16", "--seed", "1"]


@pytest.fixture(scope="module")
def old_files(tmp_path_factory):
    """(run_dir, artifacts) written by the code of BEFORE_THE_MOVE."""
    tree = tmp_path_factory.mktemp("old-code")
    known = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{BEFORE_THE_MOVE}^{{commit}}"], timeout=60)
    if known.returncode != 0:  # a shallow clone or an exported tree: the old code is not there to run
        pytest.skip(f"commit {BEFORE_THE_MOVE} is not in this checkout's history")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE_THE_MOVE], capture_output=True, timeout=120)
    assert archive.returncode == 0, archive.stderr.decode()
    tarfile.open(fileobj=io.BytesIO(archive.stdout)).extractall(tree, filter="data")
    run_dir, artifacts = tree / "run", tree / "artifacts"
    for argv in (["-m", "kvae.cli", "train", "--run-dir", str(run_dir), "--epochs", "1", *ARGS],
                 ["-m", "export.cli", str(run_dir), "--out", str(artifacts)]):
        out = subprocess.run([sys.executable, *argv], cwd=tree, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
    assert "kvae_contract" not in (tree / "kvae" / "train.py").read_text()  # really the old code
    return run_dir, artifacts


def test_a_run_written_before_the_move_loads_and_resumes(old_files, capsys):
    run_dir, _ = old_files
    old_model = keras.saving.load_model(run_dir / "model.keras")
    from kvae_cli import main  # today's command, in this process

    capsys.readouterr()
    assert main(["train", "--run-dir", str(run_dir), "--epochs", "2", *ARGS]) == 0
    out = capsys.readouterr().out
    assert "Resuming" in out and "after epoch 1 of 2" in out
    assert [row["epoch"] for row in load_state(run_dir)["history"]] == [0, 1]
    new_model = keras.saving.load_model(run_dir / "model.keras")
    assert any(not np.array_equal(a, b) for a, b in zip(old_model.get_weights(), new_model.get_weights()))


def test_an_export_written_before_the_move_is_served(old_files):
    _, artifacts = old_files
    runtime = Runtime(artifacts)
    assert runtime.manifest["format_version"] == 1 and runtime.prior == "normal"
    images = runtime.sample(3, seed=0)
    assert images.shape == (3, 28, 28, 1) and np.all((images >= 0) & (images <= 1))
