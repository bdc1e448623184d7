"""The `kvae` command above the packages: fast help, quiet output, one error family, one-way imports."""

import ast
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

from kvae_cli import COMMANDS, main
from kvae_contract import errors

REPO = pathlib.Path(__file__).resolve().parents[1]
KVAE = [sys.executable, "-m", "kvae_cli"]
HEAVY = {"tensorflow", "keras", "onnxruntime", "tf2onnx", "sklearn", "matplotlib", "kvae"}

pytest_plugins = ["tests.serving_fixtures"]  # serving_artifacts: a real export, built once per session


def _fastest(cmd, runs=3):
    """The fastest of `runs` wall-clock times of a subprocess (a loaded machine only slows a run down)."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        best = min(best, time.perf_counter() - start)
        assert out.returncode == 0, out.stderr
    return best, out.stdout


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["generate", "--help"], ["export", "--help"]])
def test_help_answers_within_half_a_second_and_loads_nothing_heavy(argv):
    seconds, text = _fastest(KVAE + argv)
    assert seconds <= 0.5, f"kvae {' '.join(argv)} took {seconds:.2f} s"
    assert "usage: kvae" in text
    probe = (
        "import sys\nfrom kvae_cli.main import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {HEAVY!r}))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip().splitlines()[-1] == "[]", loaded.stdout


def test_help_lists_every_command():
    out = subprocess.run(KVAE + ["--help"], capture_output=True, text=True, timeout=60).stdout
    for name, (_, help_line) in COMMANDS.items():
        assert name in out, name


def test_the_library_imports_none_of_the_packages_built_on_it():
    above = {"kvae_cli", "kvae_export", "kvae_serving", "kvae_experiments", "export", "serving", "experiments", "cli"}
    for path in (REPO / "kvae").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] not in above, f"{path.relative_to(REPO)} imports {name}"


def test_training_output_is_quiet_unless_verbose(tmp_path):
    cmd = KVAE + ["train", "--run-dir", str(tmp_path / "run"), "--train-limit", "200", "--eval-limit", "500", "--epochs", "1",
                  "--latent-dim", "2", "--mlp-hidden-units", "16"]
    quiet = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "I0000" not in quiet.stderr and "absl::InitializeLog" not in quiet.stderr, quiet.stderr
    assert "test negative ELBO" in quiet.stdout
    assert "Keras backend: tensorflow" in quiet.stdout and "training on CPU" in quiet.stdout  # the devices used
    # The same command again, finished: "nothing to do" once TensorFlow has started (and logged).
    loud = subprocess.run(KVAE[:3] + ["--verbose"] + cmd[3:], capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0 and "nothing to do" in loud.stdout, loud.stderr
    assert "absl::InitializeLog" in loud.stderr  # what the quiet run hid


@pytest.mark.parametrize("argv, code, message", [
    (["train", "--latent-dim", "0"], errors.ConfigError.exit_code,
     "kvae train: error: Invalid training config: latent_dim must be >= 1. Received: latent_dim=0\n"),
    # A path that is not what the command needs is a usage error, like a bad flag.
    (["export", "/nonexistent-run", "--out", "/tmp/never"], errors.ConfigError.exit_code,
     "kvae export: error: /nonexistent-run is not a kvae run directory"),
    (["generate", "/nonexistent-artifacts"], errors.ConfigError.exit_code, "kvae generate: error:"),
    (["evaluate", "/nonexistent-run"], errors.ConfigError.exit_code, "kvae evaluate: error:"),
    # The loss overflows at once: the message names the fix.
    (["train", "--learning-rate", "1e30", "--train-limit", "200", "--eval-limit", "500", "--epochs", "1", "--run-dir", "run",
      "--latent-dim", "2", "--mlp-hidden-units", "16"], errors.TrainingDiverged.exit_code,
     "kvae train: error: The loss became NaN/Inf in epoch 1"),
    # A failed verification (VerificationError) cannot be provoked from the command line; test_export covers it.
])
def test_errors_exit_with_their_kind_s_code_and_one_line(argv, code, message, tmp_path):
    out = subprocess.run(KVAE + argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == code, (out.returncode, out.stderr)
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_a_corrupt_artifacts_folder_exits_with_artifact_error_s_code(serving_artifacts, tmp_path):
    corrupt = tmp_path / "artifacts"
    shutil.copytree(serving_artifacts, corrupt, ignore=shutil.ignore_patterns("saved_model"))  # serving reads ONNX
    onnx = sorted(corrupt.rglob("*.onnx"))[0]
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the sha256 in manifest.json no longer matches
    onnx.write_bytes(bytes(data))
    out = subprocess.run(KVAE + ["generate", str(corrupt), "--out", str(tmp_path / "x.png")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == errors.ArtifactError.exit_code, (out.returncode, out.stderr)
    assert out.stderr.startswith("kvae generate: error: ") and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "is corrupt" in out.stderr and "Re-export" in out.stderr, out.stderr
    assert not (tmp_path / "x.png").exists()


def test_error_kinds_have_distinct_exit_codes_and_http_statuses():
    kinds = [errors.ConfigError, errors.DataError, errors.RunDirError, errors.TrainingDiverged, errors.ExportError,
             errors.VerificationError, errors.ArtifactError]
    assert len({k.exit_code for k in kinds}) == len(kinds)
    assert errors.InputError.status == 400 and errors.NotFoundError.status == 404
    assert issubclass(errors.ConfigError, ValueError) and issubclass(errors.TrainingDiverged, RuntimeError)


def test_main_returns_the_exit_code_in_process(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "r"), "--latent-dim", "0"]) == errors.ConfigError.exit_code
    assert "kvae train: error:" in capsys.readouterr().err


def test_usage_errors_exit_2_and_stay_their_other_kind(capsys):
    usage = [errors.MissingPathError, errors.OutputExistsError, errors.MissingArtifactsError, errors.MissingDataError]
    assert {k.exit_code for k in usage} == {errors.ConfigError.exit_code} == {2}
    assert issubclass(errors.MissingPathError, FileNotFoundError) and issubclass(errors.OutputExistsError, errors.ExportError)
    assert issubclass(errors.MissingArtifactsError, errors.ArtifactError)
    assert issubclass(errors.MissingDataError, errors.DataError)
    # The one wrapper: a kind's code for kvae's errors, 1 for a file that cannot be read.
    assert errors.run_command("x", lambda _: open("/nonexistent/file"), None) == 1
    assert capsys.readouterr().err.startswith("kvae x: error: [Errno 2]")
