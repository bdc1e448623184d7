"""Faults around a run's life: damaged run files, run directories moved or retyped, failed starts, exports killed
or racing each other, and requests beyond the serving runtime's limits.

The run-directory cases go through `kvae train` (real subprocesses, and the command's own entry point in this
process): what a user sees is the one `kvae train: error: ...` line that names the file and the fix, and exit
code RunDirError.exit_code (4). The export cases kill real `python -m kvae_cli export` processes at chosen
moments and race two of them. Every wait is bounded.
"""

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from kvae_contract.errors import RunDirError

pytest_plugins = ["tests.serving_fixtures"]

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
# A run small enough to train in seconds: 200 images, one 16-unit layer, latent 2.
TRAIN_FLAGS = ["--train-limit", "200", "--eval-limit", "500", "--latent-dim", "2", "--mlp-hidden-units", "16", "--batch-size", "100",
               "--seed", "3"]
TRAIN_TIMEOUT = 300
EXPORT_TIMEOUT = 400


def _train_args(run_dir, epochs, *extra):
    """`kvae train`'s arguments for the small run, as typed after `kvae`."""
    return ["train", "--run-dir", str(run_dir), "--epochs", str(epochs), *TRAIN_FLAGS, *extra]


def _train(run_dir, epochs, *extra, cwd=None):
    """`python -m kvae_cli train` in a real subprocess -> CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "kvae_cli", *_train_args(run_dir, epochs, *extra)],
                          capture_output=True, text=True, env=ENV, cwd=cwd, timeout=TRAIN_TIMEOUT)


def _train_here(capsys, run_dir, epochs):
    """`kvae train` through its entry point in this process -> (exit code, stdout, stderr)."""
    from kvae_cli import main

    capsys.readouterr()
    code = main(_train_args(run_dir, epochs))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A finished one-epoch run written by `kvae train`'s entry point in this process (never modified: tests
    copy it)."""
    from kvae_cli import main

    run_dir = tmp_path_factory.mktemp("faults") / "base"
    assert main(_train_args(run_dir, 1)) == 0
    assert json.loads((run_dir / "state.json").read_text())["checkpoint"] == "epoch-0001.keras"
    return run_dir


def _copy(base_run, tmp_path, name="run"):
    target = tmp_path / name
    shutil.copytree(base_run, target)
    return target


# 1. Run-directory integrity: every file kvae reads back is checked, and a bad one is named with the fix


def _truncate(path, keep=50):
    path.write_bytes(path.read_bytes()[:keep])


def _garbage(path):
    path.write_bytes(b"this is not a zip archive\n" * 40)


# case: (damage(run_dir) -> the damaged file's name, epochs to ask for, words the message must hold besides the path)
DAMAGE = {
    "truncated state.json": (lambda r: _truncate(r / "state.json") or "state.json", 2,
                             ["is not valid JSON", "Delete", "state.json to train", "--run-dir"]),
    "empty object in state.json": (lambda r: (r / "state.json").write_text("{}") and "state.json", 2,
                                   ["is damaged", "no 'epoch'", "Delete", "--run-dir"]),
    "garbage checkpoint": (lambda r: _garbage(r / "checkpoints" / "epoch-0001.keras") or "checkpoints/epoch-0001.keras",
                           2, ["the checkpoint", "is not a Keras model file", "Delete", "state.json", "--run-dir"]),
    "garbage model.keras of a finished run": (lambda r: _garbage(r / "model.keras") or "model.keras", 1,
                                              ["is not a Keras model file", "Copy", "epoch-0001.keras"]),
    "truncated test_metrics.json of a finished run": (
        lambda r: _truncate(r / "test_metrics.json", 20) or "test_metrics.json", 1,
        ["is not valid JSON", "Delete", "evaluate the run again"]),
    "truncated config.json": (lambda r: _truncate(r / "config.json") or "config.json", 2, ["is not valid JSON"]),
}


# The case run in a real subprocess (exit code, stderr, no traceback as a user sees them); the others run
# `kvae_cli.main` in this process, which returns the same exit code and prints the same line, without paying
# TensorFlow's start-up (about 6 s of CPU) five more times.
IN_A_SUBPROCESS = "garbage checkpoint"


