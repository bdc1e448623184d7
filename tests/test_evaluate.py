"""The evaluation: exact on a model whose likelihood is known, repeatable, and the CLI and pictures."""

import json
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from kvae import VAE
from kvae_cli import main
from kvae.evaluate import evaluate, format_table


def _linear_gaussian_vae(exact_posterior):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s2 I) with orthogonal columns of W.

    Then p(x) = N(b, W W^T + s2 I) in closed form, and the true posterior is
    Gaussian with diagonal covariance, so an encoder can represent it exactly.
    """
    d_x, d_z, s2 = 6, 2, 0.5
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((d_x, d_z)))
    w = (q * np.array([2.0, 0.7])).astype(np.float32)  # (d_x, d_z), W^T W diagonal
    b = rng.standard_normal(d_x).astype(np.float32)
    post_var = 1.0 / (1.0 + np.diag(w.T @ w) / s2)  # (d_z,)
    a = (post_var[:, None] * w.T / s2).astype(np.float32)  # z_mean = A (x - b)

    x_in = keras.Input((d_x,))
    z_mean = keras.layers.Dense(d_z, name="z_mean")(x_in)
    z_log_var = keras.layers.Dense(d_z, name="z_log_var")(x_in)
    encoder = keras.Model(x_in, [z_mean, z_log_var])
    z_in = keras.Input((d_z,))
    decoder = keras.Model(z_in, keras.layers.Dense(d_x, name="out")(z_in))
    encoder.get_layer("z_mean").set_weights([a.T, -(a @ b)])
    log_var = np.log(post_var if exact_posterior else 3.0 * post_var).astype(np.float32)
    encoder.get_layer("z_log_var").set_weights([np.zeros((d_x, d_z), np.float32), log_var])
    decoder.get_layer("out").set_weights([w.T, b])
    model = VAE(encoder, decoder, likelihood="gaussian", gaussian_variance=s2)

    cov = w @ w.T + s2 * np.eye(d_x)
    x = rng.multivariate_normal(b, cov, size=200).astype(np.float32)
    diff = x - b
    _, logdet = np.linalg.slogdet(cov)
    exact_nll = 0.5 * (np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff) + logdet + d_x * math.log(2 * math.pi))
    return model, x, float(exact_nll.mean())


def test_exact_posterior_gives_the_exact_log_likelihood_for_any_k():
    model, x, exact = _linear_gaussian_vae(exact_posterior=True)
    for k in (1, 7):
        result = evaluate(model, x, k=k, batch_size=50, verbose=0)
        assert result["nll"] == pytest.approx(exact, abs=1e-3)
    # The ELBO is tight at the true posterior too (its estimate is noisy: k = 7 samples per image).
    assert result["negative_elbo"] == pytest.approx(exact, abs=0.15)


def test_importance_weighting_tightens_toward_the_true_likelihood():
    model, x, exact = _linear_gaussian_vae(exact_posterior=False)
    k1 = evaluate(model, x, k=1, verbose=0)["nll"]
    k2000 = evaluate(model, x, k=2000, chunk_size=300, verbose=0)  # several chunks per image
    assert k2000["nll"] < k1
    assert k2000["nll"] == pytest.approx(exact, abs=0.02)
    assert k2000["negative_elbo"] > exact + 0.1  # the loose posterior costs ELBO, not NLL


def test_evaluation_repeats_with_its_seed_and_reports_everything(tiny_run, splits):
    _, result = tiny_run
    from kvae.data import pipeline

    x = pipeline.prepare_eval(splits.x_test[:50], binarize=True)
    a = evaluate(result.model, x, splits.y_test[:50], k=20, seed=3, verbose=0)
    b = evaluate(result.model, x, splits.y_test[:50], k=20, seed=3, verbose=0)
    assert a == b
    assert a["nll"] <= a["negative_elbo"] + 1.0  # the IWAE bound is tighter (up to noise)
    assert a["bits_per_dim"] == pytest.approx(a["nll"] / (784 * math.log(2)))
    assert len(a["kl_per_dim"]) == 8 and sum(a["kl_per_dim"]) == pytest.approx(a["kl_loss"], rel=1e-5)
    # Active units, recomputed from the encoder's means: Cov_x(E_q[z_d]) above 0.01 (Burda et al., 2015).
    z_mean = keras.ops.convert_to_numpy(result.model.encoder(x)[0]).astype(np.float64)
    activity = z_mean.var(axis=0)
    np.testing.assert_allclose(a["activity_per_dim"], activity, rtol=1e-4, atol=1e-7)
    assert a["active_units"] == int((activity > 0.01).sum())
    assert np.abs(activity - 0.01).min() > 1e-4  # no dimension so near the threshold that rounding decides
    assert "NLL (IWAE, k=20)" in format_table(a)
    with pytest.raises(ValueError, match="Received: k=0"):
        evaluate(result.model, x, k=0)


def test_active_units_are_the_latents_whose_mean_varies_over_the_images_by_more_than_a_hundredth():
    """Two latents, their means' variances over x set to 0.05 and 0.002: one active unit (threshold 0.01)."""
    model, x, _ = _linear_gaussian_vae(exact_posterior=True)
    layer = model.encoder.get_layer("z_mean")
    kernel, bias = layer.get_weights()
    z_mean = x.astype(np.float64) @ kernel + bias
    kernel = kernel * np.sqrt(np.array([0.05, 0.002]) / z_mean.var(axis=0)).astype(np.float32)
    layer.set_weights([kernel, bias])
    result = evaluate(model, x, k=1, verbose=0)
    assert result["activity_per_dim"] == pytest.approx([0.05, 0.002], rel=1e-3)
    assert result["active_units"] == 1


