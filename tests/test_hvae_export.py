"""The two-level HVAE leaves Python: format_version 3 artifacts, proven equal to Keras, served and evaluated outside.

A tiny HVAE (kvae.hvae.HVAE, levels z1: 4, z2: 3, MLP 16-16) is trained for two
epochs on 1,000 binarized Fashion-MNIST images under each prior over z2
(N(0, I), and a VampPrior of K = 5 pseudo-inputs started from training images),
then exported once per module. The tests read the published folder the way
serving and an outside script would: manifest and graphs, the four models
against the model's own Keras API, the runtime's sampling, encoding and
log-density, `kvae generate`, Open Inference Protocol infer on every model,
the outside NLL script against kvae's evaluate, and clear errors for damaged
version 3 manifests.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kvae_contract import artifacts as contract

TOLERANCE = 1e-5  # export.verify's: absolute, and relative to max(1, |value|) for log-densities
LATENT_DIMS, K = (4, 3), 5
D = sum(LATENT_DIMS)
SCRIPT = Path(__file__).parents[1] / "examples" / "onnx_iwae_nll.py"
BLOCKER = (  # runs a script with tensorflow, keras, kvae and the exporter unimportable
    "import sys, runpy\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('tensorflow', 'keras', 'kvae', 'tf2onnx', 'export', 'kvae_export'):\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)
NLL_K, NLL_IMAGES = 200, 60  # the agreement does not depend on them (the script draws evaluate's noise)
AGREEMENT = 1e-4  # nats per image: the same noise (chunk_size=NLL_K), so only float rounding differs (measured 4e-6)


def _train(prior, splits):
    from kvae import architectures
    from kvae.hvae import HVAE

    x = splits.x_train[:1000].astype(np.float32) / 255.0
    x = (np.random.default_rng(0).random(x.shape) < x).astype(np.float32)  # binarized, as Bernoulli models train
    parts = architectures.hierarchical_mlp((28, 28, 1), LATENT_DIMS, hidden=(16, 16), log_var_bounds=(-6.0, 2.0))
    model = HVAE(**parts, prior=prior, num_pseudo_inputs=K, seed=1)
    if prior == "vamp":
        model.pseudo_inputs.assign(x[:K])  # distinct components, as kvae.train starts them
    model.compile(optimizer="adam")
    model.fit(x, epochs=2, batch_size=100, verbose=0)
    return model


@pytest.fixture(scope="module", params=["normal", "vamp"])
def hvae(request, splits, tmp_path_factory):
    """(prior, model, out, ExportResult) for each prior over z2, exported once."""
    from kvae_export import export_vae

    model = _train(request.param, splits)
    out = tmp_path_factory.mktemp(f"hvae_{request.param}") / "artifacts"
    result = export_vae(model, out, check_images=splits.x_test[:64].astype(np.float32) / 255.0)
    return request.param, model, str(out), result


@pytest.fixture(scope="module")
def runtime(hvae):
    from kvae_serving.runtime import Runtime

    return Runtime(hvae[2])


@pytest.fixture(scope="module")
def fresh_images(splits):
    return splits.x_test[256:288].astype(np.float32) / 255.0  # not the images the export checked on


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _onnx_run(out, name, feed):
    import onnxruntime as ort

    session = ort.InferenceSession(os.path.join(out, contract.onnx_path(name)), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


def _saved_model_run(out, name, feed):
    import tensorflow as tf

    loaded = tf.saved_model.load(os.path.join(out, contract.saved_model_path(name)))
    return {k: v.numpy() for k, v in loaded.signatures["serving_default"](**feed).items()}


def _one_hot(ids):
    return contract.one_hot(ids, K)


# The manifest, the graphs, the Triton configs


def test_manifest_is_format_version_3(hvae):
    import kvae
    from kvae_export.cli import summary

    prior, model, out, result = hvae
    manifest = _read_json(os.path.join(out, contract.MANIFEST))
    assert manifest == result.manifest
    assert manifest["format_version"] == contract.HIERARCHICAL_FORMAT_VERSION == 3
    assert list(manifest)[:4] == ["format_version", "kvae_version", "latent_dim", contract.HIERARCHY]
    assert manifest["latent_dim"] == D and "num_classes" not in manifest
    levels = [{"name": "z1", "latent_dim": 4}, {"name": "z2", "latent_dim": 3}]
    assert manifest[contract.HIERARCHY] == {"levels": levels}
    assert manifest["prior"] == contract.prior_entry(K if prior == "vamp" else None)
    assert manifest["kvae_version"] == kvae.__version__ and manifest["likelihood"] == "bernoulli"
    assert "Hierarchical model (format_version 3" in manifest["preprocessing"]
    tensors = contract.hierarchical_model_tensors((28, 28, 1), LATENT_DIMS, "bernoulli", K if prior == "vamp" else None)
    assert list(manifest["models"]) == list(contract.HIERARCHICAL_MODELS)  # all four, with either prior
    for name, entry in manifest["models"].items():
        paths = {"onnx": contract.onnx_path(name), "saved_model": contract.saved_model_path(name)}
        assert entry == {**paths, **tensors[name]}
        for rel in (entry["onnx"], f"{entry['saved_model']}/saved_model.pb", contract.triton_config_path(name)):
            assert rel in manifest["files"] and os.path.isfile(os.path.join(out, rel)), rel
    fp32 = lambda name, shape: {"name": name, "datatype": "FP32", "shape": shape}  # noqa: E731
    assert manifest["models"]["encoder"]["inputs"] == [fp32("x", [-1, 28, 28, 1]), fp32("eps", [-1, D])]
    assert manifest["models"]["encoder"]["outputs"] == [fp32("z", [-1, D]), fp32("log_qz", [-1])]
    assert [t["name"] for t in manifest["models"]["prior"]["inputs"]] == (
        ["eps", "component"] if prior == "vamp" else ["eps"]
    )
    assert "log_pz, log_qz and x_logits relative to their size" in summary(result)


def test_graphs_names_batch_metadata_and_no_random_op(hvae):
    import onnx

    prior, model, out, _ = hvae
    manifest = _read_json(os.path.join(out, contract.MANIFEST))
    for name, entry in manifest["models"].items():
        proto = onnx.load(os.path.join(out, entry["onnx"]))
        onnx.checker.check_model(proto, full_check=True)
        graph = proto.graph
        assert [i.name for i in graph.input] == contract.names(entry, "inputs")
        assert [o.name for o in graph.output] == contract.names(entry, "outputs")
        for value in [*graph.input, *graph.output]:
            assert value.type.tensor_type.shape.dim[0].dim_param == "batch", (name, value.name)
        assert not [n.op_type for n in graph.node if n.op_type.startswith("Random") or n.op_type == "Multinomial"]
        props = {p.key: p.value for p in proto.metadata_props}
        assert props["model"] == name and int(props["latent_dim"]) == D and props["prior"] == prior
        assert json.loads(props["levels"]) == manifest[contract.HIERARCHY]["levels"]
        assert json.loads(props["input_shape"]) == [28, 28, 1] and props["likelihood"] == "bernoulli"
        assert props.get("num_components") == (str(K) if prior == "vamp" else None)


def test_triton_configs(hvae):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    prior, _, out, _ = hvae
    dims = {}
    for name in contract.HIERARCHICAL_MODELS:
        with open(os.path.join(out, contract.triton_config_path(name))) as f:
            config = text_format.Parse(f.read(), model_config_pb2.ModelConfig())
        assert config.name == name and config.platform == "onnxruntime_onnx" and config.max_batch_size >= 1
        for t in [*config.input, *config.output]:
            assert t.data_type == model_config_pb2.TYPE_FP32
            dims[name, t.name] = (list(t.dims), list(t.reshape.shape) if t.HasField("reshape") else None)
    assert dims["encoder", "x"] == ([28, 28, 1], None) and dims["encoder", "eps"] == ([D], None)
    assert dims["encoder", "z"] == ([D], None) and dims["prior", "z"] == ([D], None)
    # Batches of scalars: dims [1] with an empty reshape, so that the model sees [batch].
    assert dims["encoder", "log_qz"] == ([1], []) and dims["log_prior", "log_pz"] == ([1], [])
    assert (("prior", "component") in dims) == (prior == "vamp")


# The four models against the model's own Keras API


def test_backends_equal_keras(hvae, fresh_images):
    """onnxruntime and the reloaded SavedModel vs the HVAE's Keras API on fresh images, noise and codes."""
    prior, model, out, result = hvae
    x, n = fresh_images, len(fresh_images)
    rng = np.random.default_rng(7)
    eps = rng.standard_normal((n, D), dtype=np.float32)
    z = np.concatenate([model.sample_prior(n, seed=3), 2 * rng.standard_normal((n, D), dtype=np.float32)])
    ids = rng.integers(0, K, size=2 * n)
    prior_feed = {"eps": 0.8 * rng.standard_normal((2 * n, D), dtype=np.float32)}
    if prior == "vamp":
        prior_feed["component"] = _one_hot(ids)
    feeds = {
        "encoder": {"x": np.concatenate([x, x]), "eps": np.concatenate([np.zeros_like(eps), eps])},
        "decoder": {"z": z},
        "prior": prior_feed,
        "log_prior": {"z": z},
    }
    log_prior = np.asarray(model.log_prior(z), np.float64)  # Keras, float32
    for backend in (_onnx_run, _saved_model_run):
        got = {name: backend(out, name, feed) for name, feed in feeds.items()}
        # eps = 0: the deterministic code, HVAE.encode's z_mean.
        np.testing.assert_allclose(got["encoder"]["z"][:n], model.encode(x)[0], atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(got["decoder"]["x_mean"], model.decode(z), atol=TOLERANCE, rtol=0)
        expected_z = model.generate_codes(prior_feed["eps"], ids if prior == "vamp" else None)
        np.testing.assert_allclose(got["prior"]["z"], expected_z, atol=TOLERANCE, rtol=0)
        scale = np.maximum(1.0, np.abs(log_prior))
        assert np.max(np.abs(got["log_prior"]["log_pz"] - log_prior) / scale) <= 2 * TOLERANCE  # Keras is float32 too
        # With noise: the draws and densities of kvae's evaluation (HVAE.importance_terms), image by image.
        z_drawn, log_qz = got["encoder"]["z"][n:], got["encoder"]["log_qz"][n:].astype(np.float64)
        log_px, ratios = model.importance_terms(x, None, eps[:, None], model.numpy_log_prior())  # (n, 1) each
        logits = backend(out, "decoder", {"z": z_drawn})["x_logits"].reshape(n, -1).astype(np.float64)
        log_px_backend = (x.reshape(n, -1) * logits - np.logaddexp(0.0, logits)).sum(-1)  # Bernoulli
        np.testing.assert_allclose(log_px_backend, log_px[:, 0], rtol=1e-5)
        log_pz = backend(out, "log_prior", {"z": z_drawn})["log_pz"].astype(np.float64)
        np.testing.assert_allclose(log_pz - log_qz, sum(ratios.values())[:, 0], atol=1e-4, rtol=0)
    for name, backends in result.max_abs_diff.items():  # what the export measured on its own check data
        assert set(backends) == {"saved_model", "onnx"}
        assert all(0 <= d <= TOLERANCE for diffs in backends.values() for d in diffs.values()), (name, backends)
    assert set(result.max_abs_diff["encoder"]["onnx"]) == {"z", "log_qz"}


def test_the_export_checks_the_decoder_on_the_codes_it_is_fed(hvae, fresh_images):
    """Draws from the prior and the images' deterministic codes, not flat N(0, I) codes (off p(z1|z2))."""
    from kvae_export import verify

    _, model, _, _ = hvae
    x = fresh_images
    inputs, expected = verify.hierarchical_checks(model, x, verify.check_latents(D))[contract.DECODER]
    codes = np.concatenate([model.sample_prior(verify.NUM_CHECK_LATENTS, seed=verify.CHECK_SEED), model.encode(x)[0]])
    np.testing.assert_array_equal(inputs["z"], codes)
    np.testing.assert_allclose(expected["x_mean"], model.decode(codes), atol=1e-6, rtol=0)


def test_failed_verification_publishes_nothing(hvae, splits, tmp_path, monkeypatch):
    import kvae_export.verify
    from kvae_export import ExportError, export_vae

    _, model, _, _ = hvae
    honest = kvae_export.verify.hierarchical_log_prior_reference
    monkeypatch.setattr(  # a wrong reference for the last model checked: every earlier check passed
        kvae_export.verify, "hierarchical_log_prior_reference",
        lambda *args: {k: v + 1e-2 * np.maximum(1.0, np.abs(v)) for k, v in honest(*args).items()},
    )
    out = tmp_path / "new" / "artifacts"
    with pytest.raises(ExportError, match="log_prior output 'log_pz' from saved_model.*nothing was published"):
        export_vae(model, out, check_images=splits.x_test[:8].astype(np.float32) / 255.0)
    assert os.listdir(tmp_path / "new") == []


# Serving: the runtime, kvae generate, Open Inference Protocol


def test_runtime_samples_like_the_hvae(hvae, runtime):
    prior, model, _, _ = hvae
    assert runtime.hierarchical and runtime.latent_dims == LATENT_DIMS and runtime.latent_dim == D
    assert (runtime.prior, runtime.num_components) == (prior, K if prior == "vamp" else None)
    assert set(runtime.sessions) == set(contract.HIERARCHICAL_MODELS)
    for seed, temperature in [(0, 1.0), (3, 0.7), (12, 1.3), (5, 0.0)]:
        np.testing.assert_allclose(
            runtime.sample(16, seed, temperature), model.sample(16, seed, temperature), atol=1e-5, rtol=0
        )
        np.testing.assert_allclose(
            runtime.sample_z(16, seed, temperature), model.sample_prior(16, seed, temperature), atol=1e-5, rtol=0
        )
    np.testing.assert_array_equal(runtime.sample(8, seed=4), runtime.sample(8, seed=4))  # same seed, same images
    assert not np.allclose(runtime.sample(8, seed=4), runtime.sample(8, seed=5))


def test_runtime_encode_reconstruct_interpolate_log_prior(hvae, runtime, fresh_images):
    from kvae_serving.errors import InputError

    _, model, _, _ = hvae
    x = fresh_images
    z, z_log_var = runtime.encode(x)
    assert z.shape == (len(x), D) and z_log_var is None  # the deterministic code; no single variance to return
    np.testing.assert_allclose(z, model.encode(x)[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(runtime.reconstruct(x), model.reconstruct(x), atol=1e-5, rtol=0)
    path = runtime.interpolate(x[0], x[1], steps=4)
    np.testing.assert_allclose(path[[0, -1]], runtime.decode(z[:2]), atol=1e-6, rtol=0)
    codes = np.concatenate([runtime.sample_z(32, seed=2), runtime.encode(x)[0]])
    log_pz = runtime.log_prior(codes)
    assert log_pz.shape == (len(codes),) and log_pz.dtype == np.float32
    reference = np.asarray(model.log_prior(codes), np.float64)
    assert np.max(np.abs(log_pz - reference) / np.maximum(1.0, np.abs(reference))) <= 2 * TOLERANCE
    with pytest.raises(InputError, match="not conditional"):
        runtime.encode(x, labels=1)
    with pytest.raises(InputError, match=rf"input 'z' expects shape \[-1, {D}\]"):
        runtime.log_prior(np.zeros((2, D - 1), np.float32))


def test_generate_cli(hvae, runtime, tmp_path):
    from PIL import Image

    from kvae_serving import images
    from kvae_serving.cli import main as serving_main

    out = tmp_path / "hvae.png"
    args = ["generate", hvae[2], "--n", "9", "--seed", "7", "--temperature", "0.8", "--out", str(out)]
    assert serving_main(args) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), images.grid(runtime.sample(9, 7, 0.8))[..., 0])


def test_open_inference_protocol_on_every_model(hvae, runtime, fresh_images):
    """What `kvae serve` answers (serving.app.App, without sockets): infer on each of the four models, and /v1."""
    from kvae_serving.app import App

    app = App(runtime)
    rng = np.random.default_rng(1)
    x = fresh_images[:3]
    eps = rng.standard_normal((3, D), dtype=np.float32)
    feeds = {
        "encoder": {"x": x, "eps": eps},
        "decoder": {"z": eps},
        "prior": {"eps": eps, **({"component": _one_hot([0, 4, 2])} if hvae[0] == "vamp" else {})},
        "log_prior": {"z": eps},
    }
    json_headers = {"Content-Type": "application/json"}
    for name, feed in feeds.items():
        status, _, body = app.handle("GET", f"/v2/models/{name}", "", {}, b"")
        metadata = json.loads(body)
        assert status == 200 and metadata["inputs"] == runtime.manifest["models"][name]["inputs"]
        request = {"inputs": [
            {"name": k, "shape": list(v.shape), "datatype": "FP32", "data": v.ravel().tolist()} for k, v in feed.items()
        ]}
        status, _, body = app.handle("POST", f"/v2/models/{name}/infer", "", json_headers, json.dumps(request).encode())
        assert status == 200, body
        answer = json.loads(body)["outputs"]
        outputs = {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in answer}
        expected = runtime.run(name, feed)
        assert list(outputs) == list(expected)
        for output, want in expected.items():
            np.testing.assert_array_equal(outputs[output], want)
    body = json.dumps({"n": 4, "seed": 6, "format": "json"}).encode()
    status, _, answer = app.handle("POST", "/v1/generate", "", json_headers, body)
    assert status == 200
    np.testing.assert_allclose(np.asarray(json.loads(answer)["images"]), runtime.sample(4, 6), atol=1e-6)
    body = json.dumps({"images": x.tolist(), "format": "json"}).encode()
    status, _, answer = app.handle("POST", "/v1/reconstruct", "", json_headers, body)
    assert status == 200
    np.testing.assert_allclose(np.asarray(json.loads(answer)["images"]), runtime.reconstruct(x), atol=1e-6)


# The outside NLL script: onnxruntime and NumPy only


def test_outside_script_matches_kvae_evaluate(hvae, splits):
    from kvae.data.protocol import evaluation_views
    from kvae.evaluate import evaluate

    _, model, out, _ = hvae
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(SCRIPT), out, "--k", str(NLL_K), "--limit", str(NLL_IMAGES)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    outside = json.loads(proc.stdout.strip().splitlines()[-1])
    _, x_test = evaluation_views(splits.x_val, splits.x_test, True)
    inside = evaluate(model, x_test[:NLL_IMAGES], k=NLL_K, seed=0, chunk_size=NLL_K, verbose=0)
    assert outside["num_examples"] == NLL_IMAGES and outside["k"] == NLL_K
    assert abs(outside["nll"] - inside["nll"]) < AGREEMENT, (outside, inside["nll"])


# Damaged version 3 manifests: clear errors that say to re-export


def _without_saved_models(out, tmp_path):
    target = tmp_path / "artifacts"
    shutil.copytree(out, target, ignore=shutil.ignore_patterns("saved_model"))  # serving reads only ONNX
    return target


def _levels(*dims, names=contract.LEVELS):
    return {"levels": [{"name": n, "latent_dim": d} for n, d in zip(names, dims)]}


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: m.pop("hierarchy"), "format_version 3 needs the key 'hierarchy'"),
        (lambda m: m.update(hierarchy=[4, 3]), "hierarchy must be {'levels': [{'name': 'z1', 'latent_dim': d1}"),
        (lambda m: m.update(hierarchy=_levels(3, 4, names=("z2", "z1"))), "hierarchy must be"),
        (lambda m: m.update(hierarchy=_levels(4, 0)), "hierarchy must be"),
        (lambda m: m.update(hierarchy=_levels(4, 4)), "levels' latent_dim add up to 4 + 4 = 8, but latent_dim is 7"),
        (lambda m: m.update(format_version=2), "the key 'hierarchy' belongs to format_version 3"),
        (lambda m: m.update(format_version=4), "format_version 4, this server reads 1, 2 and 3"),
        (lambda m: m.update(num_classes=10), "cannot be conditional"),
        (lambda m: m["models"].pop("prior"), "models.prior.onnx is missing"),
        (lambda m: m["models"]["encoder"]["outputs"].pop(1), "models.encoder.outputs must declare ['z', 'log_qz']"),
        (lambda m: m["models"]["encoder"]["inputs"][1].update(shape=[-1, 4]), "input 'eps' has shape [-1, 4]"),
    ],
)
def test_bad_hierarchical_manifests(hvae, tmp_path, damage, message):
    from kvae_serving.errors import ArtifactError
    from kvae_serving.runtime import Runtime

    path = _without_saved_models(hvae[2], tmp_path)
    manifest = _read_json(path / contract.MANIFEST)
    damage(manifest)
    (path / contract.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError) as info:
        Runtime(path)
    assert message in str(info.value) and "does not follow the artifact contract" in str(info.value)
    assert "Re-export" in str(info.value)