def test_damaged_run_files_are_named_with_the_fix(base_run, tmp_path, capsys):
    """Each damage, end to end through `kvae train`: exit 4, one line naming the file and the fix,
    no traceback, and the damaged file left as it was (nothing is rewritten before the run is accepted)."""
    failures = []
    for i, (case, (damage, epochs, words)) in enumerate(DAMAGE.items()):
        run_dir = _copy(base_run, tmp_path, f"run{i}")
        name = damage(run_dir)
        damaged = (run_dir / name).read_bytes() if (run_dir / name).exists() else None
        if case == IN_A_SUBPROCESS:
            out = _train(run_dir, epochs)
            code, err = out.returncode, out.stderr
        else:
            code, _, err = _train_here(capsys, run_dir, epochs)
        path = str(run_dir / name)
        if code != RunDirError.exit_code:
            failures.append(f"{case}: exit {code}, expected {RunDirError.exit_code}: {err[-1500:]}")
            continue
        message = next((line for line in err.splitlines() if line.startswith("kvae train: error: ")), "")
        missing = [w for w in [path, *words] if w not in message]
        if not message.startswith("kvae train: error: ") or missing or "Traceback" in err:
            failures.append(f"{case}: the message lacks {missing}: {err[-1500:]}")
        if "File not found" in message:
            failures.append(f"{case}: says 'File not found' about a file that exists: {message}")
        now = (run_dir / name).read_bytes() if (run_dir / name).exists() else None
        if now != damaged:
            failures.append(f"{case}: {name} was rewritten by the failed command")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "state, problem",
    [
        ([1, 2], "must hold a JSON object, not list"),
        ({"checkpoint": "epoch-0001.keras"}, "no 'epoch' key"),
        ({"epoch": 0, "checkpoint": "epoch-0000.keras"}, "'epoch' must be an int >= 1"),
        ({"epoch": True, "checkpoint": "epoch-0001.keras"}, "'epoch' must be an int >= 1"),
        ({"epoch": 1, "checkpoint": "../../etc/passwd"}, "'checkpoint' must be a file name in checkpoints/"),
        ({"epoch": 1, "checkpoint": "epoch-0001.keras", "history": {"a": 1}}, "'history' must be a list"),
        ({"epoch": 1, "checkpoint": "epoch-0001.keras", "best": {"epoch": 1}}, "'best' must be null or"),
        ({"epoch": 1, "checkpoint": "epoch-0001.keras", "stopped_early": "no"}, "'stopped_early' must be true or false"),
        ({"epoch": 1, "checkpoint": "epoch-0001.keras", "noise_state": ["a"]}, "'noise_state' must be null or"),
    ],
)
def test_state_json_is_checked_key_by_key(tmp_path, state, problem):
    from kvae.rundir import RunDir

    (tmp_path / "state.json").write_text(json.dumps(state))
    with pytest.raises(RunDirError) as info:
        RunDir(tmp_path).read_state()
    message = str(info.value)
    assert str(tmp_path / "state.json") in message and problem in message and "Delete" in message, message


def test_states_written_by_earlier_kvae_versions_still_read(tmp_path):
    """The state.json forms the two long runs and older kvae wrote: noise_state optional, best null or a dict."""
    from kvae.rundir import RunDir

    rows = [{"epoch": 0, "loss": 200.5, "val_negative_elbo": float("nan")}]
    for state in (
        {"epoch": 3, "checkpoint": "epoch-0003.keras", "history": rows},  # before best / stopped_early
        {"epoch": 3, "checkpoint": "epoch-0003.keras", "history": rows, "best": None, "stopped_early": False},
        {"epoch": 3, "checkpoint": "epoch-0003.keras", "history": rows, "best": {"epoch": 2, "value": 101.25},
         "stopped_early": True, "noise_state": [0, 12345]},
    ):
        (tmp_path / "state.json").write_text(json.dumps(state))
        saved = RunDir(tmp_path).read_state()
        assert saved["checkpoint_path"] == str(tmp_path / "checkpoints" / "epoch-0003.keras")
        assert saved["epoch"] == 3


