"""Faults in the data, met before anything trains: real bad files in real folders, the real `kvae train`
in a subprocess, each case bounded in time.

Image folders are read once with Pillow first: every unreadable file is named in one error (exit 3), or left
out with a warning under --skip-bad-images; mixed sizes and colour modes are reported and resolved in the open,
and config.json records what the data turned out to be while a rerun of the same command still resumes.
tensorflow-datasets names that need a download fail in seconds on a machine that cannot reach the download
host, and unknown names fail at once with the closest names.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from kvae.data import DataError, load_image_folder
from kvae_contract.errors import ConfigError

TINY = ["--train-limit", "40", "--eval-limit", "200", "--epochs", "1", "--batch-size", "20", "--latent-dim", "2",
        "--mlp-hidden-units", "8"]  # one epoch of two batches on a 2-8-2 MLP: the data is what is tested


def kvae(*args, env=None, timeout=240):
    """Runs `python -m kvae_cli ARGS`: (CompletedProcess, seconds). The timeout bounds a hanging old build."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    start = time.monotonic()
    process = subprocess.run([sys.executable, "-m", "kvae_cli", *map(str, args)], capture_output=True, text=True,
                             timeout=timeout, env=environment)
    return process, time.monotonic() - start


def _grey_png(path, seed, size=(28, 28)):
    pixels = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _grey_folder(root, per_class=30):
    """root/a/, root/b/: `per_class` random grey 28x28 PNG files each (60 by default)."""
    for c, name in enumerate("ab"):
        for i in range(per_class):
            _grey_png(root / name / f"{i:03d}.png", seed=100 * c + i)
    return root


def _add_bad_files(root):
    """A truncated PNG, an empty .png and a text file named .png: {relative name: what the error says}."""
    good = root / "a" / "000.png"
    (root / "a" / "truncated.png").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "b" / "notes.png").write_text("not an image, just a text file with the wrong name\n")
    return {os.path.join("a", "truncated.png"): "", os.path.join("b", "empty.png"): "empty file (0 bytes)",
            os.path.join("b", "notes.png"): "not an image file"}


def test_unreadable_images_are_all_named_before_training_starts(tmp_path):
    folder = _grey_folder(tmp_path / "images")
    bad = _add_bad_files(folder)
    run_dir = tmp_path / "run"
    process, seconds = kvae("train", "--image-folder", folder, "--run-dir", run_dir, *TINY)
    assert process.returncode == 3, process.stderr  # DataError, not a TensorFlow crash mid-epoch
    assert "3 of 63 image files" in process.stderr and "cannot be read" in process.stderr
    for name, reason in bad.items():
        assert f"{name}: {reason}" in process.stderr, name
    assert "--skip-bad-images" in process.stderr
    assert "Traceback" not in process.stderr and "InvalidArgumentError" not in process.stderr
    assert "Epoch 1" not in process.stdout and not (run_dir / "state.json").exists()  # nothing trained
    assert seconds < 120


def test_skip_bad_images_trains_on_the_rest_and_names_what_it_skipped(tmp_path):
    folder = _grey_folder(tmp_path / "images")
    bad = _add_bad_files(folder)
    run_dir = tmp_path / "run"
    process, _ = kvae("train", "--image-folder", folder, "--run-dir", run_dir, "--skip-bad-images", *TINY)
    assert process.returncode == 0, process.stderr
    assert "Warning: skipping 3 of 63 image files" in process.stderr
    assert all(name in process.stderr for name in bad)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["skip_bad_images"] is True
    data = config["resolved_data"]
    assert sorted(data["skipped_files"]) == sorted(bad)
    assert sum(data["num_images"].values()) == 60 and data["input_shape"] == [28, 28, 1]


def test_mixed_sizes_and_modes_are_reported_and_the_rerun_resumes(tmp_path, capsys):
    folder = _grey_folder(tmp_path / "images")
    # One 112x112 RGB file that sorts first: it used to turn the whole grey 28x28 set into 112x112x3.
    Image.fromarray(np.full((112, 112, 3), (200, 30, 30), np.uint8)).save(folder / "a" / "!big.png")
    run_dir = tmp_path / "run"
    command = ["train", "--image-folder", folder, "--run-dir", run_dir, *TINY]
    process, _ = kvae(*command)
    assert process.returncode == 0, process.stderr
    assert "have 2 sizes (height x width): 28x28 in 60 files" in process.stderr
    assert f"112x112 in 1 files (e.g. {os.path.join('a', '!big.png')})" in process.stderr
    assert "All are resized to 28x28, the size of most files (60 of 61)" in process.stderr
    assert "--image-size" in process.stderr
    assert "grayscale in 60 files (Pillow mode L" in process.stderr
    assert "rgb in 1 files (Pillow mode RGB" in process.stderr
    assert "All are converted to grayscale" in process.stderr and "--color-mode" in process.stderr
    config = json.loads((run_dir / "config.json").read_text())
    assert config["image_size"] is None and config["color_mode"] is None  # what was typed
    assert config["resolved_data"]["image_size"] == [28, 28] and config["resolved_data"]["color_mode"] == "grayscale"
    assert config["resolved_data"]["input_shape"] == [28, 28, 1]

    # The same command with one more epoch resumes the run: the recorded data does not count as a changed config.
    # (Through the command's entry point in this process: the subprocess above showed what a user sees.)
    from kvae_cli import main

    command[command.index("--epochs") + 1] = "2"
    capsys.readouterr()
    assert main(list(map(str, command))) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "Resuming" in out and "after epoch 1 of 2" in out


