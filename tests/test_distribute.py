"""tf.distribute: the same weights under one device, MirroredStrategy and two workers."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).parents[1]
TIMEOUT = 240


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What a worker prints when its gRPC server cannot bind the port it was given.
BIND_FAILURES = ("address already in use", "failed to add port", "could not start grpc server", "unable to bind")


def _tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}})


def _run_workers(commands_and_envs, retry_on_bind_failure=False):
    """Starts processes together, waits (bounded), and always cleans up -> their outputs.

    When one fails the others are stopped at once (a worker whose peer died would wait for it until the
    timeout). retry_on_bind_failure: raise PortTaken, not an assertion error, when one failed to bind its port.
    """
    with tempfile.TemporaryDirectory() as logs:
        files = [open(os.path.join(logs, f"{i}.log"), "w+") for i in range(len(commands_and_envs))]
        procs = [subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, text=True)
                 for (cmd, env), f in zip(commands_and_envs, files)]
        deadline = time.monotonic() + TIMEOUT
        try:
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                if any(p.returncode not in (None, 0) for p in procs):
                    break
                time.sleep(0.1)
            failed = [i for i, p in enumerate(procs) if p.returncode not in (None, 0)]
            late = [] if failed else [i for i, p in enumerate(procs) if p.returncode is None]
        finally:
            for p in procs:  # only these processes, by their own handles
                if p.poll() is None:
                    p.kill()
                p.wait()
        outputs = []
        for f in files:
            f.seek(0)
            outputs.append(f.read())
            f.close()
    if failed and retry_on_bind_failure and any(m in outputs[i].lower() for i in failed for m in BIND_FAILURES):
        raise PortTaken
    report = "\n".join(f"--- process {i}:\n{outputs[i][-3000:]}" for i in failed + late)
    assert not failed, f"processes {failed} failed:\n{report}"
    assert not late, f"processes {late} were still running after {TIMEOUT} s:\n{report}"
    return outputs


class PortTaken(Exception):
    pass


def _run_cluster(make_runs, attempts=3):
    """Runs two workers on two free ports; a port another process took before a worker bound it is retried.

    make_runs(ports) -> [(cmd, env)]. The ports are free when chosen but not reserved: TF_CONFIG must name
    both before either worker starts, so a worker cannot simply bind port 0 and tell the other.
    """
    for attempt in range(attempts):
        try:
            return _run_workers(make_runs([_free_port(), _free_port()]), retry_on_bind_failure=attempt < attempts - 1)
        except PortTaken:
            continue


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(extra, TF_CPP_MIN_LOG_LEVEL="2")
    return env


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "w.npz"
    _run_workers([([sys.executable, str(WORKER), "single", str(out)], _env())])
    return np.load(out)


def _assert_same_training(a, b):
    assert float(np.mean(a["loss"])) == pytest.approx(float(np.mean(b["loss"])), rel=1e-5)
    assert float(np.mean(a["kl_loss"])) == pytest.approx(float(np.mean(b["kl_loss"])), rel=1e-5)
    weights = sorted((k for k in a.files if k.startswith("w")), key=lambda k: int(k[1:]))
    assert len(weights) == len(a["trainable"]) and a["trainable"].sum() >= 6
    for k in weights:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5, err_msg=k)
    # Both runs started from the same weights, and the steps moved every trainable one (and only those) far
    # more than the tolerance above: equal weights mean equal training, not two runs that never trained.
    for k, trainable in zip(weights, a["trainable"]):
        start = "i" + k[1:]
        np.testing.assert_array_equal(a[start], b[start], err_msg=start)
        moved = float(np.abs(a[k] - a[start]).max())
        assert moved > 1e-3 if trainable else moved == 0.0, (k, trainable, moved)


def test_mirrored_over_two_cpus_matches_one_device(single, tmp_path):
    out = tmp_path / "w.npz"
    log = _run_workers([([sys.executable, str(WORKER), "mirrored", str(out)], _env())])[0]
    assert "replicas 2" in log
    _assert_same_training(single, np.load(out))


def test_two_workers_on_localhost_match_one_device(single, tmp_path):
    logs = _run_cluster(lambda ports: [
        ([sys.executable, str(WORKER), "multi-worker", str(tmp_path / f"w{i}.npz")], _env(TF_CONFIG=_tf_config(ports, i)))
        for i in range(2)])
    assert all("replicas 2" in log for log in logs)
    _assert_same_training(single, np.load(tmp_path / "w0.npz"))
    _assert_same_training(np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz"))


def test_kvae_train_with_two_workers_as_documented(tmp_path):
    """The README's two-worker recipe: the same command twice, TF_CONFIG telling each its index."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "kvae_cli", "train", "--strategy", "multi-worker", "--run-dir", str(run_dir),
           "--train-limit", "600", "--eval-limit", "500", "--epochs", "2", "--latent-dim", "4", "--batch-size", "100"]
    _run_cluster(lambda ports: [(cmd, _env(TF_CONFIG=_tf_config(ports, i))) for i in range(2)])
    state = json.loads((run_dir / "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert (run_dir / "model.keras").exists() and (run_dir / "samples.png").exists()
    assert json.loads((run_dir / "config.json").read_text())["strategy"] == "multi-worker"


def test_mirrored_run_resumes_under_its_strategy(tmp_path):
    run_dir = tmp_path / "run"
    base = [sys.executable, "-m", "kvae_cli", "train", "--strategy", "mirrored", "--run-dir", str(run_dir),
            "--train-limit", "300", "--eval-limit", "500", "--latent-dim", "4"]
    _run_workers([(base + ["--epochs", "1"], _env())])
    out = _run_workers([(base + ["--epochs", "2"], _env())])[0]
    assert f"Resuming {run_dir} after epoch 1 of 2." in out
    assert json.loads((run_dir / "state.json").read_text())["epoch"] == 2


def test_multi_worker_without_tf_config_is_a_clear_error():
    from kvae.distribute import make_strategy

    os.environ.pop("TF_CONFIG", None)
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        make_strategy("multi-worker")
    with pytest.raises(ValueError, match="Received: strategy='tpu'"):
        make_strategy("tpu")
