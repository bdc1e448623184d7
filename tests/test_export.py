"""export/: encoder and decoder as SavedModel and ONNX, proven equal to Keras.

Each fixture run is exported once per module (`exported`); the tests then
read the published folder the way serving would, without the exporter's help.
"""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kvae_export import ExportError, export_run, export_vae

TOLERANCE = 1e-5
RUNS = {"bernoulli": "tiny_run", "gaussian": "tiny_gaussian_conv_run"}
OUTPUTS = {
    "bernoulli": {"encoder": ["z_mean", "z_log_var"], "decoder": ["x_mean", "x_logits"]},
    "gaussian": {"encoder": ["z_mean", "z_log_var"], "decoder": ["x_mean"]},
}
INPUTS = {"encoder": "x", "decoder": "z"}
MANIFEST_KEYS = {
    "format_version", "kvae_version", "latent_dim", "input_shape", "likelihood", "prior", "observation_log_var",
    "value_range", "preprocessing", "models", "files", "training_config", "test_metrics",
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(RUNS))
def exported(request, tmp_path_factory):
    """(likelihood, out, ExportResult, run_dir, model) for each fixture run, exported once."""
    run_dir, result = request.getfixturevalue(RUNS[request.param])
    out = tmp_path_factory.mktemp(f"export_{request.param}") / "artifacts"
    return request.param, str(out), export_run(run_dir, out), str(run_dir), result.model


@pytest.fixture(scope="module")
def check_images(splits):
    return splits.x_test[:16].astype(np.float32) / 255.0


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _onnx_session(out, name):
    import onnxruntime as ort

    return ort.InferenceSession(os.path.join(out, "onnx", name, "1", "model.onnx"), providers=["CPUExecutionProvider"])


def _siblings(out):
    """Entries next to `out` other than `out` itself (temporary or old folders left behind)."""
    parent, name = os.path.split(out)
    return sorted(n for n in os.listdir(parent) if n != name)


def _previous_export(tmp_path):
    """An existing OUT holding one marker file."""
    out = tmp_path / "artifacts"
    out.mkdir()
    (out / "marker.txt").write_text("previous export")
    return str(out)


# Layout and manifest


def test_layout_and_manifest(exported):
    likelihood, out, result, run_dir, model = exported
    import kvae

    manifest = _read_json(os.path.join(out, "manifest.json"))
    assert manifest == result.manifest
    assert set(manifest) == MANIFEST_KEYS
    assert manifest["format_version"] == 2
    assert manifest["prior"] == {"type": "normal"}
    assert manifest["kvae_version"] == kvae.__version__
    assert manifest["latent_dim"] == model.latent_dim
    assert manifest["input_shape"] == [28, 28, 1]
    if manifest["likelihood"] == "gaussian":
        assert manifest["observation_log_var"] == pytest.approx(float(model.log_var))
    else:
        assert manifest["observation_log_var"] is None
    assert manifest["likelihood"] == likelihood
    assert manifest["value_range"] == [0.0, 1.0]
    assert "255" in manifest["preprocessing"]
    assert "numpy.random.seed(777)" in manifest["preprocessing"] and "rows 50000..59999" in manifest["preprocessing"]
    assert manifest["training_config"] == _read_json(os.path.join(run_dir, "config.json"))
    assert manifest["test_metrics"] == _read_json(os.path.join(run_dir, "test_metrics.json"))

    image, code = [-1, 28, 28, 1], [-1, model.latent_dim]
    shapes = {"x": image, "x_mean": image, "x_logits": image, "z": code, "z_mean": code, "z_log_var": code}
    assert set(manifest["models"]) == {"encoder", "decoder"}
    for name, entry in manifest["models"].items():
        assert entry["onnx"] == f"onnx/{name}/1/model.onnx"
        assert entry["saved_model"] == f"saved_model/{name}/1"
        assert os.path.isfile(os.path.join(out, entry["onnx"]))
        assert os.path.isfile(os.path.join(out, entry["saved_model"], "saved_model.pb"))
        assert os.path.isfile(os.path.join(out, "onnx", name, "config.pbtxt"))
        names = [INPUTS[name]] + OUTPUTS[likelihood][name]
        assert [t["name"] for t in entry["inputs"] + entry["outputs"]] == names
        for t in entry["inputs"] + entry["outputs"]:
            assert t == {"name": t["name"], "datatype": "FP32", "shape": shapes[t["name"]]}
    assert _siblings(out) == []  # no temporary folder left


