"""The two-level HVAE: its KL terms, its ELBO against brute force, IWAE, saving, resume and the command line."""

import json
import math

import keras
import numpy as np
import pytest
from keras import ops

from kvae import HVAE, architectures, losses
from kvae.callbacks import load_state
from kvae.data import pipeline
from kvae.hvae import kl_normal_per_dim
from kvae_cli.main import main
from kvae_contract.errors import ConfigError

LOG_2PI = math.log(2 * math.pi)


def _model(prior="normal", objective="elbo", iw_samples=1, dims=(3, 2), seed=5, **kwargs):
    parts = architectures.hierarchical_mlp((28, 28, 1), dims, hidden=(16, 16), log_var_bounds=(-6.0, 2.0))
    return HVAE(**parts, prior=prior, num_pseudo_inputs=5, objective=objective, iw_samples=iw_samples, seed=seed,
                **kwargs)


@pytest.fixture(scope="module")
def x_small(splits):
    return pipeline.binarize_once(splits.x_train[:200])


@pytest.fixture(scope="module")
def trained(x_small):
    """A tiny HVAE a few epochs into training, so that its densities are not the initial ones."""
    keras.utils.set_random_seed(1)
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x_small, epochs=4, batch_size=50, verbose=0)
    return model


def _log_normal(z, mean, log_var):
    return -0.5 * (LOG_2PI + log_var + (z - mean) ** 2 * np.exp(-log_var)).sum(-1)


def _heads(submodel, inputs):
    return [ops.convert_to_numpy(t).astype(np.float64) for t in submodel(inputs)]


# === The KL terms ===


def test_gaussian_kl_matches_its_closed_form_and_a_monte_carlo_estimate():
    q_mean, q_log_var = np.array([[0.3, -1.0, 2.0]]), np.array([[0.2, -0.5, 1.0]])
    p_mean, p_log_var = np.array([[0.0, 0.5, 1.0]]), np.array([[-0.1, 0.4, 0.0]])
    got = ops.convert_to_numpy(kl_normal_per_dim(*(ops.convert_to_tensor(a, "float32") for a in
                                                    (q_mean, q_log_var, p_mean, p_log_var))))
    # KL of two 1-d Gaussians: log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2.
    s_q, s_p = np.exp(0.5 * q_log_var), np.exp(0.5 * p_log_var)
    closed = np.log(s_p / s_q) + (s_q**2 + (q_mean - p_mean) ** 2) / (2 * s_p**2) - 0.5
    np.testing.assert_allclose(got, closed, rtol=1e-5)
    z = q_mean + s_q * np.random.default_rng(0).standard_normal((400_000, 3))
    log_ratio = -0.5 * ((z - q_mean) ** 2 / s_q**2 + q_log_var) + 0.5 * ((z - p_mean) ** 2 / s_p**2 + p_log_var)
    np.testing.assert_allclose(log_ratio.mean(0), closed[0], atol=0.01)
    # Against N(0, 1) it is the one-level VAE's KL.
    standard = kl_normal_per_dim(*(ops.convert_to_tensor(a, "float32") for a in (q_mean, q_log_var, 0 * p_mean, 0 * p_log_var)))
    np.testing.assert_allclose(ops.convert_to_numpy(standard), ops.convert_to_numpy(losses.kl_per_dim(
        ops.convert_to_tensor(q_mean, "float32"), ops.convert_to_tensor(q_log_var, "float32"))), rtol=1e-6)


def test_each_level_reports_its_closed_form_kl_at_the_sampled_top_code(trained, x_small):
    x = x_small[:20]
    out = trained(x)
    d1 = trained.latent_dims[0]
    z2 = ops.convert_to_numpy(out["z"])[:, d1:]
    z2_mean, z2_log_var = _heads(trained.encoder_z2, x)
    z1_mean, z1_log_var = _heads(trained.encoder_z1, [x, z2])
    p_mean, p_log_var = _heads(trained.prior_z1, z2)
    kl_z1 = (0.5 * (p_log_var - z1_log_var + (np.exp(z1_log_var) + (z1_mean - p_mean) ** 2) * np.exp(-p_log_var) - 1)).sum(1)
    kl_z2 = (-0.5 * (1 + z2_log_var - z2_mean**2 - np.exp(z2_log_var))).sum(1)
    np.testing.assert_allclose(ops.convert_to_numpy(out["kl_z1"]), kl_z1, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ops.convert_to_numpy(out["kl_z2"]), kl_z2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ops.convert_to_numpy(out["kl"]), kl_z1 + kl_z2, rtol=1e-4, atol=1e-4)


