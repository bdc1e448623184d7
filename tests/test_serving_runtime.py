"""serving/ without HTTP: the onnxruntime Runtime against Keras, its errors, PNG grids, the generate CLI,
and a subprocess proving that serving never imports tensorflow, keras or kvae."""

import json
import os
import selectors
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from kvae_serving import images
from kvae_serving.cli import main as serving_main
from kvae_serving.errors import ArtifactError, InputError
from kvae_serving.runtime import Runtime

pytest_plugins = ["tests.serving_fixtures"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def test_images(splits):
    return splits.x_test[:16].astype(np.float32) / 255.0  # real Fashion-MNIST, (16, 28, 28, 1)


def test_decoder_matches_keras(serving_runtime, tiny_run):
    model = tiny_run[1].model
    z = np.random.default_rng(0).standard_normal((32, serving_runtime.latent_dim)).astype(np.float32) * 2
    np.testing.assert_allclose(serving_runtime.decode(z), model.decode(z), atol=1e-5, rtol=0)


def test_encoder_matches_keras(serving_runtime, tiny_run, test_images):
    z_mean, z_log_var = serving_runtime.encode(test_images)
    keras_mean, keras_log_var = tiny_run[1].model.encode(test_images)
    np.testing.assert_allclose(z_mean, keras_mean, atol=1e-5, rtol=0)
    np.testing.assert_allclose(z_log_var, keras_log_var, atol=1e-5, rtol=0)


def test_sampling_convention_matches_keras(serving_runtime, tiny_run):
    images_a = serving_runtime.sample(6, seed=3, temperature=0.7)
    np.testing.assert_allclose(images_a, tiny_run[1].model.sample(6, seed=3, temperature=0.7), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(
        images_a, serving_runtime.sample(6, seed=3, temperature=0.7)
    )  # same seed, same images
    assert not np.allclose(images_a, serving_runtime.sample(6, seed=4, temperature=0.7))
    z = 0.7 * np.random.default_rng(3).standard_normal((6, serving_runtime.latent_dim), dtype=np.float32)
    np.testing.assert_array_equal(serving_runtime.sample_z(6, 3, 0.7), z)  # ARTIFACTS.md's formula, bit for bit


def test_gaussian_conv_artifacts(tiny_gaussian_conv_run, tmp_path):
    import kvae_export

    run_dir, result = tiny_gaussian_conv_run
    kvae_export.export_run(run_dir, tmp_path / "artifacts")
    runtime = Runtime(tmp_path / "artifacts")
    assert runtime.likelihood == "gaussian" and list(runtime.models["decoder"]["outputs"]) == ["x_mean"]
    z = runtime.sample_z(5, seed=0)
    np.testing.assert_allclose(runtime.decode(z), result.model.decode(z), atol=1e-5, rtol=0)
    np.testing.assert_allclose(runtime.sample(5, 0), result.model.sample(5, seed=0), atol=1e-5, rtol=0)


def test_reconstruct_and_interpolate(serving_runtime, test_images):
    z_mean = serving_runtime.encode(test_images[:2])[0]
    np.testing.assert_array_equal(serving_runtime.reconstruct(test_images[:2]), serving_runtime.decode(z_mean))
    path = serving_runtime.interpolate(test_images[0], test_images[1:2], steps=5)
    assert path.shape == (5, 28, 28, 1)
    np.testing.assert_allclose(path[[0, -1]], serving_runtime.decode(z_mean), atol=1e-6)
    assert serving_runtime.decode(z_mean).min() >= 0 and serving_runtime.decode(z_mean).max() <= 1  # Bernoulli means


def test_contract_metadata_and_session_options(serving_runtime):
    assert (serving_runtime.latent_dim, serving_runtime.input_shape, serving_runtime.likelihood) == (
        8,
        (28, 28, 1),
        "bernoulli",
    )
    assert list(serving_runtime.models["decoder"]["outputs"]) == ["x_mean", "x_logits"]
    for session in serving_runtime.sessions.values():
        options = session.get_session_options()
        assert options.intra_op_num_threads == 2
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert session.get_providers() == ["CPUExecutionProvider"]
    assert (
        Runtime.load(serving_runtime.artifacts_dir, intra_op_num_threads=1)
        .sessions["encoder"]
        .get_session_options()
        .intra_op_num_threads
        == 1
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda r: r.decode(np.zeros((2, 7), np.float32)), "expects shape [-1, 8]"),
        (lambda r: r.decode(np.zeros((2, 8, 1), np.float32)), "received [2, 8, 1]"),
        (lambda r: r.encode(np.zeros((2, 28, 28), np.float32)), "expects shape [-1, 28, 28, 1]"),
        (lambda r: r.encode(np.zeros((2, 28, 28, 1), np.uint8)), "divide uint8 pixels by 255"),
        (lambda r: r.decode(np.array([["a"] * 8])), "expects float32 values, received dtype <U1"),
        (lambda r: r.decode(np.full((1, 8), np.nan, np.float32)), "NaN or Inf"),
        (lambda r: r.decode(np.full((1, 8), np.inf)), "NaN or Inf"),
        (lambda r: r.decode(np.full((1, 8), 1e300)), "beyond float32's range"),
        (lambda r: r.decode(np.zeros((0, 8), np.float32)), "empty batch"),
        (lambda r: r.encode(np.zeros((0, 28, 28, 1), np.float32)), "empty batch"),
        (lambda r: r.sample(0), "`n` must be >= 1"),
        (lambda r: r.sample(2.5), "`n` must be an int"),
        (lambda r: r.sample(2, seed=-1), "`seed` must be >= 0"),
        (lambda r: r.sample(2, temperature=float("nan")), "`temperature` must be finite"),
        (lambda r: r.interpolate(np.zeros((2, 28, 28, 1)), np.zeros((28, 28, 1)), 3), "one image of shape"),
        (lambda r: r.interpolate(np.zeros((28, 28, 1)), np.zeros((28, 28, 1)), 1), "`steps` must be >= 2"),
        (lambda r: r.run("decoder", {"q": np.zeros((1, 8), np.float32)}), "missing ['z']"),
        (lambda r: r.run("decoder", {"z": np.zeros((1, 8), np.float32)}, ["x_std"]), "no outputs ['x_std']"),
        (lambda r: r.run("critic", {}), "unknown model 'critic'"),
    ],
)
def test_input_errors_say_expected_and_received(serving_runtime, call, message):
    with pytest.raises(InputError) as info:
        call(serving_runtime)
    assert message in str(info.value)