def test_manifest_hashes_every_file(exported):
    _, out, _, _, _ = exported
    files = _read_json(os.path.join(out, "manifest.json"))["files"]
    on_disk = {
        os.path.relpath(os.path.join(folder, n), out).replace(os.sep, "/")
        for folder, _, names in os.walk(out)
        for n in names
    }
    assert set(files) == on_disk - {"manifest.json"}
    some = {"onnx/encoder/1/model.onnx", "saved_model/decoder/1/saved_model.pb", "onnx/decoder/config.pbtxt"}
    assert some <= set(files)
    for rel, digest in files.items():
        with open(os.path.join(out, rel), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, rel


# ONNX


def test_onnx_graph_names_batch_and_checker(exported):
    import onnx

    likelihood, out, _, _, _ = exported
    for name in ("encoder", "decoder"):
        proto = onnx.load(os.path.join(out, "onnx", name, "1", "model.onnx"))
        onnx.checker.check_model(proto, full_check=True)
        graph = proto.graph
        assert [i.name for i in graph.input] == [INPUTS[name]]
        assert [o.name for o in graph.output] == OUTPUTS[likelihood][name]
        assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {17}
        for value in [*graph.input, *graph.output]:
            dims = value.type.tensor_type.shape.dim
            assert dims[0].dim_param == "batch" and not dims[0].HasField("dim_value"), value.name
            assert all(d.HasField("dim_value") for d in dims[1:]), value.name
        values = [*graph.input, *graph.output, *graph.value_info]
        dim_params = [d.dim_param for v in values for d in v.type.tensor_type.shape.dim]
        assert not [p for p in dim_params if p.startswith("unk__")]
        visible = [v.name for v in [*graph.input, *graph.output]]
        assert not [n for n in visible if ":" in n or "Identity" in n or "keras_tensor" in n]
        assert not [n.op_type for n in graph.node if n.op_type.startswith("Random") or n.op_type == "Multinomial"]


def test_onnx_metadata_props(exported):
    import onnx

    import kvae

    likelihood, out, _, _, model = exported
    for name in ("encoder", "decoder"):
        proto = onnx.load(os.path.join(out, "onnx", name, "1", "model.onnx"))
        props = {p.key: p.value for p in proto.metadata_props}
        assert props["model"] == name
        assert int(props["latent_dim"]) == model.latent_dim
        assert json.loads(props["input_shape"]) == [28, 28, 1]
        assert props["likelihood"] == likelihood
        assert props["prior"] == "normal" and "num_components" not in props
        assert "levels" not in props  # one level: no hierarchy (format_version 2)
        assert props["kvae_version"] == kvae.__version__


@pytest.mark.parametrize("batch", [1, 7])
def test_onnx_dynamic_batch(exported, batch):
    likelihood, out, _, _, model = exported
    feeds = {
        "encoder": np.random.default_rng(0).random((batch, 28, 28, 1), dtype=np.float32),
        "decoder": np.random.default_rng(0).standard_normal((batch, model.latent_dim), dtype=np.float32),
    }
    for name, x in feeds.items():
        session = _onnx_session(out, name)
        results = session.run(None, {INPUTS[name]: x})
        expected = [model.latent_dim] if name == "encoder" else [28, 28, 1]
        assert [r.shape for r in results] == [(batch, *expected)] * len(OUTPUTS[likelihood][name])


# Triton


def test_triton_config(exported):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    likelihood, out, _, _, model = exported
    shapes = {"x": [28, 28, 1], "x_mean": [28, 28, 1], "x_logits": [28, 28, 1], "z": [model.latent_dim]}
    shapes.update(z_mean=[model.latent_dim], z_log_var=[model.latent_dim])
    for name in ("encoder", "decoder"):
        with open(os.path.join(out, "onnx", name, "config.pbtxt")) as f:
            config = text_format.Parse(f.read(), model_config_pb2.ModelConfig())
        assert config.name == name  # Triton requires the folder's name
        assert config.platform == "onnxruntime_onnx"
        assert config.max_batch_size >= 1
        assert [t.name for t in config.input] == [INPUTS[name]]
        assert [t.name for t in config.output] == OUTPUTS[likelihood][name]
        for t in [*config.input, *config.output]:
            assert t.data_type == model_config_pb2.TYPE_FP32
            assert list(t.dims) == shapes[t.name]  # without the batch dimension


# Equality with Keras


def test_saved_model_signature(exported):
    import tensorflow as tf

    likelihood, out, _, _, model = exported
    for name in ("encoder", "decoder"):
        loaded = tf.saved_model.load(os.path.join(out, "saved_model", name, "1"))
        signature = loaded.signatures["serving_default"]
        _, inputs = signature.structured_input_signature
        assert list(inputs) == [INPUTS[name]]
        assert inputs[INPUTS[name]].shape[0] is None
        assert sorted(signature.structured_outputs) == sorted(OUTPUTS[likelihood][name])


def test_backends_equal_keras(exported, splits):
    """ONNX and SavedModel vs the model's own Keras API on real test images and random latents."""
    import tensorflow as tf

    likelihood, out, result, _, model = exported
    x = splits.x_test[256:512].astype(np.float32) / 255.0  # not the images the export checked on
    z = np.random.default_rng(123).standard_normal((256, model.latent_dim), dtype=np.float32)
    z_mean, z_log_var = model.encode(x)
    expected = {"encoder": {"z_mean": z_mean, "z_log_var": z_log_var}, "decoder": {"x_mean": model.decode(z)}}
    if likelihood == "bernoulli":
        expected["decoder"]["x_logits"] = np.asarray(model.decoder(z, training=False))
    feeds = {"encoder": {"x": x}, "decoder": {"z": z}}
    for name in ("encoder", "decoder"):
        session = _onnx_session(out, name)
        onnx_out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds[name])))
        loaded = tf.saved_model.load(os.path.join(out, "saved_model", name, "1"))
        tf_out = {k: v.numpy() for k, v in loaded.signatures["serving_default"](**feeds[name]).items()}
        for output, want in expected[name].items():
            assert np.max(np.abs(onnx_out[output] - want)) <= TOLERANCE, (name, output, "onnx")
            assert np.max(np.abs(tf_out[output] - want)) <= TOLERANCE, (name, output, "saved_model")
    # What the export measured on its own check data.
    for name, backends in result.max_abs_diff.items():
        assert set(backends) == {"saved_model", "onnx"}
        for diffs in backends.values():
            assert sorted(diffs) == sorted(OUTPUTS[likelihood][name])
            assert all(0 <= d <= TOLERANCE for d in diffs.values())


