"""Smoke test of benchmarks/ at toy size: FLOP counts, the references, the worker protocol, the report."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_flop_counts_match_the_layer_arithmetic():
    from benchmarks import flops
    from kvae.config import TrainConfig
    from kvae.train import build_model

    mlp = flops.vae_flops(build_model(TrainConfig(architecture="mlp", latent_dim=50), (28, 28, 1)))
    # 784*200 + 200*200 + 2*200*50 and 50*200 + 200*200 + 200*784 multiply-adds.
    assert (mlp["encoder"], mlp["decoder"]) == (2 * 216_800, 2 * 206_800)
    conv = flops.vae_flops(build_model(TrainConfig(architecture="conv", latent_dim=2), (28, 28, 1)))
    enc = 14 * 14 * 9 * 1 * 32 + 7 * 7 * 9 * 32 * 64 + 3136 * 16 + 2 * 16 * 2
    dec = 2 * 3136 + 7 * 7 * 9 * 64 * 64 + 14 * 14 * 9 * 64 * 32 + 28 * 28 * 9 * 32 * 1
    assert (conv["encoder"], conv["decoder"]) == (2 * enc, 2 * dec)
    assert conv["train"] == 3 * conv["forward"]


def test_torch_reference_is_the_same_mlp_as_kvae(splits):
    from benchmarks import torch_ref
    from kvae.config import TrainConfig
    from kvae.data import pipeline
    from kvae.train import build_model

    model = build_model(TrainConfig(architecture="mlp", latent_dim=50), (28, 28, 1))
    reference = torch_ref.MLPVAE(50)
    torch_ref.load_keras_weights(reference, model.encoder.get_weights(), model.decoder.get_weights())
    enc, dec = torch_ref.keras_weights(reference)
    assert all(np.array_equal(a, b) for a, b in zip(enc + dec, model.encoder.get_weights() + model.decoder.get_weights()))
    x = pipeline.prepare_eval(splits.x_test[:8], binarize=True)
    z_mean, _ = model.encoder(x)
    with torch.no_grad():
        t_mean, _ = reference.encode(torch.from_numpy(x.reshape(8, -1)))
        logits = reference.decode(t_mean)
    np.testing.assert_allclose(t_mean.numpy(), np.asarray(z_mean), atol=1e-4)
    np.testing.assert_allclose(logits.numpy().reshape(8, 28, 28, 1), np.asarray(model.decoder(z_mean)), atol=1e-3)
    # One epoch of each reference model at toy size trains.
    for arch, latent in (("mlp", 50), ("conv", 2)):
        loss = torch_ref.Trainer(arch, latent, splits.x_train[:256], 128).epoch()
        assert 100 < loss < 1000


def test_keras_example_trains_on_the_kvae_pipeline(splits):
    from benchmarks import keras_example
    from kvae.data import pipeline

    model = keras_example.build("mlp", 50)
    history = model.fit(pipeline.train_dataset(splits.x_train[:200], 100, True, seed=0), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_worker_protocol_times_epochs_in_turn(tmp_path):
    from benchmarks import harness

    spec = {"kind": "torch", "architecture": "mlp", "latent_dim": 4, "batch_size": 100, "train_limit": 300, "seed": 0}
    workers = harness.start_all({"a": spec, "b": {**spec, "threads": 1}}, str(tmp_path), timeout=120)
    try:
        reports = harness.alternate(workers, warmup=1, rounds=2, progress=lambda msg: None)
    finally:
        harness.close_all(workers)
    assert [len(reports[n]) for n in ("a", "b")] == [2, 2]
    assert all(r["samples"] == 300 and r["train_s"] > 0 for rs in reports.values() for r in rs)
    summary = harness.throughput_summary(reports)
    assert summary["a"]["ratio_to"]["b"]["median"] == pytest.approx(1 / summary["b"]["ratio_to"]["a"]["median"], rel=0.5)
    assert all(w.proc.poll() is not None for w in workers)


def test_report_rewrites_only_its_own_section(tmp_path):
    from benchmarks import report

    results = {
        "date": "2026-01-01T00:00:00", "quick": True, "wall_s": 60.0, "peak": [{"gflops": 90.0}],
        "machine": {"cpu": "cpu", "cores": 2, "python": "3", "tensorflow": "t", "keras": "k", "torch": "p",
                    "torch_threads": 2, "onnxruntime": "o", "commit": "abc", "loadavg_at_start": [0.5, 0.5, 0.5]},
        "flops": {"mlp": {"train": 2_541_600}},
        "step_floor": {"batch_size": 100, "gemms": 20, "flops_per_example": 2_228_000.0,
                       "tensorflow_s": 0.0011, "torch_s": 0.0015},
        "training": {"mlp": {
            "architecture": "mlp", "latent_dim": 50, "batch_size": 100, "train_limit": None,
            "reports": {"kvae": [{}], "torch": [{}]},
            "summary": {
                name: {"samples_per_s": rate, "samples_per_s_all": [rate], "samples_per_cpu_s": rate,
                       "cores_used": 1.0, "others_cores": 0.0, "ratio_to": {other: {"median": rate / orate}}}
                for (name, rate), (other, orate) in [(("kvae", 12_000.0), ("torch", 10_000.0)),
                                                     (("torch", 10_000.0), ("kvae", 12_000.0))]},
            "vs_best_torch": {"median": 1.2},
        }},
    }
    point = lambda epoch, clock, epoch_s, nll: {  # noqa: E731
        "epoch": epoch, "screen_nll": nll + 0.2, "nll": nll, "nll_stderr": 2.0, "clock_s": clock,
        "train_clock_s": clock * 0.9, "report": {"epoch_s": epoch_s}}
    # kvae: 2.0 s epochs, one of them stalled for 10 s; PyTorch: steady 2.5 s epochs.
    kvae_curve = [point(1, 2.0, 2.0, 250.0), point(2, 14.0, 12.0, 245.0), point(3, 16.0, 2.0, 239.0)]
    torch_curve = [point(1, 2.5, 2.5, 250.0), point(2, 5.0, 2.5, 245.0), point(3, 7.5, 2.5, 239.5)]
    results["quality"] = {
        "settings": {"k": 1000, "num_images": 1000, "threshold": 240.0, "screen_k": 100, "screen_margin": 3.0},
        "curves": {"kvae": kvae_curve, "torch": torch_curve}, "crossed": {"kvae": kvae_curve[2], "torch": torch_curve[2]},
        "torch": "torch"}
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nintro\n\n## Quality (kvae evaluate)\n\nsomeone else's\n")
    for _ in range(2):
        report.update_markdown(str(path), report.render(results))
    text = path.read_text()
    assert text.count(report.BEGIN) == 1 and "someone else's" in text and "intro" in text
    assert "**1.20×** (goal ≥ 1.2×: met)" in text
    assert "time to 240 nats: 0.47× as fast (training clocks only: 0.47×; epochs × median epoch: 1.25×)" in text
    assert "take 1.10 ms in TF and 1.50 ms in PyTorch" in text and "8.33 ms in kvae train" in text
    json.dumps(results)
