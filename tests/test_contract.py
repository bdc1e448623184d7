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
    rows = _tensor_rows(page)
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
                    contract.X_LOGITS, contract.EPS, contract.COMPONENT, contract.LOG_PZ}
    assert {r[2] for r in rows} == tensor_names
    assert {r[0] for r in rows} == {contract.ENCODER, contract.DECODER, contract.PRIOR, contract.LOG_PRIOR}
    assert f"Inputs are ordered `{contract.EPS}, {contract.COMPONENT}`" in page
    assert f"Inputs are ordered `{contract.X}, {contract.LABELS}` (encoder) and `{contract.Z}, {contract.LABELS}`" in page


def test_the_layout(page):
    (tree,) = _code_blocks(page, "")
    paths = [line.split()[0] for line in tree.splitlines()[1:] if line.strip()]  # below ARTIFACTS/
    expected = [contract.MANIFEST]
    for model in contract.MODELS:
        expected.append(contract.saved_model_path(model) + "/")
    for model in contract.MODELS:
        expected += [contract.triton_config_path(model), contract.onnx_path(model)]
    assert sorted(paths) == sorted(expected)
    vamp = "{" + ",".join(contract.VAMP_MODELS) + "}"  # the page writes {prior,log_prior}
    for path in (contract.saved_model_path(vamp) + "/", contract.onnx_path(vamp), contract.triton_config_path(vamp)):
        assert f"`{path}`" in _section(page, "Layout"), path
    assert contract.MODEL_VERSION == "1" and contract.onnx_path("m") == "onnx/m/1/model.onnx"


def test_the_manifest_example_and_format_versions(page):
    (example,) = _code_blocks(page, "json")
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
    versions = re.search(r"Serving reads versions (\d+) and (\d+)", section)
    assert tuple(int(v) for v in versions.groups()) == contract.FORMAT_VERSIONS
    assert json.dumps(contract.prior_entry()) in page
    assert json.dumps(contract.prior_entry(K)).replace(str(K), "K") in page
    assert f"`{contract.MANIFEST}`" in page


@pytest.mark.parametrize("num_components", [None, 7])
def test_the_sampling_code_is_draw_prior_noise(page, num_components):
    (code,) = _code_blocks(page, "python")
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