# Publishing: never a half-written OUT


def test_existing_out_without_force_is_an_error(tiny_run, check_images, tmp_path):
    out = _previous_export(tmp_path)
    with pytest.raises(ExportError, match="already exists.*--force"):
        export_vae(tiny_run[1].model, out, check_images=check_images)
    assert os.listdir(out) == ["marker.txt"]
    assert _siblings(out) == []


def test_force_replaces_existing_out(tiny_run, check_images, tmp_path):
    out = _previous_export(tmp_path)
    result = export_vae(tiny_run[1].model, out, check_images=check_images, force=True, training_config={"a": 1})
    assert not os.path.exists(os.path.join(out, "marker.txt"))
    manifest = _read_json(os.path.join(out, "manifest.json"))
    assert manifest == result.manifest
    assert manifest["training_config"] == {"a": 1} and manifest["test_metrics"] is None
    assert _siblings(out) == []  # neither the temporary nor the old folder is left


def test_failed_verification_publishes_nothing(tiny_run, check_images, tmp_path, monkeypatch):
    import kvae_export.verify

    monkeypatch.setattr(kvae_export.verify, "TOLERANCE", -1.0)  # no difference can pass
    new_out = str(tmp_path / "new" / "artifacts")
    with pytest.raises(ExportError, match=r"encoder output 'z_mean' from saved_model differs from Keras by max abs"):
        export_vae(tiny_run[1].model, new_out, check_images=check_images)
    assert os.listdir(tmp_path / "new") == []  # no OUT, no temporary folder

    out = _previous_export(tmp_path)
    with pytest.raises(ExportError, match="Verification failed"):
        export_vae(tiny_run[1].model, out, check_images=check_images, force=True)
    assert os.listdir(out) == ["marker.txt"]
    assert _siblings(out) == ["new"]


