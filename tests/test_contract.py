"""ARTIFACTS.md and kvae_contract.artifacts say the same thing: the page is parsed and checked against the module.

Tensor tables (model, direction, name, dtype, shape, in order), the layout,
the manifest example, the format versions, the label convention and the
sampling code all come from the page; the module is what export, serving and
kvae use. NumPy only: no TensorFlow, no Keras.
"""

import json
import os
import re

import numpy as np
import pytest

from kvae_contract import artifacts as contract

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE_HEADER = ["model", "direction", "name", "dtype", "shape", "meaning"]
INPUT_SHAPE, LATENT_DIM, C, K = (28, 28, 1), 16, 10, 500  # the page's example sizes; C and K any
LATENT_DIMS = (10, 6)  # the page's hierarchical example: d1 + d2 = LATENT_DIM
HIERARCHICAL = "The hierarchical VAE (format_version 3)"  # the section of format_version 3


@pytest.fixture(scope="module")
def page():
    with open(os.path.join(REPO, "ARTIFACTS.md"), encoding="utf-8") as f:
        return f.read()


def _code_blocks(page, language):
    return [body for lang, body in re.findall(r"```(\w*)\n(.*?)```", page, re.S) if lang == language]


def _section(page, title):
    """The text of the `## title` section, up to the next `## `."""
    start = page.index(f"\n## {title}\n")
    end = page.find("\n## ", start + 1)
    return page[start : None if end < 0 else end]


def _without_section(page, title):
    """The page without its `## title` section."""
    section = _section(page, title)
    return page.replace(section, "\n")


def _cells(line):
    """The cells of a Markdown table row; `\\|` is a pipe inside a cell."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _tensor_rows(page):
    """Every row of the page's tensor tables, in page order: (model, direction, name, dtype, shape, meaning)."""
    rows, in_table = [], False
    for line in page.splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        cells = _cells(line)
        if cells == TABLE_HEADER:
            in_table = True
        elif in_table and not set("".join(cells)) <= set("-: "):
            name = re.fullmatch(r"`(\w+)`", cells[2])
            assert name, f"the name cell of {line!r} is not one `name`"
            rows.append((cells[0], cells[1], name.group(1), *cells[3:]))
    return rows


def _shape(text):
    """"[batch, *input_shape]" -> [-1, 28, 28, 1] with the page's symbols."""
    sizes = {"batch": [-1], "*input_shape": list(INPUT_SHAPE), "latent_dim": [LATENT_DIM], "C": [C], "K": [K]}
    dims = [d.strip() for d in text.strip("[]").split(",")]
    assert all(d in sizes for d in dims), f"unknown dimension in {text}"
    return [n for d in dims for n in sizes[d]]


def test_the_tensor_tables_are_the_module_table(page):
    rows = _tensor_rows(_without_section(page, HIERARCHICAL))  # one-level tables; the hierarchical one is tested below
    documented = {}
    for model, direction, name, dtype, shape, _ in rows:
        assert direction in ("input", "output"), direction
        assert dtype in ("float32",), f"{name}: {dtype}"
        datatype = next(t for t, numpy_type in contract.DTYPES.items() if np.dtype(numpy_type) == np.dtype(dtype))
        tensor = {"name": name, "datatype": datatype, "shape": _shape(shape)}
        documented.setdefault(model, {"inputs": [], "outputs": []})[direction + "s"].append(tensor)
    # The union of the page's tables: every model, and the conditional input y (a module table has y or K, the
    # page documents both); in the module's order within each model.
    conditional = contract.model_tensors(INPUT_SHAPE, LATENT_DIM, "bernoulli", num_classes=C)
    vamp = contract.model_tensors(INPUT_SHAPE, LATENT_DIM, "bernoulli", num_components=K)
    assert documented == {**vamp, **{m: conditional[m] for m in contract.MODELS}}
    assert list(documented) == [*contract.MODELS, *contract.VAMP_MODELS]
    # x_logits: Bernoulli only, on the page and in the module.
    (meaning,) = [r[5] for r in rows if r[2] == contract.X_LOGITS]
    assert meaning.startswith("Bernoulli only")
    gaussian = contract.model_tensors(INPUT_SHAPE, LATENT_DIM, "gaussian")
    assert contract.names(gaussian[contract.DECODER], "outputs") == [contract.X_MEAN]


