"""Smoke test of benchmarks/ at toy size: FLOP counts, the references, the worker protocol, the report, the races."""

import json

import numpy as np
import pytest

# PyTorch (the references' framework, in the test extra) is imported by the tests that use it, not here:
# every test process collects this file, and importing torch costs each of them about 4 s of CPU.


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
    import torch

    from benchmarks import torch_ref
    from kvae.config import TrainConfig
    from kvae.data import pipeline
    from kvae.train import build_model

    model = build_model(TrainConfig(architecture="mlp", latent_dim=50), (28, 28, 1))
    reference = torch_ref.MLPVAE(50)
    torch_ref.load_keras_weights(reference, model.encoder.get_weights(), model.decoder.get_weights())
    enc, dec = torch_ref.keras_weights(reference)
    assert all(np.array_equal(a, b) for a, b in zip(enc + dec, model.encoder.get_weights() + model.decoder.get_weights()))
    x = pipeline.evaluation_views(splits.x_val, splits.x_test, True)[1][:8]  # the published draw
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


def _fashion_vamp(**overrides):
    from kvae.config import PRESETS

    return {**PRESETS["fashion-vamp"], **overrides}


def test_torch_vamp_loss_and_gradients_equal_kvae_on_the_same_weights_and_noise(splits):
    """What makes the vamp race fair: the PyTorch reference computes kvae's objective, not a lookalike."""
    import tensorflow as tf
    import torch
    from keras import ops

    from benchmarks import torch_vamp, worker
    from kvae.callbacks import KLWarmup
    from kvae.config import TrainConfig
    from kvae.train import build_model, init_pseudo_inputs, learning_rate

    recipe = _fashion_vamp(num_pseudo_inputs=30)
    model = build_model(TrainConfig(**recipe), splits.input_shape)
    init_pseudo_inputs(model, splits.x_train[:400], 0)  # exact 0s and 1s: the clip's gradient at its bounds counts
    np.testing.assert_array_equal(ops.convert_to_numpy(model.pseudo_inputs).reshape(30, -1),
                                  torch_vamp.initial_pseudo_inputs(splits.x_train[:400], 30, 0))
    reference = torch_vamp.build(recipe)
    torch_vamp.load_keras_weights(reference, worker.keras_named_weights(model))
    weights = torch_vamp.keras_weights(reference)
    assert sorted(weights) == sorted(worker.keras_named_weights(model))
    assert all(np.array_equal(v, worker.keras_named_weights(model)[n]) for n, v in weights.items())

    b, k, d = 20, recipe["iw_samples"], recipe["latent_dim"]
    x = (np.random.default_rng(1).random((b, 28, 28, 1)) < splits.x_train[:b] / 255.0).astype(np.float32)
    eps = np.random.default_rng(2).standard_normal((k * b, d)).astype(np.float32)  # sample-major, as both lay it out
    model.sampling.call = lambda inputs: inputs[0] + ops.exp(0.5 * inputs[1]) * eps  # kvae's draw, with this noise
    model.kl_weight.assign(0.35)  # mid warm-up, so the weighting is checked too
    variables = [w for part in ("encoder", "decoder") for layer in getattr(model, part).layers for w in layer.weights]
    names = [f"{part}/{layer.name}/{w.name}" for part in ("encoder", "decoder")
             for layer in getattr(model, part).layers for w in layer.weights]
    with tf.GradientTape() as tape:
        model(x, training=True)
        loss = ops.sum(model.losses)
    grads = tape.gradient(loss, variables + [model.pseudo_inputs])
    t_loss = torch_vamp.iwae_loss(reference, torch.from_numpy(x.reshape(b, -1)), torch.from_numpy(eps), 0.35)
    t_loss.backward()
    assert float(t_loss.detach()) == pytest.approx(float(loss), rel=1e-6)
    t_grads = torch_vamp.keras_weights(reference, grads=True)
    for name, g in zip(names + ["pseudo_inputs"], grads):
        g = ops.convert_to_numpy(g)
        np.testing.assert_allclose(t_grads[name], g, atol=1e-5 * max(1.0, np.abs(g).max()), err_msg=name)

    # The schedules: Keras's CosineDecay over the same number of steps, and KLWarmup's weights.
    trainer = torch_vamp.Trainer(recipe, splits.x_train[:250], seed=0)
    schedule = learning_rate(TrainConfig(**recipe), 250)
    assert trainer.decay_steps == schedule.decay_steps == recipe["epochs"] * 3
    for step in (0, 1, 400, trainer.decay_steps - 1, trainer.decay_steps, trainer.decay_steps + 5):
        assert torch_vamp.cosine_learning_rate(step, 1e-3, trainer.decay_steps) == pytest.approx(
            float(schedule(step)), rel=1e-5, abs=1e-9)  # Keras computes it in float32
    warmup = KLWarmup(1.0, recipe["warmup_epochs"])
    assert [torch_vamp.kl_weight(e, recipe["warmup_epochs"]) for e in (0, 7, 19, 20, 300)] == [
        warmup.weight(e) for e in (0, 7, 19, 20, 300)]
    # Keras's initializers on the reference's layers: Glorot-uniform bounds over the fused shapes, zero biases.
    fresh = torch_vamp.build(recipe)
    first = fresh.encoder[0].linear
    assert float(first.weight.abs().max()) <= (6 / (784 + 600)) ** 0.5 and not first.bias.any()
    assert 200 < trainer.epoch() < 1000