# === The ELBO against brute force ===


def test_the_training_loss_is_the_elbo_of_a_brute_force_monte_carlo_estimate(trained, x_small):
    """The model's loss (analytic KL of z1 given z2, of z2) vs log p(x, z1, z2) - log q(z1, z2 | x) in float64."""
    x = x_small[:1]
    n = 20_000
    rng = np.random.default_rng(3)
    xs = np.repeat(x, n, axis=0)
    z2_mean, z2_log_var = _heads(trained.encoder_z2, x)
    z2 = z2_mean + np.exp(0.5 * z2_log_var) * rng.standard_normal((n, 2))
    z1_mean, z1_log_var = _heads(trained.encoder_z1, [xs, z2.astype(np.float32)])
    z1 = z1_mean + np.exp(0.5 * z1_log_var) * rng.standard_normal((n, 3))
    p_mean, p_log_var = _heads(trained.prior_z1, z2.astype(np.float32))
    logits = ops.convert_to_numpy(trained.decoder([z1.astype(np.float32), z2.astype(np.float32)])).astype(np.float64)
    xf = xs.reshape(n, -1).astype(np.float64)
    lf = logits.reshape(n, -1)
    log_px = (xf * lf - np.logaddexp(0, lf)).sum(1)
    log_joint = log_px + _log_normal(z1, p_mean, p_log_var) + _log_normal(z2, 0, 0)
    log_w = log_joint - _log_normal(z1, z1_mean, z1_log_var) - _log_normal(z2, z2_mean, z2_log_var)
    brute, stderr = -log_w.mean(), log_w.std() / math.sqrt(n)

    losses_ = []
    for _ in range(20):  # the model's loss on 1,000 copies of x, 20 times: 20,000 draws of its own sampler
        trained(np.repeat(x, 1000, axis=0))
        losses_.append(float(sum(ops.convert_to_numpy(t) for t in trained.losses)))
    model_elbo = np.mean(losses_)
    model_stderr = np.std(losses_) / math.sqrt(len(losses_))
    assert abs(model_elbo - brute) < 4 * math.hypot(stderr, model_stderr) + 1e-3, (model_elbo, brute, stderr, model_stderr)


@pytest.mark.parametrize("prior", ["normal", "vamp"])
def test_iwae_with_one_sample_is_the_one_sample_negative_elbo(prior, x_small):
    model = _model(prior=prior, objective="iwae", iw_samples=1)
    out = model(x_small[:40])
    loss = float(sum(ops.convert_to_numpy(t) for t in model.losses))
    assert loss == pytest.approx(float(np.mean(ops.convert_to_numpy(out["reconstruction_nll"] + out["kl"]))), rel=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(out["iw_bound"]),
                               -ops.convert_to_numpy(out["reconstruction_nll"] + out["kl"]), rtol=1e-5)


def test_iwae_history_reports_both_levels_the_bound_and_the_elbo(x_small):
    model = _model(prior="vamp", objective="iwae", iw_samples=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x_small, epochs=1, batch_size=50, verbose=0).history
    assert {"kl_z1", "kl_z2", "kl_loss", "negative_iw_bound", "negative_elbo"} <= set(history)
    assert history["kl_loss"][0] == pytest.approx(history["kl_z1"][0] + history["kl_z2"][0], rel=1e-4)
    assert history["negative_iw_bound"][0] < history["negative_elbo"][0]


