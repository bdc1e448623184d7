"""A serving-only install works: `pip install ".[serving]"` in a fresh venv, then `kvae generate` and `kvae serve`.

The venv gets numpy, onnxruntime and Pillow and no TensorFlow or Keras; the
artifacts come from the main environment's export of a tiny trained run.
"""

import json
import pathlib
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

pytest_plugins = ["tests.serving_fixtures"]

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_resolution(tmp_path_factory):
    """`pip install --dry-run "kvae[gpu]"`, started before the serving venv is built and read by its test.

    Resolving the gpu extra mostly waits on the package index (about 45 s, a few seconds of CPU); started
    first, that wait overlaps the CPU-bound venv build instead of holding a test process idle on its own.
    """
    report = tmp_path_factory.mktemp("gpu-extra") / "report.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
         "--disable-pip-version-check", "--report", str(report), f"{REPO}[gpu]"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=report.parent,
    )
    yield process, report
    process.kill()
    process.communicate()


@pytest.fixture(scope="module")
def serving_venv(gpu_resolution, tmp_path_factory):
    venv = tmp_path_factory.mktemp("serving-only") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    out = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", f"{REPO}[serving]"],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return venv


def _run(venv, *args, **kwargs):
    return subprocess.run([str(venv / "bin" / "kvae"), *args], capture_output=True, text=True, timeout=300, **kwargs)


def test_the_serving_install_has_no_tensorflow_or_keras(serving_venv):
    python = str(serving_venv / "bin" / "python")
    for module in ("tensorflow", "keras", "tf2onnx"):
        probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "No module named" in probe.stderr, module
    assert _run(serving_venv, "--help").returncode == 0
    train = _run(serving_venv, "train", "--epochs", "1")
    assert train.returncode == 2
    assert 'pip install "kvae[train]"' in train.stderr and "Traceback" not in train.stderr, train.stderr


def test_kvae_generate_in_the_serving_install(serving_venv, serving_artifacts, serving_runtime, tmp_path):
    out = _run(serving_venv, "generate", str(serving_artifacts), "--n", "4", "--seed", "3", "--out", str(tmp_path / "s.png"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    probe = (
        "import sys, numpy as np\nfrom kvae_serving import Runtime\n"
        f"np.save(sys.argv[1], Runtime({str(serving_artifacts)!r}).sample(4, seed=3))\n"
        "assert not {m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'kvae'}\n"
    )
    done = subprocess.run([str(serving_venv / "bin" / "python"), "-c", probe, str(tmp_path / "s.npy")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), serving_runtime.sample(4, seed=3))


def test_kvae_serve_in_the_serving_install(serving_venv, serving_artifacts, serving_runtime):
    server = subprocess.Popen(
        [str(serving_venv / "bin" / "kvae"), "serve", str(serving_artifacts), "--host", "127.0.0.1", "--port", "0",
         "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = server.stdout.readline()  # "kvae serving ARTIFACTS on http://127.0.0.1:PORT (models: ...)"
        assert " on http://127.0.0.1:" in line, line
        base = "http://" + line.split(" on http://")[1].split()[0]
        with urllib.request.urlopen(base + "/v2/health/ready", timeout=30) as reply:
            assert reply.status == 200
        z = serving_runtime.sample_z(2, seed=5)
        body = {"inputs": [{"name": "z", "shape": list(z.shape), "datatype": "FP32", "data": z.ravel().tolist()}]}
        request = urllib.request.Request(base + "/v2/models/decoder/infer", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            outputs = {o["name"]: o for o in json.loads(reply.read())["outputs"]}
        x_mean = np.asarray(outputs["x_mean"]["data"], np.float32).reshape(outputs["x_mean"]["shape"])
        np.testing.assert_allclose(x_mean, serving_runtime.decode(z), atol=1e-6)
        maps = pathlib.Path(f"/proc/{server.pid}/maps").read_text()
        assert "tensorflow" not in maps and "keras" not in maps  # the process never loaded them
    finally:
        server.terminate()
        server.wait(30)


def test_the_gpu_extra_resolves_to_tensorflow_with_cuda(gpu_resolution):
    """`pip install "kvae[gpu]"` resolves (a dry run: nothing is downloaded beyond metadata, nothing installed)."""
    process, report = gpu_resolution
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    names = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert names.get("tensorflow") == "2.21.0" and "tensorflow-cpu" not in names
    assert any(name.startswith("nvidia-cudnn") for name in names) and names["keras"].startswith("3.15")