def test_torch_vamp_trainer_resumes_exactly_from_its_state(splits, tmp_path):
    """The race's PyTorch contender survives an interruption as kvae train does: 1 + 1 epochs = 2 epochs."""
    import torch

    from benchmarks import torch_vamp

    recipe, x = _fashion_vamp(num_pseudo_inputs=20), splits.x_train[:300]
    straight = torch_vamp.Trainer(recipe, x, seed=0)
    losses = [straight.epoch(), straight.epoch()]
    first = torch_vamp.Trainer(recipe, x, seed=0)
    assert first.epoch() == losses[0]
    torch.save(first.state(), tmp_path / "state.pt")
    torch.randn(1000)  # what happens in between moves no number of the resumed trainer
    resumed = torch_vamp.Trainer(recipe, x, seed=0)  # a new process would start here: seeded afresh
    resumed.restore(torch.load(tmp_path / "state.pt", weights_only=False))
    assert (resumed.epochs_done, resumed.step) == (1, 3)
    assert resumed.epoch() == losses[1]
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_vamp_race_quick_runs_resumes_and_reports(tmp_path):
    """The race at toy size (benchmarks.vamp_race.QUICK): probe, alternation, evaluation, crossings, report.

    It runs in two sittings on one folder, as a race stopped by the end of a
    session and started again: the first stops after kvae's first epoch is
    recorded and while PyTorch's first epoch is trained but not yet recorded;
    the second records that epoch from the dump and report it left, then races on.
    """
    import shutil

    from benchmarks import report, run, vamp_race

    weights, stash, snapshots = tmp_path / "vamp-weights", tmp_path / "stash", []

    def keep(result):  # a copy of each snapshot, and of the dumps on disk when it was taken
        snapshots.append(json.loads(json.dumps(result)))
        shutil.copytree(weights, stash / str(len(snapshots)), dirs_exist_ok=True)

    first = vamp_race.run({**vamp_race.QUICK, "max_epochs": 1}, str(tmp_path), lambda msg: None, keep)
    torch_name = first["torch"]
    assert first["stopped"] == "max_epochs (1)" and len(snapshots) == 3  # kvae's epoch, PyTorch's, the end
    assert [p["epoch"] for p in snapshots[0]["curves"]["kvae"]] == [1] and snapshots[0]["curves"][torch_name] == []
    for f in (stash / "2").glob(f"{torch_name}-0.*"):  # PyTorch's epoch 1, trained and left on disk
        shutil.copy(f, weights)

    snapshots.clear()
    race = vamp_race.run(vamp_race.QUICK, str(tmp_path), lambda msg: None, keep, resume=json.loads(json.dumps(
        first | {"curves": {"kvae": first["curves"]["kvae"], torch_name: []}, "crossed": {"kvae": first["crossed"]["kvae"], torch_name: {}},
                 "gaps": {"kvae": first["gaps"]["kvae"], torch_name: None}})))
    assert race["sittings"] == 2 and race["torch"] == torch_name and race["probe"] == first["probe"]
    same = lambda point: {k: v for k, v in point.items() if k != "eval_s"}  # eval_s: this sitting's evaluation
    assert same(race["curves"][torch_name][0]) == same(first["curves"][torch_name][0])  # recorded from what it left
    assert race["curves"]["kvae"][0] == first["curves"]["kvae"][0]
    assert race["wall_s"] > first["wall_s"]
    assert torch_name in vamp_race.TORCH_CONFIGS and set(race["probe"]) == set(vamp_race.TORCH_CONFIGS)
    assert race["contenders"] == ["kvae", torch_name] and race["stopped"] == "max_epochs (2)"
    assert race["recipe"]["num_pseudo_inputs"] == 10 and race["recipe"]["prior"] == "vamp"
    for name in race["contenders"]:
        curve = race["curves"][name]
        assert [p["epoch"] for p in curve] == [1, 2]
        assert curve[0]["nll"] is not None and 300 < curve[0]["nll"] < 800  # measured, with the VampPrior
        assert 0 < curve[0]["clock_s"] < curve[1]["clock_s"]
        assert curve[1]["screen_nll"] < curve[0]["screen_nll"]  # the second epoch trained on from the first
        assert race["crossed"][name] == {"100000": 1, "50000": 1}  # the last threshold, 1 nat, is never crossed
    rows = {row["threshold"]: row for row in race["summary"]}
    assert rows[100_000.0]["ratio"] == pytest.approx(
        race["curves"][torch_name][0]["clock_s"] / race["curves"]["kvae"][0]["clock_s"])
    assert rows[1.0]["ratio"] is None and rows[1.0]["kvae"]["epochs_run"] == 2
    assert len(snapshots) == 4 and snapshots[-1]["summary"] == race["summary"]  # 1 recovered + 2 raced + the end
    assert not list(weights.iterdir())  # the weight dumps and reports are removed once recorded
    json.dumps(race)

    text = "\n".join(report._vamp_race(race))
    assert "kvae train --preset fashion-vamp" in text and "published draw (seed 777" in text
    assert "| 1 | not within 2 epochs |" in text and "PyTorch time ÷ kvae time" in text
    assert "run in 2 sittings" in text and "sittings" not in "\n".join(report._vamp_race(first))
    with pytest.raises(SystemExit):
        run.main(["--quick", "--only", "vamp_race"])  # the part is spelled vamp-race


