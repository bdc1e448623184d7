"""Shared fixtures: small slices of the real Fashion-MNIST and a tiny trained run."""

import fcntl
import os
import shutil

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def splits():
    """The real Fashion-MNIST splits from the local IDX files (no network)."""
    from kvae.data import load_dataset

    return load_dataset("fashion_mnist")


def _train_tiny(run_dir, splits, **overrides):
    from kvae.config import TrainConfig
    from kvae.train import train

    settings = dict(run_dir=str(run_dir), train_limit=2000, eval_limit=2000, epochs=1, latent_dim=8, batch_size=100, seed=1)
    settings.update(overrides)
    return train(TrainConfig(**settings), splits=splits, verbose=0)


def shared_path(tmp_path_factory, name, build):
    """tmp/NAME, built by `build(path)` once for the whole test session, however many test processes it has.

    `make test` runs three pytest-xdist processes, each with its own session fixtures; every process's
    temporary folder sits in one common parent. The first process to take NAME's lock there builds it,
    the others wait for it and reuse it. What is built this way is read only: a test that writes
    into it works on a copy.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the processes of this run (each process's basetemp is root/popen-gwN)
    path, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if the process dies
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)  # what a process that failed halfway left
            build(path)
            done.touch()
    return path


def _shared_run(tmp_path_factory, splits, name, **overrides):
    """(run_dir, TrainResult) of a tiny run trained once per session; a second process loads the finished run."""
    built = {}
    run_dir = shared_path(tmp_path_factory, name, lambda path: built.update(result=_train_tiny(path, splits, **overrides)))
    return run_dir, built.get("result") or _train_tiny(run_dir, splits, **overrides)  # finished: loads, writes nothing


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, splits):
    """A Bernoulli MLP VAE trained for one epoch on 2,000 real images: (run_dir, TrainResult)."""
    return _shared_run(tmp_path_factory, splits, "tiny_run")


@pytest.fixture(scope="session")
def tiny_gaussian_conv_run(tmp_path_factory, splits):
    """A Gaussian conv VAE trained for one epoch on 2,000 real images: (run_dir, TrainResult)."""
    return _shared_run(tmp_path_factory, splits, "tiny_gaussian_conv_run", architecture="conv", likelihood="gaussian",
                       latent_dim=4)


@pytest.fixture(scope="session")
def tiny_vamp_run(tmp_path_factory, splits):
    """A Bernoulli VampPrior VAE (gated MLP 64-64, latent 4, K = 10 pseudo-inputs started from training images,
    log-variance in [-6, 2], IWAE k = 2) trained for one epoch on 500 real images: (run_dir, TrainResult)."""
    return _shared_run(
        tmp_path_factory, splits, "tiny_vamp_run", train_limit=500, latent_dim=4, prior="vamp", num_pseudo_inputs=10,
        mlp_layer="gated", mlp_hidden_units=[64, 64], log_var_bounds=[-6.0, 2.0], objective="iwae", iw_samples=2,
    )


# The longest modules first: `make test` runs three processes, each taking whole modules in
# collection order (pytest-xdist, --dist loadfile), so a long module collected last would
# leave one process working alone at the end. Measured on 2 cores: each of these takes a minute or more.
LONGEST_FIRST = ("test_serving_install.py", "test_faults_run.py", "test_distribute.py", "test_hvae_export.py",
                 "test_experiments.py", "test_resume.py", "test_hvae.py", "test_server_abuse.py", "test_explorer.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