def test_every_name_of_the_module_is_on_the_page(page):
    rows = _tensor_rows(page)
    tensor_names = {contract.X, contract.LABELS, contract.Z_MEAN, contract.Z_LOG_VAR, contract.Z, contract.X_MEAN,
                    contract.X_LOGITS, contract.EPS, contract.COMPONENT, contract.LOG_PZ, contract.LOG_QZ}
    assert {r[2] for r in rows} == tensor_names
    assert {r[0] for r in rows} == {contract.ENCODER, contract.DECODER, contract.PRIOR, contract.LOG_PRIOR}
    assert f"Inputs are ordered `{contract.EPS}, {contract.COMPONENT}`" in page
    assert f"Inputs are ordered `{contract.X}, {contract.LABELS}` (encoder) and `{contract.Z}, {contract.LABELS}`" in page


def test_the_layout(page):
    (tree,) = _code_blocks(page, "")
    paths = [line.split()[0] for line in tree.splitlines()[1:] if line.strip()]  # below ARTIFACTS/
    expected = [contract.MANIFEST, contract.TEST_IMAGES]
    for model in contract.MODELS:
        expected.append(contract.saved_model_path(model) + "/")
    for model in contract.MODELS:
        expected += [contract.triton_config_path(model), contract.onnx_path(model)]
    assert sorted(paths) == sorted(expected)
    vamp = "{" + ",".join(contract.VAMP_MODELS) + "}"  # the page writes {prior,log_prior}
    for path in (contract.saved_model_path(vamp) + "/", contract.onnx_path(vamp), contract.triton_config_path(vamp)):
        assert f"`{path}`" in _section(page, "Layout"), path
    assert "(#the-hierarchical-vae-format_version-3)" in _section(page, "Layout")
    assert contract.MODEL_VERSION == "1" and contract.onnx_path("m") == "onnx/m/1/model.onnx"


def test_the_manifest_example_and_format_versions(page):
    (example,) = _code_blocks(_section(page, "manifest.json"), "json")
    manifest = json.loads(example)
    assert manifest["format_version"] == contract.FORMAT_VERSION
    assert manifest["latent_dim"] == LATENT_DIM and tuple(manifest["input_shape"]) == INPUT_SHAPE
    assert manifest["prior"] == contract.prior_entry()
    tensors = contract.model_tensors(INPUT_SHAPE, LATENT_DIM, manifest["likelihood"])
    assert manifest["models"] == {
        name: {"onnx": contract.onnx_path(name), "saved_model": contract.saved_model_path(name), **tensors[name]}
        for name in contract.MODELS
    }
    section = _section(page, "manifest.json")
    assert f"`format_version` is {contract.FORMAT_VERSION} since" in section
    versions = re.search(r"Serving reads versions (\d+), (\d+) and (\d+)", section)
    assert tuple(int(v) for v in versions.groups()) == contract.FORMAT_VERSIONS
    assert f"Version {contract.HIERARCHICAL_FORMAT_VERSION} is the\n  two-level hierarchical VAE's" in section
    assert json.dumps(contract.prior_entry()) in page
    assert json.dumps(contract.prior_entry(K)).replace(str(K), "K") in page
    assert f"`{contract.MANIFEST}`" in page


def test_the_optional_keys_and_test_images(page):
    (example,) = _code_blocks(_section(page, "manifest.json"), "json")
    kl = json.loads(example)[contract.KL_PER_DIM]
    assert len(kl) == LATENT_DIM and all(isinstance(v, float) and v >= 0 for v in kl)
    assert f"- `{contract.KL_PER_DIM}` (optional, any format version)" in _section(page, "manifest.json")
    section = _section(page, "Test images")
    assert f"`{contract.TEST_IMAGES}` holds up to {contract.NUM_TEST_IMAGES} of the export's check images" in section
    assert "image `i`\nis of class `i % C`" in section
    images = np.arange(5 * 3 * 2 * 1, dtype=np.uint8).reshape(5, 3, 2, 1)  # n, h, w, c
    picture = contract.test_images_sprite(images)
    assert picture.shape == (3, 5 * 2, 1)
    np.testing.assert_array_equal(picture[:, 2 * 4 : 2 * 5], images[4])  # image i in columns i*w .. (i+1)*w
    np.testing.assert_array_equal(contract.test_images_from_sprite(picture[..., 0], (3, 2, 1)), images)
    with pytest.raises(ValueError, match="not a row of images"):
        contract.test_images_from_sprite(picture, (3, 3, 1))