def test_the_same_run_resumes_whatever_path_names_it(base_run, tmp_path, capsys):
    """A copy of a run, given by a relative path, resumes (its config.json names the original, absolutely);
    then the same run by its absolute path is recognized as finished."""
    copy = _copy(base_run, tmp_path, "copy")
    saved_run_dir = json.loads((copy / "config.json").read_text())["run_dir"]
    assert os.path.isabs(saved_run_dir) and saved_run_dir != str(copy)
    out = _train("copy", 2, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Resuming copy after epoch 1 of 2." in out.stdout
    assert [r["epoch"] for r in json.loads((copy / "state.json").read_text())["history"]] == [0, 1]
    code, stdout, stderr = _train_here(capsys, copy, 2)
    assert code == 0, stderr[-3000:]
    assert f"{copy} finished after epoch 2; nothing to do." in stdout
    assert json.loads((base_run / "state.json").read_text())["epoch"] == 1  # the original is untouched


def test_a_failed_start_writes_nothing_and_the_corrected_command_runs(tmp_path, capsys):
    run_dir = tmp_path / "run"
    typo = tmp_path / "imagse"  # the folder that does not exist
    out = _train(run_dir, 1, "--image-folder", str(typo))
    assert out.returncode != 0 and str(typo) in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert not run_dir.exists(), sorted(os.listdir(run_dir))
    code, _, stderr = _train_here(capsys, run_dir, 1)  # the corrected command, same --run-dir
    assert code == 0, stderr[-3000:]
    assert json.loads((run_dir / "config.json").read_text())["dataset"] == "fashion_mnist"


def test_a_config_refused_after_loading_the_data_writes_nothing(tmp_path, splits):
    from kvae.config import TrainConfig
    from kvae.train import train
    from kvae_contract.errors import ConfigError

    run_dir = tmp_path / "vamp"
    config = TrainConfig(run_dir=str(run_dir), train_limit=20, prior="vamp", num_pseudo_inputs=50, epochs=1)
    with pytest.raises(ConfigError, match="only 20"):
        train(config, splits=splits, verbose=0)
    assert not run_dir.exists()


# 2. Export hygiene: OUT is replaced in one step, debris is cleaned, exports to one OUT take turns


def _export_cmd(run_dir, out):
    return [sys.executable, "-m", "kvae_cli", "export", str(run_dir), "--out", str(out), "--force"]


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _check_complete(out):
    """`out` is one whole export: manifest.json lists exactly the files there, each with its sha256.
    Returns the manifest's sha256 (which export this is)."""
    assert os.path.isdir(out), f"{out} is missing"
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    on_disk = {
        os.path.relpath(os.path.join(folder, n), out).replace(os.sep, "/")
        for folder, _, names in os.walk(out)
        for n in names
    }
    assert on_disk - {"manifest.json"} == set(manifest["files"]), sorted(on_disk ^ set(manifest["files"]))
    for rel, digest in manifest["files"].items():
        assert _sha256(os.path.join(out, rel)) == digest, rel
    return _sha256(os.path.join(out, "manifest.json"))


def _debris(out):
    parent, name = os.path.split(out)
    return sorted(n for n in os.listdir(parent) if n != name)


def _wait_for(condition, proc, timeout):
    """Polls `condition` every 2 ms until it holds (True), `proc` ends or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.002)
    return False


@pytest.fixture
def published(tiny_run, tmp_path):
    """(run_dir, OUT): conftest's tiny run, exported once to OUT (in this process)."""
    import kvae_export

    out = str(tmp_path / "published" / "artifacts")
    kvae_export.export_run(tiny_run[0], out)
    return str(tiny_run[0]), out


def test_killed_exports_leave_out_whole_and_the_next_export_clears_their_debris(published, tmp_path):
    run_dir, out = published
    _check_complete(out)
    stale = set()  # temporary folders of earlier kills: the conditions look at the running export's own

    def made(rel=""):
        return any(os.path.exists(os.path.join(d, rel)) for d in set(glob.glob(f"{glob.escape(out)}.tmp-*")) - stale)

    out_inode = os.stat(out).st_ino
    moments = {  # when to SIGKILL the exporter: from the start to just after the swap
        "while starting": None,
        "its temporary folder made": lambda: made(),
        "the encoder's ONNX written": lambda: made("onnx/encoder/1/model.onnx"),
        "the manifest written, before the swap": lambda: made("manifest.json"),
        "just after the swap": lambda: os.stat(out).st_ino != out_inode,
    }
    reached, seen_debris = [], False
    for i, (moment, condition) in enumerate(moments.items()):
        stale = set(glob.glob(f"{glob.escape(out)}.tmp-*"))
        with open(tmp_path / f"kill{i}.err", "w") as err:
            proc = subprocess.Popen(_export_cmd(run_dir, out), stdout=subprocess.DEVNULL, stderr=err, env=ENV)
        try:
            if condition is None:
                time.sleep(1.0)
                hit = proc.poll() is None
            else:
                hit = _wait_for(condition, proc, EXPORT_TIMEOUT)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(60)
        if hit:
            reached.append(moment)
        elif proc.returncode != -signal.SIGKILL:
            assert proc.returncode == 0, (moment, (tmp_path / f"kill{i}.err").read_text()[-3000:])
        _check_complete(out)  # a whole export, the previous one or the new one, after every kill
        seen_debris |= any(".tmp-" in n or ".old-" in n for n in _debris(out))
        out_inode = os.stat(out).st_ino
    assert len(reached) >= 3, f"the kills came too late; reached only {reached}"
    assert seen_debris, "no kill left a temporary folder behind: the test did not exercise the cleanup"
    import kvae_export

    kvae_export.export_run(run_dir, out, force=True)  # the next export
    _check_complete(out)
    assert _debris(out) == [], "the next export left debris from the killed ones"


def test_replacing_out_never_leaves_it_missing(tmp_path):
    """A reader polling OUT/manifest.json while OUT is replaced 300 times never finds it missing."""
    from kvae_export import publish

    out = str(tmp_path / "artifacts")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    if not publish._exchange(str(a), str(b)):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here: the fallback has a window by design")
    os.makedirs(out)
    open(os.path.join(out, "manifest.json"), "w").close()
    stop, misses, looks = threading.Event(), [], [0]

    def watch():
        while not stop.is_set():
            looks[0] += 1
            if not os.path.exists(os.path.join(out, "manifest.json")):
                misses.append(looks[0])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for i in range(300):
            with publish.staging(out, force=True) as new:
                with open(os.path.join(new, "manifest.json"), "w") as f:
                    f.write(str(i))
    finally:
        stop.set()
        watcher.join(10)
    assert looks[0] > 300 and not misses, f"OUT was missing at {len(misses)} of {looks[0]} looks"
    assert open(os.path.join(out, "manifest.json")).read() == "299"
    assert sorted(os.listdir(tmp_path)) == ["a", "artifacts", "b"]


def test_stale_debris_of_killed_exports_is_removed_and_others_kept(tmp_path):
    from kvae_export import publish

    out = str(tmp_path / "artifacts")
    for name in ("artifacts.tmp-abc123_x", "artifacts.old-1a2b3c4d", "artifacts.tmp-k9"):
        os.makedirs(tmp_path / name / "onnx")
    (tmp_path / "artifacts.old-deadbeef").write_text("a file")
    for keep in ("artifacts.tmp", "artifacts-2", "other.tmp-abc123_x", "artifacts.tmp-a.b"):
        os.makedirs(tmp_path / keep)
    with publish.staging(out, force=False) as new:
        open(os.path.join(new, "manifest.json"), "w").close()
    assert sorted(os.listdir(tmp_path)) == ["artifacts", "artifacts-2", "artifacts.tmp", "artifacts.tmp-a.b",
                                            "other.tmp-abc123_x"]


def test_concurrent_exports_to_one_out_take_turns(published, tmp_path):
    """Two exports into one OUT while a third party holds OUT's lock: neither touches OUT until it is released,
    both say they wait, then both publish in turn (exit 0), and OUT is one whole export with nothing beside it."""
    from kvae_export import publish

    run_dir, out = published
    first = _check_complete(out)
    logs = [tmp_path / "a.err", tmp_path / "b.err"]
    procs = []
    with publish.lock(out):
        try:
            for log in logs:
                with open(log, "w") as f:
                    procs.append(subprocess.Popen(_export_cmd(run_dir, out), stdout=subprocess.DEVNULL, stderr=f,
                                                  env=ENV))
            deadline = time.monotonic() + EXPORT_TIMEOUT
            while time.monotonic() < deadline and not all("waiting" in log.read_text() for log in logs):
                assert all(p.poll() is None for p in procs), [log.read_text()[-2000:] for log in logs]
                time.sleep(0.1)
            assert all("another export is writing" in log.read_text() for log in logs), [log.read_text() for log in logs]
            time.sleep(1.0)  # they are blocked: OUT and its neighbours stay as they were
            assert _check_complete(out) == first
            assert _debris(out) == [os.path.basename(publish.lock_path(out))]
        except BaseException:
            for p in procs:
                p.kill()
            raise
    codes = [p.wait(EXPORT_TIMEOUT) for p in procs]
    assert codes == [0, 0], [log.read_text()[-3000:] for log in logs]
    _check_complete(out)
    assert _debris(out) == []


def test_a_second_export_without_force_fails_clearly_after_waiting(tmp_path, capsys):
    """Without --force, the export that waited for the lock finds OUT published meanwhile: OutputExistsError."""
    from kvae_contract.errors import OutputExistsError
    from kvae_export import publish

    out = str(tmp_path / "artifacts")
    ready = threading.Event()

    def first_export():
        with publish.lock(out):
            ready.set()
            time.sleep(3.0)
            os.makedirs(out)  # what the first export publishes while the second waits

    thread = threading.Thread(target=first_export)
    thread.start()
    assert ready.wait(10)
    try:
        with pytest.raises(OutputExistsError, match="already exists.*--force"):
            with publish.staging(out, force=False):
                pass
    finally:
        thread.join(10)
    assert "another export is writing" in capsys.readouterr().err
    assert _debris(out) == []


# 3. Runtime limits: temperature, seed, batch size and pixel values are checked and named


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda r: r.sample(2, seed=0, temperature=10**400), ["`temperature` must be finite", "Received: temperature=1000"]),
        (lambda r: r.sample(2, seed=0, temperature=3.5e38), ["`temperature`", "Received: temperature=3.5e+38"]),
        (lambda r: r.sample(2, seed=0, temperature=np.float64(1e39)), ["`temperature`", "Received: temperature="]),
        (lambda r: r.sample(2, seed=0, temperature=1000.5), ["in [0, 1000]", "Received: temperature=1000.5"]),
        (lambda r: r.sample(2, seed=0, temperature=-0.5), ["`temperature`", "Received: temperature=-0.5"]),
        (lambda r: r.sample(2, seed=0, temperature=float("inf")), ["`temperature`", "Received: temperature=inf"]),
        (lambda r: r.sample_z(2, seed=0, temperature=10**400), ["`temperature`", "Received: temperature="]),
        (lambda r: r.sample(2, seed=2**63), ["`seed` must be >= 0 and <= 9223372036854775807",
                                             "Received: seed=9223372036854775808"]),
        (lambda r: r.sample(2, seed=10**400), ["`seed` must be", "Received: seed="]),
        (lambda r: r.sample(10**6, seed=0), ["`n` must be >= 1 and <= 65536", "max_batch_size", "Received: n=1000000"]),
        (lambda r: r.decode(np.zeros((65537, 8), np.float32)), ["batch size 65537", "max_batch_size of 65536"]),
        (lambda r: r.reconstruct(np.full((2, 28, 28, 1), 7.0, np.float32)),
         ["`x` pixels must be in [0, 1]", "Received: x with values from 7 to 7"]),
        (lambda r: r.encode(np.full((1, 28, 28, 1), -0.25)), ["pixels must be in [0, 1]", "from -0.25"]),
        (lambda r: r.encode(np.full((1, 28, 28, 1), np.nan, np.float32)), ["NaN or Inf"]),
        (lambda r: r.interpolate(np.full((28, 28, 1), 255.0), np.zeros((28, 28, 1)), 3), ["pixels must be in [0, 1]"]),
        (lambda r: r.interpolate(np.zeros((28, 28, 1)), np.zeros((28, 28, 1)), 10**6), ["`steps` must be", "<= 65536"]),
    ],
)
def test_runtime_limits_name_the_argument(serving_runtime, call, words):
    from kvae_serving.errors import InputError

    with pytest.raises(InputError) as info:
        call(serving_runtime)
    message = str(info.value)
    assert all(w in message for w in words), message
    if "temperature" in words[0]:
        assert "'z'" not in message  # the old error blamed the decoder's input for a bad temperature


