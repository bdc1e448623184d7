"""The sampling layer and the loss terms against their closed forms."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from kvae import Sampling, losses


def test_sampling_has_mean_mu_and_variance_sigma2():
    n = 200_000
    mu = np.array([1.5, -2.0, 0.0], np.float32)
    log_var = np.array([0.0, math.log(4.0), math.log(0.25)], np.float32)
    z = ops.convert_to_numpy(Sampling(seed=7)([np.tile(mu, (n, 1)), np.tile(log_var, (n, 1))]))
    # Standard errors: sigma / sqrt(n) for the mean, about sigma^2 * sqrt(2 / n) for the variance.
    np.testing.assert_allclose(z.mean(axis=0), mu, atol=5 * 2.0 / math.sqrt(n))
    np.testing.assert_allclose(z.var(axis=0), np.exp(log_var), rtol=5 * math.sqrt(2.0 / n))


def test_sampling_seed_makes_draws_repeatable_and_is_in_config():
    mu = np.zeros((4, 3), np.float32)
    a = ops.convert_to_numpy(Sampling(seed=3)([mu, mu]))
    b = ops.convert_to_numpy(Sampling(seed=3)([mu, mu]))
    c = ops.convert_to_numpy(Sampling(seed=4)([mu, mu]))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    layer = Sampling(seed=3, name="s")
    assert layer.get_config()["seed"] == 3
    assert Sampling.from_config(layer.get_config()).seed == 3


def test_sampling_rejects_a_non_integer_seed():
    with pytest.raises(ValueError, match="Received: seed=1.5"):
        Sampling(seed=1.5)


def test_kl_is_zero_at_the_prior_and_matches_the_closed_form():
    zeros = np.zeros((2, 5), np.float32)
    np.testing.assert_allclose(ops.convert_to_numpy(losses.kl_divergence(zeros, zeros)), 0.0, atol=1e-7)
    # mu = 1, sigma^2 = e: -1/2 (1 + 1 - 1 - e) = (e - 1) / 2 per dimension.
    mu = np.ones((1, 3), np.float32)
    log_var = np.ones((1, 3), np.float32)
    expected = 3 * (math.e - 1) / 2
    np.testing.assert_allclose(ops.convert_to_numpy(losses.kl_divergence(mu, log_var)), [expected], rtol=1e-6)


def test_kl_matches_a_monte_carlo_estimate():
    rng = np.random.default_rng(0)
    mu, log_var = np.float32(0.7), np.float32(-0.5)
    z = mu + np.exp(0.5 * log_var) * rng.standard_normal(400_000)
    log_q = -0.5 * ((z - mu) ** 2 / np.exp(log_var) + log_var + math.log(2 * math.pi))
    log_p = -0.5 * (z**2 + math.log(2 * math.pi))
    closed = ops.convert_to_numpy(losses.kl_divergence(np.array([[mu]]), np.array([[log_var]])))[0]
    assert abs(np.mean(log_q - log_p) - closed) < 0.01


def test_free_bits_floor_each_dimension():
    mu = np.array([[0.0, 3.0]], np.float32)  # KL 0 and 4.5 nats
    lv = np.zeros((1, 2), np.float32)
    assert float(losses.free_bits_kl(mu, lv, 1.0)) == pytest.approx(1.0 + 4.5)
    assert float(losses.free_bits_kl(mu, lv, 0.0)) == pytest.approx(4.5)


def test_bernoulli_nll_equals_binary_cross_entropy():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (4, 28, 28, 1)).astype(np.float32)
    x = (rng.random((4, 28, 28, 1)) < 0.5).astype(np.float32)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(4, -1).sum(1)
    np.testing.assert_allclose(ops.convert_to_numpy(losses.bernoulli_nll(x, logits)), expected, rtol=1e-5)
    # Stable for huge logits, where a naive log(sigmoid) overflows.
    big = np.full((1, 2), 500.0, np.float32)
    assert np.isfinite(ops.convert_to_numpy(losses.bernoulli_nll(np.zeros((1, 2), np.float32), big))).all()


def test_gaussian_nll_is_the_scaled_squared_error_plus_a_constant():
    rng = np.random.default_rng(2)
    x, mean = rng.random((3, 10)).astype(np.float32), rng.random((3, 10)).astype(np.float32)
    log_var = np.float32(math.log(0.1))
    expected = 0.5 * (((x - mean) ** 2) / 0.1 + math.log(0.1) + math.log(2 * math.pi)).sum(1)
    np.testing.assert_allclose(ops.convert_to_numpy(losses.gaussian_nll(x, mean, log_var)), expected, rtol=1e-5)


def test_sampling_survives_a_keras_round_trip(tmp_path):
    inputs = [keras.Input((2,)), keras.Input((2,))]
    model = keras.Model(inputs, Sampling(seed=5)(inputs))
    path = tmp_path / "s.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.layers[-1].seed == 5