@pytest.mark.parametrize("num_components", [None, 7])
def test_the_sampling_code_is_draw_prior_noise(page, num_components):
    (code,) = _code_blocks(_section(page, "Sampling"), "python")
    n, seed, temperature = 9, 11, 0.7
    means = np.random.default_rng(0).standard_normal((7, LATENT_DIM)).astype(np.float32)
    log_vars = -np.abs(np.random.default_rng(1).standard_normal((7, LATENT_DIM))).astype(np.float32)

    def prior_model(eps, component):
        return {"z": component @ means + np.exp(0.5 * (component @ log_vars)) * eps}

    scope = {"numpy": np, "n": n, "seed": seed, "temperature": temperature, "latent_dim": LATENT_DIM, "K": 7,
             "prior_model": prior_model, "decoder": lambda z: {"x_mean": z}}
    normal, vamp = code.split('# prior "vamp"')
    exec(normal if num_components is None else code, scope)  # noqa: S102  the page's own code
    eps, component = contract.draw_prior_noise(n, LATENT_DIM, seed, num_components)
    np.testing.assert_array_equal(scope["eps"], eps)
    assert eps.dtype == np.float32 and eps.shape == (n, LATENT_DIM)
    if num_components is None:
        assert component is None
        np.testing.assert_array_equal(scope["z"], temperature * eps)
    else:
        np.testing.assert_array_equal(scope["component"], component)
        expected = means[component] + np.exp(0.5 * log_vars[component]) * np.float32(temperature) * eps
        np.testing.assert_allclose(scope["z"], expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(scope["x"], scope["z"])


# The hierarchical VAE (format_version 3)


def test_the_hierarchical_table_is_the_module_table(page):
    section = _section(page, HIERARCHICAL)
    documented = {}
    for model, direction, name, dtype, shape, _ in _tensor_rows(section):
        tensor = {"name": name, "datatype": contract.FP32, "shape": _shape(shape)}
        assert dtype == "float32", name
        documented.setdefault(model, {"inputs": [], "outputs": []})[direction + "s"].append(tensor)
    # The page's table is the VampPrior + Bernoulli one (the union); N(0, I) drops component, Gaussian x_logits.
    assert documented == contract.hierarchical_model_tensors(INPUT_SHAPE, LATENT_DIMS, "bernoulli", num_components=K)
    assert list(documented) == list(contract.HIERARCHICAL_MODELS)
    normal = contract.hierarchical_model_tensors(INPUT_SHAPE, LATENT_DIMS, "gaussian")
    assert contract.names(normal[contract.PRIOR], "inputs") == [contract.EPS]
    assert contract.names(normal[contract.DECODER], "outputs") == [contract.X_MEAN]
    assert set(normal) == set(contract.HIERARCHICAL_MODELS)  # all four with the N(0, I) prior too
    order = f"Inputs are ordered `{contract.X}, {contract.EPS}` (encoder) and `{contract.EPS}, {contract.COMPONENT}`"
    assert order in section


def test_the_hierarchical_manifest_keys(page):
    (example,) = _code_blocks(_section(page, HIERARCHICAL), "json")
    manifest = json.loads(example)
    assert manifest["format_version"] == contract.HIERARCHICAL_FORMAT_VERSION == 3
    assert contract.HIERARCHICAL_FORMAT_VERSION in contract.FORMAT_VERSIONS and contract.FORMAT_VERSION == 2
    assert manifest[contract.HIERARCHY] == contract.hierarchy_entry(LATENT_DIMS)
    assert [level["name"] for level in manifest[contract.HIERARCHY]["levels"]] == list(contract.LEVELS)
    assert sum(LATENT_DIMS) == manifest["latent_dim"] == LATENT_DIM
    assert manifest["prior"] == contract.prior_entry()
    assert list(manifest).index(contract.HIERARCHY) == list(manifest).index("latent_dim") + 1  # right after it
    with pytest.raises(ValueError, match="latent_dims must be 2 positive ints"):
        contract.hierarchy_entry((4, 0))


def _hierarchical_parts(seed=0, d1=LATENT_DIMS[0], num_components=7):
    """Made-up VampPrior components of z2 and a p(z1|z2): what an HVAE's prior model computes, in NumPy."""
    rng = np.random.default_rng(seed)
    d2 = LATENT_DIM - d1
    means, log_vars = rng.standard_normal((num_components, d2)), -np.abs(rng.standard_normal((num_components, d2)))
    weights = rng.standard_normal((d2, 2 * d1)) / d2

    def p_z1(z2):
        h = z2 @ weights
        return h[:, :d1], np.tanh(h[:, d1:])  # mean, log_var of p(z1|z2)

    def generate(eps, component=None):  # HVAE.generate_codes
        z2 = eps[:, d1:] if component is None else means[component] + np.exp(0.5 * log_vars[component]) * eps[:, d1:]
        mean, log_var = p_z1(z2)
        return np.concatenate([mean + np.exp(0.5 * log_var) * eps[:, :d1], z2], axis=-1)

    def prior_model(eps, component=None):  # the graph: one-hot rows instead of ids
        return {"z": generate(eps, None if component is None else component.argmax(axis=1))}

    return generate, prior_model


@pytest.mark.parametrize("num_components", [None, 7])
def test_the_hierarchical_sampling_code(page, num_components):
    (code, _) = _code_blocks(_section(page, HIERARCHICAL), "python")
    n, seed, temperature = 9, 11, 0.7
    generate, prior_model = _hierarchical_parts()
    manifest = {"prior": contract.prior_entry(num_components)}
    scope = {"numpy": np, "n": n, "seed": seed, "temperature": temperature, "latent_dim": LATENT_DIM,
             "manifest": manifest, "prior_model": prior_model, "decoder": lambda z: {"x_mean": z}}  # K: the manifest's
    exec(code, scope)  # noqa: S102  the page's own code
    eps, component = contract.draw_prior_noise(n, LATENT_DIM, seed, num_components)  # the one-level draw, d1 + d2 wide
    np.testing.assert_array_equal(scope["eps"], eps)
    np.testing.assert_array_equal(scope["x"], generate(np.float32(temperature) * eps, component))
    if num_components is not None:
        np.testing.assert_array_equal(scope["component"], component)


def test_the_hierarchical_nll_code(page):
    """The page's importance-weighted NLL, run with stand-ins whose answer is known: q = p(z) = N(0, I), logits 0."""
    (_, code) = _code_blocks(_section(page, HIERARCHICAL), "python")
    n, k = 3, 5

    def log_standard_normal(z):
        return -0.5 * (z.astype(np.float64) ** 2 + np.log(2 * np.pi)).sum(-1)

    def encoder(x, eps):
        assert x.shape == (n * k, *INPUT_SHAPE) and eps.shape == (n * k, LATENT_DIM)
        return {"z": eps, "log_qz": log_standard_normal(eps).astype(np.float32)}

    scope = {"numpy": np, "rng": np.random.default_rng(0), "n": n, "k": k, "latent_dim": LATENT_DIM,
             "x": np.ones((n, *INPUT_SHAPE), np.float32), "encoder": encoder,
             "decoder": lambda z: {"x_logits": np.zeros((len(z), *INPUT_SHAPE), np.float32)},
             "log_prior": lambda z: {"log_pz": log_standard_normal(z)}}
    exec(code, scope)  # noqa: S102  the page's own code
    pixels = int(np.prod(INPUT_SHAPE))
    np.testing.assert_allclose(scope["nll"], np.full(n, pixels * np.log(2.0)), rtol=1e-6)  # p(x|z) = 1/2 per pixel


def test_the_label_convention(page):
    section = _section(page, "Conditional models")
    assert "row i has 1.0 in column label_i, 0.0 elsewhere" in section
    assert "row i is decoded with label `i % C`" in section
    labels = contract.default_labels(23, C)
    np.testing.assert_array_equal(labels, np.arange(23) % C)
    y = contract.one_hot(labels, C)
    assert y.dtype == np.float32 and y.shape == (23, C)
    np.testing.assert_array_equal(y.argmax(axis=1), labels)
    np.testing.assert_array_equal(y.sum(axis=1), np.ones(23))


def test_the_contract_imports_nothing_but_numpy():
    import subprocess
    import sys

    code = (
        "import sys; import kvae_contract.artifacts, kvae_contract.errors, kvae_contract.images, kvae_contract.idx\n"
        "heavy = {m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'kvae', 'onnxruntime', 'PIL'}\n"
        "assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
