"""The HTTP server on 127.0.0.1: Open Inference Protocol v2 through tritonclient, /v1 for people,
bad input (always a JSON 4xx, never a 5xx), generated payloads, and concurrent clients."""

import io
import json
import math
import socket
import threading
import time

import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from tritonclient.utils import InferenceServerException

from kvae_serving import images

pytest.register_assert_rewrite("tests.serving_fixtures")  # before the import below, so its asserts explain failures
from tests.serving_fixtures import MAX_BATCH_SIZE, MAX_BODY_BYTES, address, error_of, metric_sample, request  # noqa: E402

pytest_plugins = ["tests.serving_fixtures"]

INFER = "/v2/models/decoder/infer"


@pytest.fixture
def client(live_server):
    c = triton.InferenceServerClient(url=address(live_server))
    yield c
    c.close()


def _input(name, array, binary):
    tensor = triton.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _z_request(z, **extra):
    return {
        "inputs": [
            {"name": "z", "shape": list(np.shape(z)), "datatype": "FP32", "data": np.asarray(z).ravel().tolist()}
        ],
        **extra,
    }


# Open Inference Protocol through tritonclient


def test_health_and_metadata(client, serving_runtime):
    assert client.is_server_live() and client.is_server_ready()
    for name in ("encoder", "decoder"):
        assert client.is_model_ready(name) and client.is_model_ready(name, "1")
        assert not client.is_model_ready(name, "2")
    assert not client.is_model_ready("critic")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "kvae" and metadata["version"] and "binary_tensor_data" in metadata["extensions"]
    encoder = client.get_model_metadata("encoder", "1")
    assert encoder == {
        "name": "encoder",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 28, 28, 1]}],
        "outputs": [
            {"name": "z_mean", "datatype": "FP32", "shape": [-1, 8]},
            {"name": "z_log_var", "datatype": "FP32", "shape": [-1, 8]},
        ],
    }
    decoder = client.get_model_metadata("decoder")
    assert decoder["inputs"] == serving_runtime.manifest["models"]["decoder"]["inputs"]
    assert [t["name"] for t in decoder["outputs"]] == ["x_mean", "x_logits"]
    with pytest.raises(InferenceServerException, match="unknown model 'critic'"):
        client.get_model_metadata("critic")


@pytest.mark.parametrize("binary", [False, True])
def test_infer_both_models(client, serving_runtime, binary):
    x = serving_runtime.sample(3, seed=5)
    result = client.infer(
        "encoder",
        [_input("x", x, binary)],
        outputs=[triton.InferRequestedOutput(n, binary_data=binary) for n in ("z_mean", "z_log_var")],
        request_id="req-7",
    )
    z_mean, z_log_var = serving_runtime.encode(x)
    np.testing.assert_allclose(result.as_numpy("z_mean"), z_mean, atol=1e-6, rtol=0)
    np.testing.assert_allclose(result.as_numpy("z_log_var"), z_log_var, atol=1e-6, rtol=0)
    assert result.get_response()["id"] == "req-7"
    result = client.infer(
        "decoder", [_input("z", z_mean, binary)], outputs=[triton.InferRequestedOutput("x_mean", binary_data=binary)]
    )
    np.testing.assert_allclose(result.as_numpy("x_mean"), serving_runtime.decode(z_mean), atol=1e-6, rtol=0)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["x_mean"]  # `outputs` selects


def test_infer_tritonclient_defaults_use_binary_data(client, serving_runtime):
    z = serving_runtime.sample_z(4, seed=1)
    result = client.infer("decoder", [_input("z", z, True)], model_version="1")  # all outputs, binary both ways
    outputs = result.get_response()["outputs"]
    assert [o["parameters"]["binary_data_size"] for o in outputs] == [4 * 784 * 4] * 2
    x_logits = serving_runtime.run("decoder", {"z": z})["x_logits"]
    np.testing.assert_allclose(result.as_numpy("x_mean"), serving_runtime.decode(z), atol=1e-6, rtol=0)
    np.testing.assert_allclose(result.as_numpy("x_logits"), x_logits, atol=1e-6, rtol=0)