# Generated arrays of the right shape holding NaN, Inf and values beyond float32's range

SPECIAL = [float("nan"), float("inf"), -float("inf"), 3.4e38, -3.4e38, 3.5e38, 1e39, -1e300, 1e308, 5e-324]
VALUES = st.floats(width=32) | st.floats() | st.sampled_from(SPECIAL) | st.floats(-3, 3)


def _as_float32(values):
    """What the runtime should feed the model: the values rounded to float32 (beyond its range: +-inf)."""
    with np.errstate(over="ignore"):
        return np.asarray(values, np.float64).astype(np.float32)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(VALUES, min_size=16, max_size=16), dtype=st.sampled_from([np.float64, np.float32]))
def test_fuzz_decoder_input_values(serving_runtime, values, dtype):
    with np.errstate(over="ignore"):
        z = np.asarray(values, np.float64).astype(dtype).reshape(2, 8)
    fed = _as_float32(z)
    if not np.isfinite(fed).all():
        for call in (lambda: serving_runtime.decode(z), lambda: serving_runtime.run("decoder", {"z": z}),
                     lambda: serving_runtime.log_prior(z)):
            with pytest.raises(InputError) as info:
                call()
            assert "input 'z' contains NaN or Inf" in str(info.value)
        return
    # Finite in float32: the model runs on exactly those values, whatever it makes of them.
    out = serving_runtime.run("decoder", {"z": z})
    expected = serving_runtime.sessions["decoder"].run(list(out), {"z": fed})
    for got, want in zip(out.values(), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert serving_runtime.decode(z).shape == (2, 28, 28, 1)


@settings(max_examples=100, deadline=None)
@given(changes=st.dictionaries(st.integers(0, 2 * 784 - 1), VALUES, min_size=1, max_size=4))
def test_fuzz_encoder_pixels(serving_runtime, changes):
    x = np.full(2 * 784, 0.5)
    for i, v in changes.items():
        x[i] = v
    x = x.reshape(2, 28, 28, 1)
    fed = _as_float32(x)
    calls = [lambda: serving_runtime.run("encoder", {"x": x}), lambda: serving_runtime.encode(x),
             lambda: serving_runtime.reconstruct(x)]
    if not np.isfinite(fed).all():
        for call in calls:
            with pytest.raises(InputError) as info:
                call()
            assert "input 'x' contains NaN or Inf" in str(info.value)
        return
    want = serving_runtime.sessions["encoder"].run(["z_mean", "z_log_var"], {"x": fed})
    got = serving_runtime.run("encoder", {"x": x})  # the generic entry point: any finite float32
    np.testing.assert_array_equal(got["z_mean"], want[0])
    np.testing.assert_array_equal(got["z_log_var"], want[1])
    if ((x >= 0) & (x <= 1)).all():
        z_mean, z_log_var = serving_runtime.encode(x)
        np.testing.assert_array_equal(z_mean, want[0])
        np.testing.assert_array_equal(z_log_var, want[1])
        return
    try:  # images with pixels outside [0, 1]: refused, naming x and the range, or encoded as they are
        z_mean = serving_runtime.encode(x)[0]
    except InputError as e:
        assert "x" in str(e) and "[0, 1]" in str(e), str(e)
        with pytest.raises(InputError):
            serving_runtime.reconstruct(x)
    else:
        np.testing.assert_array_equal(z_mean, want[0])


def _copy(serving_artifacts, tmp_path):
    target = tmp_path / "artifacts"
    shutil.copytree(serving_artifacts, target, ignore=shutil.ignore_patterns("saved_model"))  # serving reads only ONNX
    return target


def _edit_manifest(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda p: _edit_manifest(p, lambda m: m.pop("latent_dim")), "missing keys ['latent_dim']"),
        (
            lambda p: _edit_manifest(p, lambda m: m.update(format_version=4)),
            "format_version 4, this server reads 1, 2 and 3",
        ),
        (
            lambda p: _edit_manifest(p, lambda m: m.update(format_version=3)),
            "format_version 3 needs the key 'hierarchy'",
        ),
        (
            lambda p: _edit_manifest(p, lambda m: m.update(hierarchy={"levels": []})),
            "the key 'hierarchy' belongs to format_version 3, this manifest is format_version 2",
        ),
        (lambda p: _edit_manifest(p, lambda m: m.pop("prior")), "format_version 2 needs the key 'prior'"),
        (lambda p: _edit_manifest(p, lambda m: m.update(prior={"type": "flow"})), "prior must be"),
        (
            lambda p: _edit_manifest(p, lambda m: m.update(prior={"type": "vamp", "num_components": 10})),
            "models.prior.onnx is missing",
        ),
        (lambda p: _edit_manifest(p, lambda m: m.update(models=[])), "models must map"),
        (lambda p: _edit_manifest(p, lambda m: m.update(input_shape="28x28")), "input_shape must be a list"),
        (
            lambda p: _edit_manifest(p, lambda m: m["models"]["decoder"]["inputs"][0].update(name="latent")),
            "must declare ['z']",
        ),
        (
            lambda p: _edit_manifest(p, lambda m: m["files"].pop("onnx/decoder/1/model.onnx")),
            "no sha256 for onnx/decoder/1/model.onnx",
        ),
        (lambda p: (p / "onnx/encoder/1/model.onnx").unlink(), "model.onnx cannot be read"),
        (lambda p: (p / "onnx/decoder/1/model.onnx").open("ab").write(b"\0"), "decoder/1/model.onnx is corrupt"),
    ],
)
def test_artifact_errors_name_the_file_and_say_reexport(serving_artifacts, tmp_path, damage, message):
    path = _copy(serving_artifacts, tmp_path)
    damage(path)
    with pytest.raises(ArtifactError) as info:
        Runtime(path)
    assert message in str(info.value)
    assert "Re-export" in str(info.value)