def test_vamp_race_refuses_to_mix_two_races(tmp_path):
    """A work folder with training but no record, or a record under other settings, is refused by name."""
    from benchmarks import run, vamp_race

    assert run.load_race(str(tmp_path / "new"), str(tmp_path / "new" / "race.json")) is None  # created, empty
    (tmp_path / "kvae-vamp").mkdir()
    with pytest.raises(SystemExit, match="kvae-vamp.*no race record"):
        run.load_race(str(tmp_path), str(tmp_path / "race.json"))
    saved = {"preset": vamp_race.PRESET, "settings": json.loads(json.dumps(vamp_race.QUICK))}
    vamp_race.check_resumable(saved, {**vamp_race.QUICK, "max_epochs": 7, "max_minutes": 1.0})  # may change
    with pytest.raises(ValueError, match="other settings"):
        vamp_race.check_resumable(saved, {**vamp_race.QUICK, "k": 11})


def test_crossing_times_one_preset_alone_and_continues_in_a_second_sitting(tmp_path):
    """benchmarks.crossing at toy size: kvae alone on fashion-mlp for two epochs, then a second sitting on the folder.

    The second sitting reads the record and adds no epoch (max_epochs is reached):
    how a worker resumes its training is the race's, tested above.
    """
    from benchmarks import crossing, vamp_race

    settings = {**{k: v for k, v in vamp_race.QUICK.items() if k not in ("probe", "max_minutes")},
                "overrides": {}, "max_epochs": 2}
    first = crossing.run("fashion-mlp", settings, str(tmp_path), lambda msg: None)
    curve = first["curves"]["kvae"]
    assert first["stopped"] == "max_epochs (2)" and first["sittings"] == 1 and [p["epoch"] for p in curve] == [1, 2]
    assert "prior" not in first["recipe"] and first["recipe"]["objective"] == "iwae"  # the preset: N(0, I), IWAE
    assert 0 < curve[0]["clock_s"] < curve[1]["clock_s"] and curve[1]["loss"] < curve[0]["loss"]
    assert 300 < curve[0]["nll"] < 800 and first["crossed"]["kvae"] == {"100000": 1, "50000": 1}
    assert not list((tmp_path / "weights").iterdir())  # dumps are removed once recorded
    assert json.loads((tmp_path / crossing.RECORD).read_text())["curves"] == first["curves"]

    again = crossing.run("fashion-mlp", settings, str(tmp_path), lambda msg: None)
    assert again["sittings"] == 2 and again["curves"] == first["curves"] and again["crossed"] == first["crossed"]
    assert again["wall_s"] > first["wall_s"]
    with pytest.raises(ValueError, match="other settings"):
        crossing.run("fashion-mlp", {**settings, "k": 11}, str(tmp_path), lambda msg: None)
    with pytest.raises(ValueError, match="another preset"):
        crossing.run("fashion-vamp", settings, str(tmp_path), lambda msg: None)
    (tmp_path / crossing.RECORD).unlink()  # training left without its record: not counted, refused by name
    with pytest.raises(ValueError, match=r"holds a run directory \(run\) but no record \(crossing.json\)"):
        crossing.run("fashion-mlp", settings, str(tmp_path), lambda msg: None)