def test_infer_errors_through_tritonclient(client):
    with pytest.raises(InferenceServerException, match=r"expects shape \[-1, 8\].*received \[2, 4\]"):
        client.infer("decoder", [_input("z", np.zeros((2, 4), np.float32), True)])
    with pytest.raises(InferenceServerException, match="has no version '2'"):
        client.infer("decoder", [_input("z", np.zeros((1, 8), np.float32), False)], model_version="2")


# Plain HTTP: JSON details tritonclient does not exercise


def test_infer_nested_data_id_parameters_and_output_choice(live_server, serving_runtime):
    z = serving_runtime.sample_z(2, seed=3)
    body = {
        "id": "abc",
        "parameters": {"priority": 3, "anything": "ignored"},
        "inputs": [{"name": "z", "shape": [2, 8], "datatype": "FP32", "data": z.tolist(), "parameters": {"x": 1}}],
        "outputs": [{"name": "x_logits"}],
    }
    status, headers, payload = request(live_server, "POST", "/v2/models/decoder/versions/1/infer", body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    response = json.loads(payload)
    assert (response["id"], response["model_name"], response["model_version"]) == ("abc", "decoder", "1")
    [output] = response["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("x_logits", "FP32", [2, 28, 28, 1])
    expected = serving_runtime.run("decoder", {"z": z}, ["x_logits"])["x_logits"]
    np.testing.assert_array_equal(np.array(output["data"], np.float32).reshape(output["shape"]), expected)


def test_binary_request_with_json_outputs(live_server, serving_runtime):
    z = serving_runtime.sample_z(3, seed=4)
    header = json.dumps(
        {
            "inputs": [
                {"name": "z", "shape": [3, 8], "datatype": "FP32", "parameters": {"binary_data_size": z.nbytes}}
            ],
            "outputs": [{"name": "x_mean", "parameters": {"binary_data": False}}],
        }
    ).encode()
    status, headers, payload = request(
        live_server,
        "POST",
        INFER,
        header + z.astype("<f4").tobytes(),
        {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert status == 200 and "Inference-Header-Content-Length" not in headers
    output = json.loads(payload)["outputs"][0]
    np.testing.assert_array_equal(np.array(output["data"], np.float32).reshape(3, 28, 28, 1), serving_runtime.decode(z))


def test_routes_and_versions(live_server):
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/v2/models/decoder",
        "/v2/models/encoder/versions/1/ready",
    ):
        assert request(live_server, "GET", path)[0] == 200, path
    assert json.loads(request(live_server, "GET", "/v2/health/ready")[2]) == {"ready": True}
    for path, message in (
        ("/v2/models/decoder/versions/2", "model 'decoder' has no version '2'; versions are ['1']."),
        ("/v2/models/decoder/versions/2/ready", "model 'decoder' has no version '2'; versions are ['1']."),
        ("/v2/models/nope", "unknown model 'nope'; models are ['encoder', 'decoder']."),
        ("/v3", "no route '/v3'; see /v2 (Open Inference Protocol) and /v1/generate, /v1/reconstruct."),
        ("/v2/models/decoder/explain", "no route '/v2/models/decoder/explain'; model routes end in '', '/ready' or '/infer'."),
    ):
        status, _, body = request(live_server, "GET", path)
        assert status == 404 and error_of(status, body) == message, (path, status, body)
    status, _, body = request(live_server, "POST", "/v2/models/decoder/versions/0/infer", _z_request(np.zeros((1, 8))))
    assert status == 404 and "no version '0'" in error_of(status, body)


# For people: /v1


def test_generate_png_and_json(live_server, serving_runtime):
    status, headers, png = request(live_server, "POST", "/v1/generate", {"n": 6, "seed": 11, "temperature": 0.8})
    assert status == 200 and headers["Content-Type"] == "image/png" and headers["X-Seed"] == "11"
    expected = serving_runtime.sample(6, seed=11, temperature=0.8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), images.grid(expected)[..., 0])
    assert request(live_server, "POST", "/v1/generate", {"n": 6, "seed": 11, "temperature": 0.8})[2] == png  # same seed
    for body, headers in (
        ({"n": 6, "seed": 11, "temperature": 0.8, "format": "json"}, {}),
        ({"n": 6, "seed": 11, "temperature": 0.8}, {"Accept": "application/json"}),
    ):
        status, response_headers, payload = request(live_server, "POST", "/v1/generate", body, headers)
        assert status == 200 and response_headers["Content-Type"] == "application/json"
        result = json.loads(payload)
        assert (result["seed"], result["shape"]) == (11, [6, 28, 28, 1])
        np.testing.assert_array_equal(np.array(result["images"], np.float32), expected)
    status, headers, _ = request(live_server, "POST", "/v1/generate", b"", {"Content-Type": "application/json"})
    assert status == 200 and int(headers["X-Seed"]) >= 0  # all defaults, a fresh seed reported back
    status, _, _ = request(
        live_server, "POST", "/v1/generate", b'{"n": 2}', {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 200  # what curl -d sends


def test_reconstruct_json_and_png_upload(live_server, serving_runtime, splits):
    x = splits.x_test[:3].astype(np.float32) / 255.0
    for images_json in (x.tolist(), x[..., 0].tolist()):  # with or without the channel axis
        status, _, payload = request(live_server, "POST", "/v1/reconstruct", {"images": images_json, "format": "json"})
        assert status == 200
        np.testing.assert_allclose(
            np.array(json.loads(payload)["images"]), serving_runtime.reconstruct(x), atol=1e-6, rtol=0
        )
    status, headers, png = request(live_server, "POST", "/v1/reconstruct", {"images": x.tolist()})
    assert status == 200 and headers["Content-Type"] == "image/png"
    upload = images.png_bytes(splits.x_test[0])
    status, _, payload = request(
        live_server, "POST", "/v1/reconstruct?format=json", upload, {"Content-Type": "image/png"}
    )
    assert status == 200
    np.testing.assert_allclose(
        np.array(json.loads(payload)["images"]), serving_runtime.reconstruct(x[:1]), atol=1e-6, rtol=0
    )
    status, headers, png = request(live_server, "POST", "/v1/reconstruct", upload, {"Content-Type": "image/png"})
    assert status == 200 and np.asarray(Image.open(io.BytesIO(png))).shape == (32, 32)


# Bad input: a JSON 4xx whose message names the problem


def _nan_body():
    return b'{"inputs": [{"name": "z", "shape": [1, 8], "datatype": "FP32", "data": [NaN, 0, 0, 0, 0, 0, 0, 0]}]}'


def _framed(declared, raw):
    """A binary-extension body for z [1, 8] declaring `declared` bytes and carrying `raw` -> (body, headers)."""
    header = json.dumps(
        {"inputs": [{"name": "z", "shape": [1, 8], "datatype": "FP32", "parameters": {"binary_data_size": declared}}]}
    ).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


JSON_TYPE = {"Content-Type": "application/json"}


def _z(**changes):
    """An infer body for the decoder: one tensor z [1, 8] of zeros, with `changes` to its fields."""
    return {"inputs": [{"name": "z", "shape": [1, 8], "datatype": "FP32", "data": [0] * 8, **changes}]}


OK = _z()
MAX_PLUS_ONE = _z(shape=[MAX_BATCH_SIZE + 1, 8], data=[0] * 8 * (MAX_BATCH_SIZE + 1))
PNG = {"Content-Type": "image/png"}
# fmt: off
BAD = [
    # (method, path, body, headers, status, part of the message)
    ("POST", INFER, b"{not json", JSON_TYPE, 400, "not valid JSON"),
    ("POST", INFER, b"\xff\xfe\x00", JSON_TYPE, 400, "not valid JSON"),
    ("POST", INFER, b"[1, 2]", JSON_TYPE, 400, "must be a JSON object"),
    ("POST", INFER, OK, {"Content-Type": "text/plain"}, 415, "Content-Type 'text/plain'"),
    ("POST", INFER, OK, {"Content-Encoding": "gzip"}, 415, "Content-Encoding"),
    ("POST", "/v2/models/critic/infer", OK, {}, 404, "unknown model 'critic'"),
    ("POST", INFER, _z(name="w"), {}, 400, "unknown input 'w'"),
    ("POST", INFER, {"inputs": []}, {}, 400, "non-empty list"),
    ("POST", INFER, {"outputs": [{"name": "x_mean"}]}, {}, 400, "'inputs' must be"),
    ("POST", INFER, _z(datatype="FP64"), {}, 400, "datatype FP32, received 'FP64'"),
    ("POST", INFER, _z(datatype="INT32"), {}, 400, "received 'INT32'"),
    ("POST", INFER, _z(shape=[2, 8], data=[0] * 15), {}, 400, "holds 16 values, 'data' has 15"),
    ("POST", INFER, _z(shape=[1, 4], data=[0] * 4), {}, 400, "expects shape [-1, 8]"),
    ("POST", INFER, _z(data=["0"] * 8), {}, 400, "numbers only"),
    ("POST", INFER, _z(data=[[0, 0], [0]]), {}, 400, "ragged"),
    ("POST", INFER, _z(shape="1,8"), {}, 400, "'shape' must be a list"),
    ("POST", INFER, {"inputs": [{"name": "z", "shape": [1, 8], "datatype": "FP32"}]}, {}, 400, "has no 'data'"),
    ("POST", INFER, _nan_body(), JSON_TYPE, 400, "NaN or Inf"),
    ("POST", INFER, _z(data=[1e39] + [0] * 7), {}, 400, "beyond float32's range"),
    ("POST", INFER, _z(shape=[0, 8], data=[]), {}, 400, "empty batch"),
    ("POST", INFER, MAX_PLUS_ONE, {}, 400, f"over this server's limit of {MAX_BATCH_SIZE}"),
    ("POST", INFER, {"inputs": OK["inputs"] * 2}, {}, 400, "appears twice"),
    ("POST", INFER, {**OK, "outputs": [{"name": "x_std"}]}, {}, 400, "unknown output 'x_std'"),
    ("POST", INFER, {**OK, "id": 5}, {}, 400, "'id' must be a string"),
    ("POST", INFER, {**OK, "parameters": {"binary_data_output": "yes"}}, {}, 400, "true or false"),
    ("POST", INFER, b'{"inputs": []}' + b"\0" * 8, {"Inference-Header-Content-Length": "99"}, 400, "body has 22 bytes"),
    ("POST", INFER, b"{}", {"Inference-Header-Content-Length": "two"}, 400, "must be an integer"),
    ("POST", INFER, *_framed(32, b"\0" * 31), 400, "declares 32 bytes of binary data; only 31 follow"),
    ("POST", INFER, *_framed(32, b"\0" * 33), 400, "33 bytes of binary data follow the JSON header, but the inputs"),
    ("POST", INFER, *_framed(16, b"\0" * 16), 400, "takes 32 bytes, binary_data_size is 16"),
    ("POST", INFER, b"x" * (MAX_BODY_BYTES + 1), JSON_TYPE, 413, f"limit of {MAX_BODY_BYTES}"),
    ("GET", INFER, None, {}, 405, "GET is not allowed"),
    ("PUT", "/v2/health/live", b"", {}, 405, "PUT is not allowed"),
    ("DELETE", "/v2/models/decoder", None, {}, 405, "DELETE is not allowed"),
    ("GET", "/nowhere", None, {}, 404, "no route '/nowhere'"),
    ("POST", "/v1/generate", {"n": 0}, {}, 400, "`n` must be >= 1"),
    ("POST", "/v1/generate", {"n": -3}, {}, 400, "`n` must be >= 1"),
    ("POST", "/v1/generate", {"n": 10**9}, {}, 400, f"n must be <= {MAX_BATCH_SIZE}"),
    ("POST", "/v1/generate", {"n": "5"}, {}, 400, "`n` must be an int"),
    ("POST", "/v1/generate", {"n": 2, "seed": -1}, {}, 400, "`seed` must be >= 0"),
    ("POST", "/v1/generate", {"n": 2, "temperature": "hot"}, {}, 400, "`temperature` must be a number"),
    ("POST", "/v1/generate", b'{"n": 2, "temperature": Infinity}', JSON_TYPE, 400, "`temperature` must be finite"),
    ("POST", "/v1/generate", {"n": 2, "format": "gif"}, {}, 400, "format must be 'png' or 'json'"),
    ("POST", "/v1/generate", {"count": 2}, {}, 400, "unknown keys ['count']"),
    ("POST", "/v1/generate", b"n=2", {"Content-Type": "text/plain"}, 415, "Content-Type"),
    ("POST", "/v1/reconstruct", {"images": [[[2.0] * 28] * 28]}, {}, 400, "pixels must be numbers in [0, 1]"),
    ("POST", "/v1/reconstruct", {"images": [[[0.5] * 27] * 28]}, {}, 400, "must be shaped [n, 28, 28, 1]"),
    ("POST", "/v1/reconstruct", {"images": []}, {}, 400, "must be shaped"),
    ("POST", "/v1/reconstruct", {"pictures": []}, {}, 400, "unknown keys ['pictures']"),
    ("POST", "/v1/reconstruct", b"\x89PNG\r\n\x1a\n broken", PNG, 400, "not an image file"),
    ("POST", "/v1/reconstruct", images.png_bytes(np.zeros((30, 30, 1), np.uint8)), PNG, 400, "30x30 pixels, the model"),
]
# fmt: on


@pytest.mark.parametrize(
    "method, path, body, headers, status, message", BAD, ids=[f"{i}-{b[-1][:30]}" for i, b in enumerate(BAD)]
)
def test_bad_input_gets_a_4xx_naming_the_problem(live_server, method, path, body, headers, status, message):
    got, _, payload = request(live_server, method, path, body, headers)
    assert got == status, payload
    assert message in error_of(got, payload)


def _raw(live_server, data):
    """Bytes straight onto a socket -> the whole answer (these all close the connection)."""
    with socket.create_connection(live_server.server_address[:2], timeout=10) as s:
        s.sendall(data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "data, status",
    [
        (b"POST /v2/models/decoder/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
        (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
        (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n", 400),
        (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n{", 413),  # answered at once
        (b"PATCH /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405),
        (b"BREW /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),  # not an HTTP method
        (b"GET /v2 HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),  # too many headers
        (b"GET /v2 HTTP/1.1\r\nX: " + b"y" * 70000 + b"\r\n\r\n", 431),  # too many header bytes
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /v2 HTTP/9.9\r\n\r\n", 400),
        (b"GET /v2\r\n\r\n", 400),  # HTTP/0.9
        (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
        (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}", 400),
        (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n{}", 400),
    ],
)
def test_malformed_http_is_answered(live_server, data, status):
    answer = _raw(live_server, data)
    if status is not None:
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[-1])["error"]
    assert request(live_server, "GET", "/v2/health/live")[0] == 200  # and the server goes on


# Generated payloads: never a 5xx, always JSON


FINITE = st.floats(allow_nan=False, allow_infinity=False, width=32)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)
SLOW_OK = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_answer(status, body):
    assert status < 500, body[:300]
    if status >= 400:
        error_of(status, body)


@SLOW_OK
@given(body=JSON_VALUES, model=st.sampled_from(["encoder", "decoder"]))
def test_fuzz_any_json(live_server, body, model):
    _check_answer(*request(live_server, "POST", f"/v2/models/{model}/infer", json.dumps(body).encode(), JSON_TYPE)[::2])


TENSOR = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["z", "x", "w"]),
        "datatype": st.sampled_from(["FP32", "FP32", "FP64", "BYTES"]),
        "shape": st.lists(st.integers(0, 9), min_size=0, max_size=3) | st.just([2, 8]),
        "data": st.lists(FINITE | st.sampled_from([float("nan"), "a", None, True, [1.0]]), max_size=20)
        | st.lists(FINITE, min_size=16, max_size=16),
    },
    optional={"parameters": st.dictionaries(st.sampled_from(["binary_data_size", "other"]), JSON_VALUES, max_size=2)},
)


@SLOW_OK
@given(
    inputs=st.lists(TENSOR, min_size=0, max_size=2),
    outputs=st.none()
    | st.lists(st.fixed_dictionaries({"name": st.sampled_from(["x_mean", "x_logits", "z"])}), max_size=2),
)
def test_fuzz_near_valid_infer_requests(live_server, serving_runtime, inputs, outputs):
    body = {"inputs": inputs} if outputs is None else {"inputs": inputs, "outputs": outputs}
    status, _, payload = request(live_server, "POST", INFER, json.dumps(body).encode(), JSON_TYPE)
    _check_answer(status, payload)
    if status == 200:  # then it was a valid request: the answer must be right
        z = np.array(inputs[0]["data"], np.float32).reshape(inputs[0]["shape"])
        for output in json.loads(payload)["outputs"]:
            expected = serving_runtime.run("decoder", {"z": z}, [output["name"]])[output["name"]]
            np.testing.assert_array_equal(np.array(output["data"], np.float32).reshape(output["shape"]), expected)


@SLOW_OK
@given(
    header=st.binary(max_size=40),
    tail=st.binary(max_size=40),
    length=st.integers(-5, 100) | st.text("0123456789 +-x", max_size=3),
)
def test_fuzz_binary_framing(live_server, header, tail, length):
    headers = {"Inference-Header-Content-Length": str(length), "Content-Type": "application/octet-stream"}
    _check_answer(*request(live_server, "POST", INFER, header + tail, headers)[::2])


ROUTE_PARTS = ["v2", "v1", "models", "decoder", "encoder", "versions", "1", "2", "ready", "infer", "generate"]


@SLOW_OK
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "HEAD", "OPTIONS", "PATCH"]),
    parts=st.lists(
        st.sampled_from(ROUTE_PARTS + ["health", "live", "%", "%2F", "..", "", "x?format=json"]), max_size=6
    ),
)
def test_fuzz_routes(live_server, method, parts):
    status, _, payload = request(live_server, method, "/" + "/".join(parts), b"{}", JSON_TYPE)
    assert status < 500, payload[:300]
    if status >= 400 and method != "HEAD":  # a HEAD answer has no body
        error_of(status, payload)


@SLOW_OK
@given(
    body=st.dictionaries(
        st.sampled_from(["n", "seed", "temperature", "format"]), JSON_VALUES | st.integers(-3, 70), max_size=4
    )
)
def test_fuzz_generate(live_server, body):
    status, headers, payload = request(live_server, "POST", "/v1/generate", json.dumps(body).encode(), JSON_TYPE)
    _check_answer(status, payload)
    if status == 200:
        assert headers["Content-Type"] in ("image/png", "application/json")


# Generated well-shaped tensors holding NaN, Inf and huge values: a 400 naming the tensor, or the right 200

SPECIAL = [float("nan"), float("inf"), -float("inf"), 3.4e38, -3.4e38, 3.5e38, 1e39, -1e300, 1e308,
           2**63, -(2**64), 2**70, 10**40, -(10**40), 10**400, -(10**400)]
# Ints up to 2**53 only, besides SPECIAL's: beyond it an int64 rounds to float32 directly or through float64
# (by whether floats share its list), and the two may differ in the last bit.
NUMBER = FINITE | st.floats() | st.sampled_from(SPECIAL) | st.integers(-(2**53), 2**53) | st.floats(0, 1)


def _fp64(values):
    """JSON numbers as float64 (an int beyond its range: +-inf)."""
    out = []
    for v in values:
        try:
            out.append(float(v))
        except OverflowError:  # an int beyond float64
            out.append(math.inf if v > 0 else -math.inf)
    return np.asarray(out, np.float64)


def _fp32(values):
    """JSON numbers as an FP32 tensor means them: rounded to float32; beyond its range (or NaN, Inf): not finite."""
    with np.errstate(over="ignore"):
        return _fp64(values).astype(np.float32)


def _tensor_answer(live_server, model, name, values, shape, binary):
    """POSTs one input tensor (JSON numbers, or their float32 bytes) -> (status, payload, the float32 tensor)."""
    tensor = _fp32(values).reshape(shape)
    if binary:
        header = json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": "FP32",
                                         "parameters": {"binary_data_size": tensor.nbytes}}]}).encode()
        body = header + tensor.astype("<f4").tobytes()
        headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    else:  # json.dumps writes NaN, Infinity and big ints as they are; the server's JSON parser takes them
        body = json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": "FP32", "data": values}]}).encode()
        headers = JSON_TYPE
    status, _, payload = request(live_server, "POST", f"/v2/models/{model}/infer", body, headers)
    return status, payload, tensor


def _check_tensor_answer(serving_runtime, model, name, status, payload, tensor):
    if not np.isfinite(tensor).all():
        message = error_of(status, payload)
        assert status == 400 and f"input {name!r} contains NaN or Inf" in message, (status, message)
        return
    assert status == 200, payload[:300]  # finite in float32: the model takes them, and the answer is its own
    outputs = json.loads(payload)["outputs"]
    expected = serving_runtime.sessions[model].run([o["name"] for o in outputs], {name: tensor})
    for output, want in zip(outputs, expected, strict=True):
        np.testing.assert_array_equal(np.array(output["data"], np.float32).reshape(output["shape"]), want)


@SLOW_OK
@example(values=[float("nan")] + [0.0] * 15, binary=True)
@example(values=[0.0] * 15 + [float("-inf")], binary=False)
@example(values=[10**400] + [0] * 15, binary=False)
@example(values=[2**70] + [0.5] * 15, binary=False)
@given(values=st.lists(NUMBER, min_size=16, max_size=16), binary=st.booleans())
def test_fuzz_decoder_tensor_values(live_server, serving_runtime, values, binary):
    answer = _tensor_answer(live_server, "decoder", "z", values, [2, 8], binary)
    _check_tensor_answer(serving_runtime, "decoder", "z", *answer)


@SLOW_OK
@given(changes=st.dictionaries(st.integers(0, 783), NUMBER, min_size=1, max_size=4), binary=st.booleans())
def test_fuzz_encoder_tensor_values(live_server, serving_runtime, changes, binary):
    values = [0.5] * 784
    for i, v in changes.items():
        values[i] = v
    answer = _tensor_answer(live_server, "encoder", "x", values, [1, 28, 28, 1], binary)
    _check_tensor_answer(serving_runtime, "encoder", "x", *answer)


@SLOW_OK
@given(changes=st.dictionaries(st.integers(0, 783), NUMBER, min_size=1, max_size=4))
def test_fuzz_reconstruct_pixel_values(live_server, serving_runtime, changes):
    values = [0.5] * 784
    for i, v in changes.items():
        values[i] = v
    images_json = [[values[r * 28 : (r + 1) * 28] for r in range(28)]]  # [1, 28, 28]: grey, no channel axis
    status, _, payload = request(live_server, "POST", "/v1/reconstruct", {"images": images_json, "format": "json"})
    if all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in values):
        assert status == 200, payload[:300]
        x = np.asarray(values, np.float32).reshape(1, 28, 28, 1)
        np.testing.assert_array_equal(np.array(json.loads(payload)["images"], np.float32), serving_runtime.reconstruct(x))
        return
    message = error_of(status, payload)
    assert status == 400 and "'images'" in message and "pixels must be numbers in [0, 1]" in message, message
    if not np.isfinite(_fp64(values)).all():  # (pixels are judged before they become float32)
        assert "NaN or Inf" in message, message


@SLOW_OK
@example(temperature=10**400, fmt="json")
@example(temperature=float("nan"), fmt="png")
@example(temperature=1e39, fmt="png")
@given(temperature=NUMBER, fmt=st.sampled_from(["json", "png"]))
def test_fuzz_generate_temperatures(live_server, serving_runtime, temperature, fmt):
    body = json.dumps({"n": 2, "seed": 3, "temperature": temperature, "format": fmt}).encode()
    status, headers, payload = request(live_server, "POST", "/v1/generate", body, JSON_TYPE)
    t = _fp32([temperature]).astype(np.float64)[0]  # NaN and Inf stay, beyond float32 becomes Inf
    if status != 200 or not (math.isfinite(t) and t >= 0):
        # NaN, Inf, negative, beyond float32 or over the runtime's limit: a 400 naming the temperature
        # (or, were there no limit, the prior samples it overflowed).
        message = error_of(status, payload)
        assert status == 400 and ("`temperature` must be" in message or "input 'z' contains NaN or Inf" in message)
        assert (math.isfinite(t) and t >= 0) or "`temperature` must be" in message, message
        return
    if fmt == "json":
        expected = serving_runtime.sample(2, 3, float(temperature))
        np.testing.assert_array_equal(np.array(json.loads(payload)["images"], np.float32), expected)
    else:
        assert headers["Content-Type"] == "image/png" and payload[:8] == b"\x89PNG\r\n\x1a\n"


# Concurrent clients


def test_concurrent_clients_get_their_own_answers(live_server, serving_runtime):
    n_threads, per_thread = 8, 25
    cases = [serving_runtime.sample_z(1 + i % 5, seed=i) for i in range(n_threads * per_thread)]
    expected = [serving_runtime.decode(z) for z in cases]
    failures = []
    served_before = _decoder_infers(live_server)

    def work(t):
        client = triton.InferenceServerClient(url=address(live_server))  # keep-alive connection per thread
        try:
            for i in range(t, len(cases), n_threads):
                if i % 3 == 0:  # plain JSON on a fresh connection
                    status, _, payload = request(
                        live_server, "POST", INFER, _z_request(cases[i], outputs=[{"name": "x_mean"}])
                    )
                    output = json.loads(payload)["outputs"][0]
                    got = np.array(output["data"], np.float32).reshape(output["shape"])
                else:
                    got = client.infer("decoder", [_input("z", cases[i], i % 2 == 0)]).as_numpy("x_mean")
                if not np.allclose(got, expected[i], atol=1e-6, rtol=0):
                    failures.append(i)
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(repr(e))
        finally:
            client.close()

    # No wall-clock bound on the work (a loaded machine may take its time), only on the wait: one deadline for all.
    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 300
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "clients still waiting after 300 s"
    assert not failures, failures[:5]
    assert _decoder_infers(live_server) - served_before == len(cases)  # each answered once, counted in /metrics


def _decoder_infers(server):
    """kvae_requests_total of the decoder's successful HTTP infers, from /metrics."""
    status, _, text = request(server, "GET", "/metrics")
    assert status == 200
    return metric_sample(text, "kvae_requests_total", protocol="http", endpoint="infer", model="decoder", code="200")