def _copy(run_dir, tmp_path):
    """A copy of a shared run to write into: evaluation.json changes what other tests' exports of it record."""
    return pathlib.Path(shutil.copytree(run_dir, tmp_path / "run"))


def test_cli_evaluate_and_plot_write_their_files(tiny_run, capsys, tmp_path):
    run_dir = _copy(tiny_run[0], tmp_path)
    assert main(["evaluate", str(run_dir), "--k", "5", "--limit", "40"]) == 0
    saved = json.loads((run_dir / "evaluation.json").read_text())
    assert saved["k"] == 5 and saved["num_examples"] == 40
    assert not (run_dir / "evaluation.partial.npz").exists()  # the record of batches done goes when it ends
    assert "bits per dimension" in capsys.readouterr().out
    assert main(["plot", str(run_dir)]) == 0
    for name in ("samples.png", "reconstructions.png", "latent_scatter.png", "interpolation.png", "traversal.png", "history.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_cli_evaluate_names_a_missing_run(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "is not a finished kvae run" in capsys.readouterr().err


def test_two_dimensional_latent_gets_a_manifold(tmp_path, splits):
    from tests.conftest import _train_tiny

    _train_tiny(tmp_path, splits, latent_dim=2, train_limit=500)
    assert (tmp_path / "manifold.png").exists() and (tmp_path / "latent_scatter.png").exists()


def test_monte_carlo_error_is_zero_at_the_exact_posterior_and_matches_the_spread_over_seeds():
    model, x, _ = _linear_gaussian_vae(exact_posterior=True)
    assert evaluate(model, x, k=20, verbose=0)["nll_mc_stderr"] == pytest.approx(0.0, abs=1e-6)  # every weight equal
    model, x, _ = _linear_gaussian_vae(exact_posterior=False)
    runs = [evaluate(model, x, k=50, seed=s, verbose=0) for s in range(12)]
    spread = np.std([r["nll"] for r in runs], ddof=1)  # what another evaluation seed moves the estimate by
    reported = np.mean([r["nll_mc_stderr"] for r in runs])
    assert 0.5 * spread < reported < 2.0 * spread, (reported, spread)
    assert runs[0]["nll_stderr"] > 5 * reported  # here the images vary far more than the estimate


def test_compare_pairs_images_and_names_the_winner(tiny_run, tmp_path, capsys):
    from kvae.evaluate import compare, format_comparison

    model, x, _ = _linear_gaussian_vae(exact_posterior=True)
    loose, _, _ = _linear_gaussian_vae(exact_posterior=False)
    a, b = evaluate(model, x, k=50, verbose=0), evaluate(loose, x, k=1, verbose=0)
    c = compare(a, b)
    per_image = np.asarray(a["nll_per_image"]) - np.asarray(b["nll_per_image"])
    assert c["difference"] == pytest.approx(per_image.mean()) and c["difference"] < 0
    assert c["difference_stderr"] == pytest.approx(per_image.std(ddof=1) / math.sqrt(len(x)))
    assert format_comparison(c, "exact", "loose").startswith("exact beats loose by ")
    with pytest.raises(ValueError, match="same test images"):
        compare(a, evaluate(model, x[:10], k=5, verbose=0))
    # The command: a run against itself differs by exactly 0.
    run_dir = _copy(tiny_run[0], tmp_path / "copy")
    assert main(["evaluate", str(run_dir), "--k", "5", "--limit", "30"]) == 0
    capsys.readouterr()
    assert main(["compare", str(run_dir), str(run_dir)]) == 0
    assert "by 0.000 ± 0.000 nats" in capsys.readouterr().out
    assert main(["compare", str(run_dir), str(tmp_path)]) == 2
    assert "evaluate the run first" in capsys.readouterr().err


def test_a_killed_evaluation_continues_where_it_stopped_with_the_same_numbers(tiny_run, tmp_path, capsys):
    """SIGKILL a real `kvae evaluate` after its first batches; the same command finishes it, bit for bit."""
    args = ["--k", "2000", "--limit", "100", "--batch-size", "10"]  # 10 batches of about 0.2 s
    whole, stopped = _copy(tiny_run[0], tmp_path / "whole"), _copy(tiny_run[0], tmp_path / "stopped")
    record = stopped / "evaluation.partial.npz"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "kvae_cli", "evaluate", str(stopped), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not record.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    log = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL, log
    assert record.exists() and not (stopped / "evaluation.json").exists(), log
    assert log.startswith("Evaluating 100 images, k = 2000 samples each: 10 images at a time"), log  # a log, not a tty
    with np.load(record) as f:
        done = len(f["c0"])
    assert 10 <= done < 100, done

    # Other settings do not mix with the record: refused, naming the difference, the record kept.
    assert main(["evaluate", str(stopped), *args[:-1], "20"]) == 2
    err = capsys.readouterr().err
    assert "holds an unfinished evaluation made with other settings (batch_size: 10 in the file, 20 now" in err, err
    assert record.exists()

    assert main(["evaluate", str(stopped), *args]) == 0
    assert f"after {done} of 100 images" in capsys.readouterr().out
    assert main(["evaluate", str(whole), *args]) == 0
    assert not record.exists()
    assert json.loads((stopped / "evaluation.json").read_text()) == json.loads((whole / "evaluation.json").read_text())


def test_an_evaluation_record_is_checked_before_it_is_continued(tmp_path):
    from kvae.evaluate_progress import EvaluationProgress
    from kvae_contract.errors import ConfigError, RunDirError

    model, x, _ = _linear_gaussian_vae(exact_posterior=False)
    path = tmp_path / "evaluation.partial.npz"
    first = evaluate(model, x, k=5, batch_size=50, verbose=0, progress_path=path)  # evaluate() leaves it; runs remove it
    assert first == evaluate(model, x, k=5, batch_size=50, verbose=0)  # keeping a record changes no number
    with np.load(path) as f:
        assert len(f["c0"]) == len(x)
    assert evaluate(model, x, k=5, batch_size=50, verbose=0, progress_path=path) == first  # nothing left to compute
    with pytest.raises(ConfigError, match=r"other settings \(k: 5 in the file, 7 now;"):
        evaluate(model, x, k=7, batch_size=50, verbose=0, progress_path=path)
    with pytest.raises(ConfigError, match="images_sha256: [0-9a-f]{12} in the file, [0-9a-f]{12} now"):
        evaluate(model, x[::-1], k=5, batch_size=50, verbose=0, progress_path=path)
    model.decoder.layers[-1].bias.assign(model.decoder.layers[-1].bias + 1.0)  # the model changed since
    with pytest.raises(ConfigError, match="weights_sha256"):
        evaluate(model, x, k=5, batch_size=50, verbose=0, progress_path=path)
    path.write_bytes(b"PK\x03\x04 not a whole zip")
    with pytest.raises(RunDirError, match="is not a readable evaluation record .* Delete .* to start the evaluation over"):
        EvaluationProgress.open(path, {})


def test_the_default_chunk_keeps_every_layer_output_small_and_mlp_evaluations_unchanged(tiny_run, tiny_gaussian_conv_run):
    """A conv decoder's 28x28x32 layer over 100,000 samples (2.5e9 numbers) made TensorFlow segfault."""
    from kvae.evaluate import MAX_ACTIVATION, SAMPLES_PER_CALL, default_chunk_size, widest_layer
    from kvae.runs import load_run

    _, conv = load_run(tiny_gaussian_conv_run[0])
    assert widest_layer(conv.decoder) == 28 * 28 * 32
    for batch_size in (1, 10, 100, 1000):
        chunk = default_chunk_size(conv, 5000, batch_size)
        assert batch_size * chunk * widest_layer(conv.decoder) <= MAX_ACTIVATION or chunk == 1, (batch_size, chunk)
    # The chunk decides the order of the draws: an MLP keeps the chunk its published evaluations used.
    _, mlp = load_run(tiny_run[0])
    assert default_chunk_size(mlp, 5000, 100) == SAMPLES_PER_CALL // 100
    assert default_chunk_size(mlp, 50, 100) == 50