def test_keras_example_trains_on_the_kvae_pipeline(splits):
    import keras

    from benchmarks import keras_example
    from kvae.data import pipeline

    x = pipeline.binarize_once(splits.x_train[:1000])

    def negative_elbo(model):
        """Computed here in NumPy, at the posterior means (no sampling noise): BCE from logits + KL to N(0, I)."""
        z_mean, z_log_var, _ = (np.asarray(t, np.float64) for t in model.encoder(x))
        logits = np.asarray(model.decoder(z_mean.astype(np.float32)), np.float64)
        bce = (np.logaddexp(0.0, logits) - x * logits).reshape(len(x), -1).sum(axis=1)
        kl = -0.5 * (1 + z_log_var - z_mean**2 - np.exp(z_log_var)).sum(axis=1)
        return float((bce + kl).mean())

    keras.utils.set_random_seed(0)
    model = keras_example.build("mlp", 50)
    before = negative_elbo(model)
    history = model.fit(pipeline.train_dataset(splits.x_train[:1000], 100, True, seed=0), epochs=1, verbose=0).history
    # Its train_step reports the loss it minimizes, reconstruction + KL, term by term...
    assert history["loss"][0] == pytest.approx(history["reconstruction_loss"][0] + history["kl_loss"][0], rel=1e-5)
    assert history["kl_loss"][0] > 0 and history["reconstruction_loss"][0] > 100
    # ...and its 10 steps of Adam lowered it.
    assert negative_elbo(model) < before - 30, (before, negative_elbo(model))


def test_worker_protocol_times_epochs_in_turn(tmp_path):
    from benchmarks import harness

    spec = {"kind": "torch", "architecture": "mlp", "latent_dim": 4, "batch_size": 100, "train_limit": 300, "seed": 0}
    workers = harness.start_all({"a": spec, "b": {**spec, "threads": 1}}, str(tmp_path), timeout=120)
    try:
        reports = harness.alternate(workers, warmup=1, rounds=2, progress=lambda msg: None)
    finally:
        harness.close_all(workers)
    # One warm-up epoch (0), then one epoch per round from each worker, each with its own thread setting.
    assert [[r["epoch"] for r in reports[n]] for n in ("a", "b")] == [[1, 2], [1, 2]]
    assert [r["round"] for r in reports["a"]] == [0, 1] and [r["threads"] for r in reports["b"]] == [1, 1]
    assert all(r["samples"] == 300 and 0 < r["train_s"] <= r["epoch_s"] for rs in reports.values() for r in rs)
    # The same seed and data: both train the same model (threads change only the summation order), and it learns.
    for ra, rb in zip(reports["a"], reports["b"]):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-3)
    assert reports["a"][1]["loss"] < reports["a"][0]["loss"]
    # The summary is computed from those reports: samples/s per epoch, and per-round ratios.
    summary = harness.throughput_summary(reports)
    rates = {n: [r["samples"] / r["train_s"] for r in reports[n]] for n in ("a", "b")}
    assert summary["a"]["samples_per_s_all"] == pytest.approx(rates["a"])
    assert summary["b"]["samples_per_s"] == pytest.approx(sum(rates["b"]) / 2)  # the median of two
    assert summary["a"]["ratio_to"]["b"]["all"] == pytest.approx([ra / rb for ra, rb in zip(rates["a"], rates["b"])])
    assert summary["b"]["ratio_to"]["a"]["all"] == pytest.approx([rb / ra for ra, rb in zip(rates["a"], rates["b"])])
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
    assert "binarized once with a fixed seed" in text  # results from before the published draw say so
    json.dumps(results)


def test_a_run_of_some_parts_keeps_the_others_from_results_json(tmp_path):
    from benchmarks import report, run

    path = tmp_path / "results.json"
    earlier = {"date": "2026-01-01T00:00:00", "machine": {"commit": "abc"}, "peak": [{"gflops": 100.0}],
               "inference": {"results": {}}, "vamp_race": {"old": True}, "quality": {"old": True}}
    path.write_text(json.dumps(earlier))
    results = {"date": "2026-02-02T00:00:00", "quality": {"new": True}}
    run.carry_over(results, str(path), {"quality"})
    assert results["quality"] == {"new": True} and results["vamp_race"] == {"old": True}
    assert results["carried"] == {key: {"date": "2026-01-01T00:00:00", "commit": "abc", "peak_gflops": 100.0}
                                  for key in ("inference", "vamp_race")}
    later = {"date": "2026-03-03T00:00:00", "machine": {"commit": "def"}, "peak": [], **results}
    path.write_text(json.dumps(later))
    again = {}
    run.carry_over(again, str(path), {"vamp-race"})
    assert again["carried"]["inference"]["commit"] == "abc" and again["carried"]["quality"]["commit"] == "def"
    assert "vamp_race" not in again
    assert report._carried(again["carried"], "inference")[0].startswith("*The next section comes from the run of 2026-01-01")
