"""What the load benchmark keeps in its cache: the models it serves and KServe's throwaway venv.

The cache is ~/.cache/kvae-bench, or $KVAE_BENCH_CACHE. Both are made on first
use and kept: the latent-16 models (trained briefly by `kvae train`, exported by
`kvae export`: speed does not depend on quality) and a venv holding KServe,
which pins its own FastAPI, pydantic and protobuf.
"""

import os
import subprocess
import sys
import tempfile

from benchmarks import harness
from kvae_contract import artifacts as contract

CACHE = os.environ.get("KVAE_BENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kvae-bench")
LATENT_DIM = 16  # the reference request: z of shape [1, 16]
TRAIN_LIMIT = 25_600  # one epoch of 256 steps of 100 images: plenty, speed does not depend on quality
KSERVE_INSTALL_TIMEOUT = 600  # seconds for `pip install kserve onnxruntime numpy`, once


def artifacts(arch, progress):
    """The cached artifacts folder of a latent-16 `arch` model; trained and exported on first use.

    `kvae train` and `kvae export` run in their own processes, as shipped, so that
    this process never loads TensorFlow. The folder name carries the contract's
    format version: a new format retrains instead of serving stale files.
    """
    folder = os.path.join(CACHE, f"artifacts-{arch}-latent{LATENT_DIM}-format{contract.FORMAT_VERSION}")
    if os.path.exists(os.path.join(folder, contract.MANIFEST)):
        return folder
    progress(f"Training ({TRAIN_LIMIT // 100} steps) and exporting the {arch} model once, into {folder}")
    os.makedirs(CACHE, exist_ok=True)
    kvae = [sys.executable, "-m", "kvae_cli"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory(prefix="kvae-load-train-") as tmp:
        run = os.path.join(tmp, "run")
        subprocess.run([*kvae, "train", "--run-dir", run, "--architecture", arch, "--latent-dim", str(LATENT_DIM),
                        "--train-limit", str(TRAIN_LIMIT), "--epochs", "1", "--seed", "0"],
                       check=True, cwd=harness.ROOT, env=env, stdout=subprocess.DEVNULL)
        subprocess.run([*kvae, "export", run, "--out", folder, "--force"], check=True, cwd=harness.ROOT, env=env,
                       stdout=subprocess.DEVNULL)
    return folder


def kserve_python(progress):
    """(python, version) of a throwaway venv holding kserve, onnxruntime and numpy, or (None, why not).

    KServe pins its own FastAPI, pydantic and protobuf: it gets a venv of its own
    in the cache, made once; a failed or slow install (no network, over
    KSERVE_INSTALL_TIMEOUT) skips KServe instead of stopping the benchmark.
    """
    venv = os.path.join(CACHE, "kserve-venv")
    python = os.path.join(venv, "bin", "python")
    version = _kserve_version(python)
    if version:
        return python, version
    progress(f"Installing KServe into {venv} (once; at most {KSERVE_INSTALL_TIMEOUT // 60} minutes)")
    log = os.path.join(CACHE, "kserve-install.log")
    os.makedirs(CACHE, exist_ok=True)
    try:
        with open(log, "w") as out:
            subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True, stdout=out, stderr=out,
                           timeout=120)
            subprocess.run([python, "-m", "pip", "install", "kserve", "onnxruntime", "numpy"], check=True,
                           stdout=out, stderr=out, timeout=KSERVE_INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, f"pip install kserve took over {KSERVE_INSTALL_TIMEOUT} s (log: {log})"
    except (subprocess.CalledProcessError, OSError) as e:
        return None, f"pip install kserve failed ({e}; log: {log})"
    version = _kserve_version(python)
    return (python, version) if version else (None, f"kserve does not import after the install (log: {log})")


def _kserve_version(python):
    """KServe's version in that interpreter, or None if it (or onnxruntime) does not import."""
    if not os.path.exists(python):
        return None
    probe = "import importlib.metadata as m, kserve, onnxruntime, numpy; print(m.version('kserve'))"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    return out.stdout.strip() if out.returncode == 0 else None
