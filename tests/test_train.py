"""`kvae train`: run directory, NaN guard, reproducibility, warm-up."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from kvae import architectures
from kvae.callbacks import EpochCheckpoint, KLWarmup, StopOnNaN, load_state
from kvae_cli import main
from kvae.config import TrainConfig
from kvae_contract.errors import ConfigError
from kvae.data import pipeline
from kvae.optimizers import FusedAdam
from kvae.train import TrainingDiverged, build_model, train
from kvae.vae import VAE


def test_run_directory_has_every_file(tiny_run):
    run_dir, result = tiny_run
    for name in ("config.json", "model.keras", "history.csv", "samples.png", "reconstructions.png", "test_metrics.json"):
        assert (run_dir / name).stat().st_size > 0, name
    assert any((run_dir / "logs").rglob("events.out.tfevents.*"))  # TensorBoard
    config = TrainConfig.load(run_dir / "config.json")
    assert config.latent_dim == 8 and config.train_limit == 2000
    header = (run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "loss", "reconstruction_loss", "kl_loss", "val_loss"} <= set(header)
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    assert metrics["num_examples"] == 2000  # conftest's eval_limit: the first 2,000 test images
    assert metrics["negative_elbo"] == pytest.approx(metrics["reconstruction_loss"] + metrics["kl_loss"])
    assert result.test_metrics == metrics


def test_seeded_runs_repeat_exactly(tmp_path, splits):
    histories = []
    for name in ("a", "b"):
        config = TrainConfig(run_dir=str(tmp_path / name), train_limit=500, eval_limit=500, epochs=2, latent_dim=4, seed=11)
        histories.append(train(config, splits=splits, verbose=0).history)
    assert histories[0] == histories[1]


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, splits):
    x = splits.x_train[:200].astype("float32") / 255.0
    encoder, decoder = architectures.build("mlp", (28, 28, 1), 2)
    model = VAE(encoder, decoder, seed=0)
    model.compile(optimizer="adam")

    def batches():  # epoch 1 is clean, epoch 2 turns NaN at its second batch
        for epoch in range(2):
            for i in range(4):
                batch = x[i * 50 : (i + 1) * 50].copy()
                if epoch == 1 and i == 1:
                    batch[0, 0, 0, 0] = np.nan
                yield batch

    import tensorflow as tf

    ds = tf.data.Dataset.from_generator(batches, output_signature=tf.TensorSpec((None, 28, 28, 1), tf.float32))
    guard, ckpt = StopOnNaN(), EpochCheckpoint(str(tmp_path))
    model.fit(ds, epochs=2, steps_per_epoch=4, callbacks=[guard, ckpt], verbose=0)
    assert guard.failed_at == (1, 1)
    state = load_state(tmp_path)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    good = keras.saving.load_model(tmp_path / "model.keras")
    assert all(np.isfinite(w).all() for w in good.get_weights())


def test_divergence_is_reported_clearly(tmp_path, splits):
    config = TrainConfig(run_dir=str(tmp_path / "nan"), train_limit=500, eval_limit=500, epochs=2, learning_rate=1e30)
    with pytest.raises(TrainingDiverged, match="NaN/Inf in epoch 1.*Lower --learning-rate"):
        train(config, splits=splits, verbose=0)


def test_a_different_config_for_an_existing_run_is_refused(tiny_run, splits):
    run_dir, _ = tiny_run
    config = TrainConfig(run_dir=str(run_dir), train_limit=2000, epochs=1, latent_dim=9, batch_size=100, seed=1)
    with pytest.raises(ValueError, match="different config.*latent_dim"):
        train(config, splits=splits, verbose=0)


def test_kl_warmup_ramps_linearly_to_beta():
    warmup = KLWarmup(beta=2.0, epochs=4)
    assert [warmup.weight(e) for e in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]


def test_cli_rejects_bad_settings_with_exit_code_2(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "r"), "--latent-dim", "0"]) == 2
    assert "latent_dim must be >= 1" in capsys.readouterr().err
    assert main(["train", "--run-dir", str(tmp_path / "r"), "--mlp-hidden-units", "200", "0"]) == 2
    assert "mlp_hidden_units must list one or more layer sizes >= 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    with pytest.raises(SystemExit):
        main(["train", "--architecture", "rnn"])


def test_presets_are_valid_configs_of_the_documented_models():
    from kvae.config import PRESETS

    mlp = build_model(TrainConfig(**PRESETS["fashion-mlp"]), (28, 28, 1))
    assert [layer.units for layer in mlp.encoder.layers if layer.name.startswith("gated_")] == [300, 300]
    assert (mlp.prior, mlp.objective, mlp.iw_samples, mlp.latent_dim) == ("normal", "iwae", 5, 40)
    assert mlp.encoder.get_layer("z_log_var").get_config()["low"] == -6.0
    vamp = build_model(TrainConfig(**PRESETS["fashion-vamp"]), (28, 28, 1))
    assert (vamp.prior, vamp.num_pseudo_inputs, vamp.objective, vamp.iw_samples) == ("vamp", 500, "iwae", 5)
    conv = build_model(TrainConfig(**PRESETS["fashion-conv"]), (28, 28, 1))
    assert conv.encoder.get_layer("dense").units == 512 and conv.latent_dim == 50


@pytest.mark.parametrize("settings, received", [
    (dict(latent_dim=0), "Received: latent_dim=0"),
    (dict(levels=2, architecture="conv"), "Received: architecture='conv', levels=2"),
    (dict(iw_samples=3), "Received: objective='elbo', iw_samples=3"),
    (dict(log_var_bounds=[2, -6]), "Received: log_var_bounds=[2.0, -6.0]"),
    (dict(color_mode="cmyk"), "Received: color_mode='cmyk'"),
])
def test_a_bad_config_names_the_settings_it_received(settings, received):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(**settings)
    assert str(caught.value).endswith(received), caught.value  # those settings only, not the whole config


def test_resume_restores_the_weights_and_the_optimizer_state(tmp_path, splits):
    x = pipeline.binarize_once(splits.x_train[:300])

    def fresh():
        encoder, decoder = architectures.build("mlp", (28, 28, 1), 3, hidden=(16,))
        model = VAE(encoder, decoder, seed=0)
        model.compile(optimizer=FusedAdam(1e-3))
        return model

    trained = fresh()
    trained.fit(x, epochs=1, batch_size=100, callbacks=[EpochCheckpoint(str(tmp_path))], verbose=0)
    resumed = fresh()
    assert EpochCheckpoint(str(tmp_path)).resume(resumed, x[:2]) == 1
    assert int(resumed.optimizer.iterations) == 3
    for a, b in zip(trained.weights + trained.optimizer.variables, resumed.weights + resumed.optimizer.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b), err_msg=a.path)
    untouched = fresh()
    assert any(
        not np.array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
        for a, b in zip(untouched.trainable_weights, trained.trainable_weights)
    )


def test_eval_limit_takes_the_first_images_of_the_published_draw(splits):
    from kvae.train import model_inputs

    x_train, x_val, x_test = model_inputs(TrainConfig(), splits)
    cut_train, cut_val, cut_test = model_inputs(TrainConfig(eval_limit=300), splits)
    assert len(x_val) == len(x_test) == 10_000 and len(cut_val) == len(cut_test) == 300
    np.testing.assert_array_equal(cut_val, x_val[:300])  # the same binary images, not another draw
    np.testing.assert_array_equal(cut_test, x_test[:300])
    np.testing.assert_array_equal(cut_train, x_train)
    with pytest.raises(ConfigError, match="eval_limit must be >= 1"):
        TrainConfig(eval_limit=0)