def test_interrupted_export_keeps_previous_out(tiny_run, check_images, tmp_path, monkeypatch):
    import kvae_export.triton

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kvae_export.triton, "write_config", interrupt)
    out = _previous_export(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        export_vae(tiny_run[1].model, out, check_images=check_images, force=True)
    assert os.listdir(out) == ["marker.txt"]
    assert _siblings(out) == []


def test_bad_check_images(tiny_run, tmp_path):
    out = tmp_path / "artifacts"
    with pytest.raises(ExportError, match=r"check_images must have shape \(n, 28, 28, 1\)"):
        export_vae(tiny_run[1].model, out, check_images=np.zeros((4, 28, 28), np.float32))
    assert os.listdir(tmp_path) == []


# Command line


def _cli(argv):
    import argparse

    from kvae_contract.errors import run_command
    from kvae_export.cli import add_parser

    parser = argparse.ArgumentParser(prog="kvae")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_command(args.command, args.func, args)  # what `kvae` does: the handler raises, this reports


def test_cli_missing_run_dir(tmp_path, capsys):
    missing = str(tmp_path / "no-such-run")
    assert _cli(["export", missing, "--out", str(tmp_path / "artifacts")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvae export: error: ")
    assert missing in err and "model.keras" in err
    assert not os.path.exists(tmp_path / "artifacts")


def test_cli_existing_out_then_force(tiny_run, tmp_path, capsys):
    run_dir, out = str(tiny_run[0]), _previous_export(tmp_path)
    assert _cli(["export", run_dir, "--out", out]) == 2
    assert "--force" in capsys.readouterr().err
    assert os.listdir(out) == ["marker.txt"]
    assert _cli(["export", run_dir, "--out", out, "--force"]) == 0
    printed = capsys.readouterr().out
    assert out in printed and "onnx/encoder/1/model.onnx" in printed and "saved_model/decoder/1" in printed
    assert os.path.isfile(os.path.join(out, "manifest.json"))


def test_importing_the_cli_does_not_load_tensorflow():
    code = (
        "import sys, kvae_export.cli; "
        "heavy = [m for m in ('tensorflow', 'keras', 'tf2onnx', 'onnx', 'onnxruntime') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


# VampPrior: the learned prior leaves Python as two more models, prior and log_prior

VAMP_TENSORS = {
    "prior": (["eps", "component"], ["z"]),
    "log_prior": (["z"], ["log_pz"]),
}


@pytest.fixture(scope="module")
def vamp_exported(tiny_vamp_run, tmp_path_factory):
    """(out, ExportResult, model) of conftest's tiny VampPrior run (latent 4, K = 10), exported once."""
    run_dir, result = tiny_vamp_run
    out = tmp_path_factory.mktemp("export_vamp") / "artifacts"
    return str(out), export_run(run_dir, out), result.model


def _vamp_components(model):
    return tuple(np.asarray(t) for t in model.prior_components())  # (K, latent_dim) each, float32


def test_vamp_manifest_layout_and_hashes(vamp_exported):
    out, result, model = vamp_exported
    manifest = _read_json(os.path.join(out, "manifest.json"))
    assert manifest == result.manifest
    assert set(manifest) == MANIFEST_KEYS
    assert manifest["format_version"] == 2
    assert manifest["prior"] == {"type": "vamp", "num_components": 10}
    assert list(manifest["models"]) == ["encoder", "decoder", "prior", "log_prior"]
    fp32 = lambda name, shape: {"name": name, "datatype": "FP32", "shape": shape}  # noqa: E731
    assert manifest["models"]["prior"]["inputs"] == [fp32("eps", [-1, 4]), fp32("component", [-1, 10])]
    assert manifest["models"]["prior"]["outputs"] == [fp32("z", [-1, 4])]
    assert manifest["models"]["log_prior"]["inputs"] == [fp32("z", [-1, 4])]
    assert manifest["models"]["log_prior"]["outputs"] == [fp32("log_pz", [-1])]
    for name in VAMP_TENSORS:
        entry = manifest["models"][name]
        assert entry["onnx"] == f"onnx/{name}/1/model.onnx" and entry["saved_model"] == f"saved_model/{name}/1"
        for rel in (entry["onnx"], f"{entry['saved_model']}/saved_model.pb", f"onnx/{name}/config.pbtxt"):
            with open(os.path.join(out, rel), "rb") as f:
                assert manifest["files"][rel] == hashlib.sha256(f.read()).hexdigest(), rel
    assert "rng.integers(0, num_components, size=n)" in manifest["preprocessing"]
    assert _siblings(out) == []


def test_vamp_graphs_have_no_random_op_and_a_named_batch(vamp_exported):
    import onnx

    out, _, _ = vamp_exported
    for name, (inputs, outputs) in VAMP_TENSORS.items():
        proto = onnx.load(os.path.join(out, "onnx", name, "1", "model.onnx"))
        onnx.checker.check_model(proto, full_check=True)
        graph = proto.graph
        assert [i.name for i in graph.input] == inputs and [o.name for o in graph.output] == outputs
        for value in [*graph.input, *graph.output]:
            assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name
        assert not [n.op_type for n in graph.node if n.op_type.startswith("Random") or n.op_type == "Multinomial"]
        props = {p.key: p.value for p in proto.metadata_props}
        assert (props["model"], props["prior"], props["num_components"]) == (name, "vamp", "10")


def test_vamp_triton_configs(vamp_exported):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    out, _, _ = vamp_exported
    configs = {}
    for name in VAMP_TENSORS:
        with open(os.path.join(out, "onnx", name, "config.pbtxt")) as f:
            configs[name] = text_format.Parse(f.read(), model_config_pb2.ModelConfig())
        assert configs[name].name == name and configs[name].platform == "onnxruntime_onnx"
    assert [(t.name, list(t.dims)) for t in configs["prior"].input] == [("eps", [4]), ("component", [10])]
    assert [(t.name, list(t.dims)) for t in configs["prior"].output] == [("z", [4])]
    (log_pz,) = configs["log_prior"].output
    # [batch] alone: Triton wants dims [1] and an empty reshape (the model sees [batch]).
    assert (log_pz.name, list(log_pz.dims), log_pz.HasField("reshape"), list(log_pz.reshape.shape)) == (
        "log_pz", [1], True, []
    )


def test_vamp_prior_models_equal_keras(vamp_exported):
    """prior and log_prior in onnxruntime and the reloaded SavedModel vs Keras's components, on fresh inputs."""
    import tensorflow as tf

    from kvae.priors import log_mixture_numpy

    out, result, model = vamp_exported
    means, log_vars = _vamp_components(model)
    assert np.ptp(means, axis=0).min() > 1e-3  # trained from 10 different images: distinct components
    rng = np.random.default_rng(11)
    eps = 0.8 * rng.standard_normal((64, 4), dtype=np.float32)  # temperature 0.8
    component = rng.integers(0, 10, size=64)
    one_hot = np.eye(10, dtype=np.float32)[component]
    z_prior = model.sample_prior(64, seed=5, temperature=1.0)  # z drawn from the prior, in Keras
    z_far = 3.0 * rng.standard_normal((64, 4), dtype=np.float32)
    z = np.concatenate([z_prior, z_far])
    want = {
        "prior": {"z": means[component] + np.exp(0.5 * log_vars[component]) * eps},  # VAE.sample_prior's formula
        "log_prior": {"log_pz": log_mixture_numpy(z, means, log_vars)},  # float64, what kvae evaluate uses
    }
    feeds = {"prior": {"eps": eps, "component": one_hot}, "log_prior": {"z": z}}
    for name in VAMP_TENSORS:
        session = _onnx_session(out, name)
        onnx_out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds[name])))
        loaded = tf.saved_model.load(os.path.join(out, "saved_model", name, "1"))
        tf_out = {k: v.numpy() for k, v in loaded.signatures["serving_default"](**feeds[name]).items()}
        for output, expected in want[name].items():
            assert onnx_out[output].shape == expected.shape and onnx_out[output].dtype == np.float32
            assert np.max(np.abs(onnx_out[output] - expected)) <= TOLERANCE, (name, output, "onnx")
            assert np.max(np.abs(tf_out[output] - expected)) <= TOLERANCE, (name, output, "saved_model")
    # Keras's own float32 log p(z) agrees too on this small model.
    np.testing.assert_allclose(np.asarray(model.log_prior(z)), want["log_prior"]["log_pz"], atol=TOLERANCE, rtol=0)
    for name in VAMP_TENSORS:  # what the export measured on its own check data
        assert set(result.max_abs_diff[name]) == {"saved_model", "onnx"}
        assert all(0 <= d <= TOLERANCE for diffs in result.max_abs_diff[name].values() for d in diffs.values())


@pytest.mark.parametrize(
    "reference, message",
    [("prior_reference", "prior output 'z' from saved_model"), ("log_prior_reference", "log_prior output 'log_pz'")],
)
def test_failed_prior_verification_publishes_nothing(tiny_vamp_run, check_images, tmp_path, monkeypatch, reference,
                                                     message):
    import kvae_export.verify

    honest = getattr(kvae_export.verify, reference)
    off = lambda *args: {k: v + 1e-3 for k, v in honest(*args).items()}  # noqa: E731  a wrong reference
    monkeypatch.setattr(kvae_export.verify, reference, off)
    out = tmp_path / "new" / "artifacts"
    with pytest.raises(ExportError, match=message + ".*nothing was published"):
        export_vae(tiny_vamp_run[1].model, out, check_images=check_images)
    assert os.listdir(tmp_path / "new") == []


def test_large_logits_are_held_to_a_bound_relative_to_their_size(tiny_run, check_images, tmp_path):
    """A decoder sure of its pixels (logits far from 0) exports: float32 holds those to ~1e-7 of their size."""
    import keras
    import onnxruntime as ort

    import kvae_export.verify

    model = keras.saving.load_model(os.path.join(tiny_run[0], "model.keras"), compile=False)
    output = model.decoder.get_layer("output")
    kernel, bias = output.get_weights()
    output.set_weights([kernel, bias - 1000.0])  # every pixel sure to be off: logits near -1000
    result = export_vae(model, tmp_path / "out", check_images=check_images)
    z = kvae_export.verify.check_latents(model.latent_dim)
    session = ort.InferenceSession(str(tmp_path / "out" / "onnx" / "decoder" / "1" / "model.onnx"))
    logits = session.run(["x_logits"], {"z": z})[0]
    want = np.asarray(model.decoder(z))
    assert np.abs(want).min() > 900
    # What an absolute bound of 1e-5 would have refused, the relative one accepts, and reports.
    assert np.abs(logits - want).max() > TOLERANCE
    assert (np.abs(logits - want) / np.maximum(1.0, np.abs(want))).max() <= TOLERANCE
    assert result.max_abs_diff["decoder"]["onnx"]["x_logits"] <= TOLERANCE