def test_free_bits_floor_each_level_and_the_kl_weight_scales_the_penalty(x_small):
    model = _model(free_bits=100.0)  # far above any dimension's KL: every one of the 3 + 2 dims sits on the floor
    out = model(x_small[:30])
    recon = float(np.mean(ops.convert_to_numpy(out["reconstruction_nll"])))
    assert float(sum(ops.convert_to_numpy(t) for t in model.losses)) == pytest.approx(recon + 100.0 * 5, rel=1e-5)
    model.kl_weight.assign(0.25)  # what the warm-up callback ramps
    out = model(x_small[:30])
    recon = float(np.mean(ops.convert_to_numpy(out["reconstruction_nll"])))
    assert float(sum(ops.convert_to_numpy(t) for t in model.losses)) == pytest.approx(recon + 0.25 * 100.0 * 5, rel=1e-5)


# === Sampling, saving ===


@pytest.mark.parametrize("prior", ["normal", "vamp"])
def test_sampling_repeats_with_the_seed_and_survives_a_keras_round_trip(prior, x_small, tmp_path):
    model = _model(prior=prior)
    model.compile(optimizer="adam")
    model.fit(x_small, epochs=1, batch_size=50, verbose=0)
    path = tmp_path / "hvae.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, HVAE) and loaded.latent_dims == (3, 2) and loaded.prior == prior
    np.testing.assert_array_equal(loaded.sample(6, seed=4), model.sample(6, seed=4))
    assert not np.array_equal(model.sample(6, seed=4), model.sample(6, seed=5))
    np.testing.assert_array_equal(loaded.encode(x_small[:5])[0], model.encode(x_small[:5])[0])
    codes = model.sample_prior(6, seed=4)
    assert codes.shape == (6, 5)
    np.testing.assert_allclose(model.decode(codes), model.sample(6, seed=4), atol=1e-6)
    assert model.reconstruct(x_small[:3]).shape == (3, 28, 28, 1)


def test_the_sub_models_must_fit_together():
    parts = architectures.hierarchical_mlp((28, 28, 1), (3, 2), hidden=(8,))
    other = architectures.hierarchical_mlp((28, 28, 1), (4, 2), hidden=(8,))
    with pytest.raises(ConfigError, match="prior_z1 must map z2"):
        HVAE(parts["encoder_z2"], parts["encoder_z1"], other["prior_z1"], parts["decoder"])
    with pytest.raises(ConfigError, match="HVAE is not conditional"):
        HVAE(**parts).sample(2, labels=[0, 1])


# === The command line: train, resume, evaluate ===

ARGS = ["--levels", "2", "--mlp-hidden-units", "16", "--latent-dim", "3", "--train-limit", "300", "--eval-limit", "200",
        "--batch-size", "50", "--seed", "2"]


def _kvae(capsys, *args):
    """`kvae ARGS` in this process (the command line's own entry point; no TensorFlow start-up per call)."""
    capsys.readouterr()
    assert main([*map(str, args)]) == 0
    return capsys.readouterr().out


def test_a_two_level_run_resumes_exactly_and_evaluates_each_level(tmp_path, capsys):
    whole, split = tmp_path / "whole", tmp_path / "split"
    _kvae(capsys, "train", "--run-dir", whole, *ARGS, "--epochs", "2")
    _kvae(capsys, "train", "--run-dir", split, *ARGS, "--epochs", "1")
    assert "after epoch 1 of 2" in _kvae(capsys, "train", "--run-dir", split, *ARGS, "--epochs", "2")
    assert load_state(whole)["history"] == load_state(split)["history"]  # every logged number, exactly
    assert {"kl_z1", "kl_z2", "val_kl_z1"} <= set(load_state(whole)["history"][-1])
    for name in ("levels_z1.png", "levels_z2.png", "samples.png", "traversal.png"):
        assert (whole / name).stat().st_size > 0
    out = _kvae(capsys, "evaluate", whole, "--k", "20", "--limit", "50")
    assert "level z1" in out and "level z2" in out
    result = json.loads((whole / "evaluation.json").read_text())
    assert [level["name"] for level in result["levels"]] == ["z1", "z2"]
    assert result["kl_loss"] == pytest.approx(sum(level["kl"] for level in result["levels"]), rel=1e-6)
    assert result["latent_dim"] == 6 and math.isfinite(result["nll"])


def test_two_levels_need_the_mlp(tmp_path, capsys):
    assert main(["train", "--levels", "2", "--architecture", "conv", "--run-dir", str(tmp_path / "r")]) == ConfigError.exit_code
    assert "levels 2 (the HVAE) needs architecture mlp" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