def test_explicit_size_and_mode_convert_without_a_warning(tmp_path, capsys):
    folder = _grey_folder(tmp_path / "images", per_class=5)
    Image.fromarray(np.full((40, 30, 3), 90, np.uint8)).save(folder / "b" / "colour.png")
    splits = load_image_folder(folder, image_size=(16, 16), color_mode="rgb")
    assert splits.input_shape == (16, 16, 3)
    assert "Warning" not in capsys.readouterr().err
    assert load_image_folder(folder).input_shape == (28, 28, 1)  # most files: grey 28x28
    assert "Warning" in capsys.readouterr().err


def test_a_folder_of_only_bad_files_is_an_error_even_when_skipping(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"")
    (tmp_path / "a" / "y.jpg").write_text("text")
    with pytest.raises(DataError, match=r"2 of 2 image files .* cannot be read[\s\S]*Replace them"):
        load_image_folder(tmp_path, skip_bad_images=True)


# `kvae train ARGS` in a fresh process, timed from the call of the command's entry point: Python's and
# TensorFlow's start-up (tens of seconds on a loaded machine) is paid before the clock starts, everything the
# command itself does (tensorflow-datasets' import, the data check, the probe of the download host) after it.
TIMED_MAIN = """
import sys, time
from kvae_cli.quiet import quiet_native_logs
quiet_native_logs()  # as kvae_cli.main does before TensorFlow loads
import kvae_cli.library, kvae.train  # noqa: F401, E401  the start-up every `kvae train` pays
from kvae_cli.main import main
start = time.monotonic()
code = main(sys.argv[1:])
print(f"elapsed {time.monotonic() - start:.3f}")
sys.exit(code)
"""


def kvae_timed(*args, env=None, timeout=180):
    """(CompletedProcess, seconds the command took after start-up) of `kvae ARGS` in a subprocess."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    process = subprocess.run([sys.executable, "-c", TIMED_MAIN, *map(str, args)], capture_output=True, text=True,
                             timeout=timeout, env=environment)
    lines = [line for line in process.stdout.splitlines() if line.startswith("elapsed ")]
    assert lines, (process.returncode, process.stdout[-2000:], process.stderr[-2000:])
    return process, float(lines[-1].split()[1])


def test_tfds_dataset_not_on_this_machine_fails_in_seconds(tmp_path):
    """`--dataset mnist` with an empty tfds data_dir, on a machine that cannot reach the download host."""
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    # The old code retried the download for 3.5 minutes: the subprocess timeout fails it in bounded time.
    process, seconds = kvae_timed("train", "--dataset", "mnist", "--run-dir", tmp_path / "run", *TINY,
                                  env={"TFDS_DATA_DIR": str(data_dir), "KVAE_TFDS_DOWNLOAD": ""}, timeout=150)
    if "Downloading 'mnist'" in process.stdout:
        pytest.skip("this machine reaches the download host")
    assert process.returncode == 3, process.stderr  # DataError
    message = process.stderr
    assert "'mnist' is not prepared on this machine" in message
    assert f"{data_dir}{os.sep}mnist does not exist" in message  # where it looked, and what it found there
    assert "tfds build mnist" in message and "TFDS_DATA_DIR" in message and "KVAE_TFDS_DOWNLOAD=1" in message
    assert "Traceback" not in message and "Retrying" not in message and len(message.splitlines()) == 1, message
    assert seconds <= 10, seconds
    assert not (tmp_path / "run").exists()


def test_tfds_download_can_be_forbidden(tmp_path):
    process, seconds = kvae_timed("train", "--dataset", "mnist", "--run-dir", tmp_path / "run", *TINY,
                                  env={"TFDS_DATA_DIR": str(tmp_path), "KVAE_TFDS_DOWNLOAD": "0"}, timeout=150)
    assert process.returncode == 3, process.stderr
    assert "and KVAE_TFDS_DOWNLOAD=0 forbids downloading" in process.stderr and "Downloading" not in process.stdout
    assert seconds <= 10, seconds


def test_unknown_tfds_name_fails_at_once_with_the_closest_names(tmp_path):
    process, seconds = kvae_timed("train", "--dataset", "mnsit", "--run-dir", tmp_path / "run", *TINY, timeout=150)
    assert process.returncode == 2, process.stderr  # ConfigError
    assert "Did you mean 'mnist'" in process.stderr and "Received: dataset='mnsit'" in process.stderr
    assert "Traceback" not in process.stderr and len(process.stderr.splitlines()) == 1, process.stderr
    assert seconds <= 3, seconds


def test_unknown_name_in_python_is_a_config_error():
    from kvae.data import load_dataset

    with pytest.raises(ConfigError, match="Did you mean 'cifar10'"):
        load_dataset("cifar_10")
