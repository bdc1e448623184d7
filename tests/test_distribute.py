"""tf.distribute: the same weights under one device, MirroredStrategy and two workers."""

import json
import os
import socket
import subprocess
import sys
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


def _tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}})


def _run_workers(commands_and_envs):
    """Starts processes together, waits (bounded), and always cleans up."""
    procs = [subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd, env in commands_and_envs]
    try:
        outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    return outputs


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
    weights = sorted(k for k in a.files if k.startswith("w"))
    for k in weights:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5, err_msg=k)
    # The steps moved the weights far more than the tolerance: the check has teeth.
    assert max(float(np.abs(a[k]).max()) for k in weights) > 0.01


def test_mirrored_over_two_cpus_matches_one_device(single, tmp_path):
    out = tmp_path / "w.npz"
    log = _run_workers([([sys.executable, str(WORKER), "mirrored", str(out)], _env())])[0]
    assert "replicas 2" in log
    _assert_same_training(single, np.load(out))


def test_two_workers_on_localhost_match_one_device(single, tmp_path):
    ports = [_free_port(), _free_port()]
    runs = [([sys.executable, str(WORKER), "multi-worker", str(tmp_path / f"w{i}.npz")], _env(TF_CONFIG=_tf_config(ports, i)))
            for i in range(2)]
    logs = _run_workers(runs)
    assert all("replicas 2" in log for log in logs)
    _assert_same_training(single, np.load(tmp_path / "w0.npz"))
    _assert_same_training(np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz"))


def test_kvae_train_with_two_workers_as_documented(tmp_path):
    """The README's two-worker recipe: the same command twice, TF_CONFIG telling each its index."""
    ports = [_free_port(), _free_port()]
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "kvae_cli", "train", "--strategy", "multi-worker", "--run-dir", str(run_dir),
           "--train-limit", "600", "--epochs", "2", "--latent-dim", "4", "--batch-size", "100"]
    _run_workers([(cmd, _env(TF_CONFIG=_tf_config(ports, i))) for i in range(2)])
    state = json.loads((run_dir / "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert (run_dir / "model.keras").exists() and (run_dir / "samples.png").exists()
    assert json.loads((run_dir / "config.json").read_text())["strategy"] == "multi-worker"


def test_mirrored_run_resumes_under_its_strategy(tmp_path):
    run_dir = tmp_path / "run"
    base = [sys.executable, "-m", "kvae_cli", "train", "--strategy", "mirrored", "--run-dir", str(run_dir),
            "--train-limit", "300", "--latent-dim", "4"]
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