def test_missing_directory(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        Runtime(tmp_path / "nowhere")


def test_png_grid_layout_and_upload_round_trip(serving_runtime):
    x = serving_runtime.sample(5, seed=1)
    picture = images.grid(x, columns=3, pad=2)
    assert picture.shape == (2 * 30 + 2, 3 * 30 + 2, 1)
    np.testing.assert_array_equal(picture[2:30, 32:60, 0], images.to_uint8(x[1, ..., 0]))
    png = images.png_bytes(images.to_uint8(x[:1])[0])
    np.testing.assert_allclose(images.read_image(png, (28, 28, 1)), images.to_uint8(x[:1]) / 255.0, atol=1e-7)
    with pytest.raises(InputError, match="the model takes 28x28"):
        images.read_image(images.png_bytes(picture), (28, 28, 1))
    with pytest.raises(InputError, match="not an image file"):
        images.read_image(b"GIF89a but not really", (28, 28, 1))


def test_generate_cli_writes_the_seeded_grid(serving_artifacts, serving_runtime, tmp_path, capsys):
    out = tmp_path / "samples.png"
    assert (
        serving_main(
            ["generate", str(serving_artifacts), "--n", "9", "--seed", "4", "--temperature", "0.5", "--out", str(out)]
        )
        == 0
    )
    assert "wrote 9 samples" in capsys.readouterr().out
    picture = np.asarray(Image.open(out))
    np.testing.assert_array_equal(picture, images.grid(serving_runtime.sample(9, 4, 0.5))[..., 0])
    again = tmp_path / "again.png"
    serving_main(
        ["generate", str(serving_artifacts), "--n", "9", "--seed", "4", "--temperature", "0.5", "--out", str(again)]
    )
    assert again.read_bytes() == out.read_bytes()


def test_kvae_generate_and_serve_are_wired(serving_artifacts, serving_runtime, tmp_path):
    from kvae_cli import main as kvae_main

    out = tmp_path / "kvae.png"
    assert kvae_main(["generate", str(serving_artifacts), "--n", "4", "--seed", "1", "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), images.grid(serving_runtime.sample(4, 1))[..., 0])
    with pytest.raises(SystemExit) as info:
        kvae_main(["serve", "--help"])
    assert info.value.code == 0


def test_generate_cli_errors_exit_2(tmp_path, capsys):
    assert serving_main(["generate", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "manifest.json is missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        serving_main(["generate", str(tmp_path), "--n", "0"])


BLOCKER = textwrap.dedent(
    """
    import sys

    BLOCKED = {"tensorflow", "keras", "kvae", "tf2onnx"}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"serving must not import {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    """
)


def _blocked_python(code, *args, **kwargs):
    """`python -c BLOCKER+code args` with the repository importable, tensorflow/keras/kvae/tf2onnx not."""
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.Popen([sys.executable, "-c", BLOCKER + textwrap.dedent(code), *args], cwd=REPO, env=env, **kwargs)


def _finish(process, timeout):
    """Waits at most `timeout` s for the process (killing it after that) -> (exit code, its stderr as text)."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()  # this process only, by its own handle
        process.wait()
    err = process.stderr.read() if process.stderr else b""
    return process.returncode, err.decode(errors="replace") if isinstance(err, bytes) else err


def _read_line(stream, timeout):
    """One line from a child's binary pipe within `timeout` s, or b"" (EOF, or nothing by then); never blocks longer.

    Reads the raw file descriptor through a selector (a buffered readline() could wait forever).
    """
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream.fileno(), selectors.EVENT_READ)
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                return data
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                return data
            data += chunk
    return data.split(b"\n", 1)[0] + b"\n"


def test_serving_never_imports_tensorflow_keras_or_kvae(serving_artifacts, serving_runtime, tmp_path):
    # The runtime, and `python -m kvae_serving generate`, under the import blocker.
    code = """
        import runpy, sys
        import numpy as np
        from kvae_serving import Runtime
        r = Runtime(sys.argv[1])
        np.save(sys.argv[2], r.sample(4, seed=2))
        r.reconstruct(r.sample(2, seed=0)); r.interpolate(r.sample(1, 0), r.sample(1, 1), 3)
        sys.argv = ["kvae_serving", "generate", sys.argv[1], "--n", "4", "--seed", "2", "--out", sys.argv[3]]
        try:
            runpy.run_module("kvae_serving", run_name="__main__", alter_sys=True)
        except SystemExit as e:
            assert e.code == 0, e.code
        assert not BLOCKED & {m.split(".")[0] for m in sys.modules}
    """
    process = _blocked_python(
        code, str(serving_artifacts), str(tmp_path / "s.npy"), str(tmp_path / "s.png"), stderr=subprocess.PIPE
    )
    rc, err = _finish(process, 120)
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), serving_runtime.sample(4, seed=2))
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_python_m_serving_serves_under_the_import_blocker(serving_artifacts, serving_runtime):
    import tritonclient.http as triton

    code = """
        import runpy, sys
        sys.argv = ["kvae_serving", *sys.argv[1:]]
        runpy.run_module("kvae_serving", run_name="__main__", alter_sys=True)
    """
    args = (str(serving_artifacts), "--host", "127.0.0.1", "--port", "0", "--quiet", "--max-batch-size", "4")
    process = _blocked_python(code, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait = 120
        line = _read_line(process.stdout, wait).decode()  # "kvae serving ARTIFACTS on http://127.0.0.1:PORT (models: ...)"
        if " on http://127.0.0.1:" not in line:
            _, err = _finish(process, 0)  # killed first, so that reading its stderr cannot block
            pytest.fail(f"no 'kvae serving ... on http://...' line within {wait} s; stdout {line!r}, stderr:\n{err}")
        url = line.split(" on http://")[1].split()[0]
        client = triton.InferenceServerClient(url=url)
        assert client.is_server_live() and client.is_model_ready("decoder")
        z = serving_runtime.sample_z(4, seed=9)
        tensor = triton.InferInput("z", list(z.shape), "FP32")
        tensor.set_data_from_numpy(z)
        np.testing.assert_allclose(
            client.infer("decoder", [tensor]).as_numpy("x_mean"), serving_runtime.decode(z), atol=1e-6
        )
        tensor = triton.InferInput("z", [5, 8], "FP32")
        tensor.set_data_from_numpy(np.zeros((5, 8), np.float32))
        with pytest.raises(Exception, match="over this server's limit of 4"):
            client.infer("decoder", [tensor])
        client.close()
    finally:
        if process.poll() is None:
            process.terminate()  # SIGTERM: a clean exit
        rc, err = _finish(process, 30)
    assert rc == 0, err


# The learned prior (VampPrior artifacts: the prior and log_prior models)


def _vamp_components(model):
    return tuple(np.asarray(t) for t in model.prior_components())  # (K, latent_dim) each


def test_vamp_sampling_matches_keras(vamp_runtime, tiny_vamp_run):
    model = tiny_vamp_run[1].model
    assert (vamp_runtime.prior, vamp_runtime.num_components, vamp_runtime.latent_dim) == ("vamp", 10, 4)
    assert set(vamp_runtime.sessions) == {"encoder", "decoder", "prior", "log_prior"}
    for seed, temperature in [(0, 1.0), (3, 0.7), (12, 1.3)]:
        images = vamp_runtime.sample(16, seed=seed, temperature=temperature)
        np.testing.assert_allclose(images, model.sample(16, seed=seed, temperature=temperature), atol=1e-5, rtol=0)
        np.testing.assert_allclose(
            vamp_runtime.sample_z(16, seed, temperature), model.sample_prior(16, seed, temperature), atol=1e-5, rtol=0
        )
    np.testing.assert_array_equal(vamp_runtime.sample(8, seed=4), vamp_runtime.sample(8, seed=4))  # same seed
    assert not np.allclose(vamp_runtime.sample(8, seed=4), vamp_runtime.sample(8, seed=5))  # another seed


def test_vamp_sampling_convention(vamp_runtime, tiny_vamp_run):
    """ARTIFACTS.md's recipe, written out: eps first, then the components, then the prior model."""
    rng = np.random.default_rng(6)
    eps = rng.standard_normal((32, 4), dtype=np.float32)
    component = rng.integers(0, 10, size=32)
    one_hot = np.eye(10, dtype=np.float32)[component]
    z = vamp_runtime.run("prior", {"eps": np.float32(0.5) * eps, "component": one_hot})["z"]
    np.testing.assert_array_equal(vamp_runtime.sample_z(32, seed=6, temperature=0.5), z)
    means, log_vars = _vamp_components(tiny_vamp_run[1].model)
    np.testing.assert_allclose(z, means[component] + np.exp(0.5 * log_vars[component]) * 0.5 * eps, atol=1e-5, rtol=0)
    assert len(set(component)) > 5  # the draw really mixes components
    # Temperature 0: exactly the chosen components' means (baked into the graph as Keras computed them).
    np.testing.assert_array_equal(vamp_runtime.sample_z(5, seed=1, temperature=0.0), means[_components_after_eps(1, 5)])


def _components_after_eps(seed, n, latent_dim=4, num_components=10):
    """The components the convention draws: the second draw of PCG64(seed), after the (n, latent_dim) noise."""
    rng = np.random.default_rng(seed)
    rng.standard_normal((n, latent_dim), dtype=np.float32)
    return rng.integers(0, num_components, size=n)


def test_vamp_log_prior_matches_kvae(vamp_runtime, serving_runtime, tiny_vamp_run):
    from kvae.priors import log_mixture_numpy, log_standard_normal_numpy

    means, log_vars = _vamp_components(tiny_vamp_run[1].model)
    z = np.concatenate([vamp_runtime.sample_z(128, seed=2), 3 * np.random.default_rng(2).standard_normal((128, 4))])
    log_pz = vamp_runtime.log_prior(z)
    assert log_pz.shape == (256,) and log_pz.dtype == np.float32
    np.testing.assert_allclose(log_pz, log_mixture_numpy(z.astype(np.float32), means, log_vars), atol=1e-5, rtol=0)
    z8 = serving_runtime.sample_z(16, seed=2)  # the N(0, I) prior: the closed form
    np.testing.assert_allclose(serving_runtime.log_prior(z8), log_standard_normal_numpy(z8), atol=1e-5, rtol=0)
    with pytest.raises(InputError, match=r"expects shape \[-1, 4\]"):
        vamp_runtime.log_prior(np.zeros((2, 3), np.float32))


def test_vamp_generate_cli(vamp_artifacts, vamp_runtime, tmp_path):
    out = tmp_path / "vamp.png"
    args = ["generate", str(vamp_artifacts), "--n", "9", "--seed", "7", "--temperature", "0.8", "--out", str(out)]
    assert serving_main(args) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), images.grid(vamp_runtime.sample(9, 7, 0.8))[..., 0])


def test_format_version_1_artifacts_still_load(serving_artifacts, serving_runtime, tmp_path):
    """A format_version 1 manifest (no "prior" key) is read as the N(0, I) prior."""
    path = _copy(serving_artifacts, tmp_path)
    _edit_manifest(path, lambda m: (m.update(format_version=1), m.pop("prior")))
    runtime = Runtime(path)
    assert runtime.manifest["format_version"] == 1 and runtime.prior == "normal" and runtime.num_components is None
    assert set(runtime.sessions) == {"encoder", "decoder"}
    np.testing.assert_array_equal(runtime.sample(4, seed=8), serving_runtime.sample(4, seed=8))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: m["models"].pop("log_prior"), "models.log_prior.onnx is missing"),
        (lambda m: m["prior"].pop("num_components"), "a vamp prior needs num_components"),
        (lambda m: m["prior"].update(num_components=12), "input 'component' has shape [-1, 10], expected [-1, 12]"),
        (lambda m: m["models"]["prior"]["inputs"].pop(1), "models.prior.inputs must declare ['eps', 'component']"),
    ],
)
def test_vamp_artifact_errors(vamp_artifacts, tmp_path, damage, message):
    path = _copy(vamp_artifacts, tmp_path)
    _edit_manifest(path, damage)
    with pytest.raises(ArtifactError) as info:
        Runtime(path)
    assert message in str(info.value) and "Re-export" in str(info.value)