def test_runtime_limits_keep_what_is_in_range(serving_runtime, splits):
    x = splits.x_test[:3].astype(np.float32) / 255.0
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0  # the ends of the range are pixels too
    assert serving_runtime.reconstruct(x).shape == (3, 28, 28, 1)
    assert serving_runtime.sample(2, seed=2**63 - 1, temperature=1000).shape == (2, 28, 28, 1)
    assert np.isfinite(serving_runtime.sample_z(2, seed=0, temperature=1000)).all()
    assert serving_runtime.sample(1, seed=0, temperature=0).shape == (1, 28, 28, 1)
    assert serving_runtime.max_batch_size == 65536


def test_runtime_max_batch_size_is_configurable(serving_artifacts):
    from kvae_serving import server
    from kvae_serving.errors import InputError
    from kvae_serving.runtime import Runtime

    runtime = Runtime(serving_artifacts, max_batch_size=4)
    assert runtime.decode(np.zeros((4, 8), np.float32)).shape == (4, 28, 28, 1)
    for call in (lambda: runtime.decode(np.zeros((5, 8), np.float32)), lambda: runtime.sample(5, seed=0),
                 lambda: runtime.encode(np.zeros((5, 28, 28, 1), np.float32)),
                 lambda: runtime.run("decoder", {"z": np.zeros((5, 8), np.float32)})):
        with pytest.raises(InputError, match="4"):
            call()
    with pytest.raises(InputError, match="`max_batch_size` must be >= 1"):
        Runtime(serving_artifacts, max_batch_size=0)
    # What `kvae serve --max-batch-size 7` builds in each worker: the runtime and the app take the same limit.
    app = server.make_app(server.Options(str(serving_artifacts), max_batch_size=7), threads=1)
    assert app.runtime.max_batch_size == 7 and app.max_batch_size == 7