def test_vamp_sampling_under_the_import_blocker(vamp_artifacts, vamp_runtime, tmp_path):
    code = """
        import sys
        import numpy as np
        from kvae_serving import Runtime
        r = Runtime(sys.argv[1])
        np.save(sys.argv[2], r.sample(4, seed=2))
        np.save(sys.argv[3], r.log_prior(r.sample_z(4, seed=2)))
        assert not BLOCKED & {m.split(".")[0] for m in sys.modules}
    """
    files = [str(tmp_path / "s.npy"), str(tmp_path / "l.npy")]
    process = _blocked_python(code, str(vamp_artifacts), *files, stderr=subprocess.PIPE)
    rc, err = _finish(process, 120)
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(files[0]), vamp_runtime.sample(4, seed=2))
    np.testing.assert_array_equal(np.load(files[1]), vamp_runtime.log_prior(vamp_runtime.sample_z(4, seed=2)))


def test_serving_names_are_the_export_table():
    """What serving requires (serving/manifest.py) is the contract's table (kvae_contract.artifacts), which export writes."""
    from kvae_contract import artifacts as tensors
    from kvae_serving import manifest as mf

    table = tensors.model_tensors((28, 28, 1), 4, "bernoulli", num_classes=None, num_components=10)
    assert list(table) == list(mf.REQUIRED_TENSORS)
    for name, (inputs, outputs) in mf.REQUIRED_TENSORS.items():
        assert inputs == tensors.names(table[name], "inputs")
        assert set(outputs) <= set(tensors.names(table[name], "outputs"))
    assert mf.LABELS == tensors.LABELS and mf.X_LOGITS == tensors.X_LOGITS
    # A two-level HVAE's four models (format_version 3), with either prior over z2.
    for num_components in (None, 10):
        table = tensors.hierarchical_model_tensors((28, 28, 1), (4, 3), "gaussian", num_components)
        manifest = {"format_version": 3, "hierarchy": tensors.hierarchy_entry((4, 3)),
                    "prior": tensors.prior_entry(num_components)}
        assert mf.model_names(manifest) == list(table) == list(mf.HIERARCHICAL_REQUIRED_TENSORS)
        for name in table:
            inputs, outputs = mf.required_tensors(manifest, name)
            assert inputs == tensors.names(table[name], "inputs")
            assert outputs == tensors.names(table[name], "outputs")
