"""The Open Inference Protocol over gRPC on 127.0.0.1: a real server (HTTP and gRPC in one) and real clients.

tritonclient.grpc for what it can send; Triton's raw stub (service_pb2_grpc) for the requests
tritonclient refuses to build (typed contents, byte counts that do not match, missing inputs).
Answers must equal the HTTP path's and runtime.run's; bad input is INVALID_ARGUMENT or
NOT_FOUND with a message naming the problem, never INTERNAL or UNKNOWN.
"""

import json
import threading
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

pytest.register_assert_rewrite("tests.serving_fixtures")  # before the import below, so its asserts explain failures
from tests.serving_fixtures import MAX_BATCH_SIZE, MAX_BODY_BYTES  # noqa: E402

pytest_plugins = ["tests.serving_fixtures"]

TIMEOUT = 30  # seconds: every client call is bounded
LATENT = 8  # conftest's tiny_run
OK, INVALID, NOT_FOUND = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


def _serve(runtime):
    from kvae_serving.server import make_server

    srv = make_server(runtime, "127.0.0.1", 0, quiet=True, grpc_port=0, max_batch_size=MAX_BATCH_SIZE,
                      max_body_bytes=MAX_BODY_BYTES)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    return srv, thread


@pytest.fixture(scope="module")
def server(serving_runtime):
    srv, thread = _serve(serving_runtime)
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(10)


@pytest.fixture(scope="module")
def client(server):
    c = triton.InferenceServerClient(url=f"127.0.0.1:{server.grpc_address[1]}")
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(server):
    """Triton's own stub on a plain channel, for requests tritonclient will not build."""
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_address[1]}")
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _call(stub, request):
    """ModelInfer through the raw stub -> (status code, response or None, message)."""
    try:
        return OK, stub.ModelInfer(request, timeout=TIMEOUT), ""
    except grpc.RpcError as e:
        return e.code(), None, e.details()


def _request(model, inputs, raw=True, **fields):
    """{name: float32 array} -> ModelInferRequest, values in raw_input_contents or contents.fp32_contents."""
    request = pb.ModelInferRequest(model_name=model, **fields)
    for name, a in inputs.items():
        tensor = request.inputs.add(name=name, datatype="FP32", shape=a.shape)
        if raw:
            request.raw_input_contents.append(np.ascontiguousarray(a, "<f4").tobytes())
        else:
            tensor.contents.fp32_contents.extend(a.ravel().tolist())
    return request


def _outputs(response):
    """A ModelInferResponse's raw outputs -> {name: array}."""
    return {
        t.name: np.frombuffer(raw, "<f4").reshape(t.shape)
        for t, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def _inputs(runtime, model, n=3, seed=0):
    """Valid inputs for `model`: n rows of uniform [0, 1) values (pixels, latents, noise and mixtures alike)."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.uniform(size=[n if d == -1 else d for d in t["shape"]]).astype(np.float32)
        for name, t in runtime.models[model]["inputs"].items()
    }


def _http_infer(srv, model, inputs):
    """The same inputs through HTTP JSON -> {name: array}."""
    body = {"inputs": [{"name": k, "datatype": "FP32", "shape": list(v.shape), "data": v.ravel().tolist()}
                       for k, v in inputs.items()]}
    request = urllib.request.Request(f"{srv.url}/v2/models/{model}/infer", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        answer = json.loads(response.read())
    return {t["name"]: np.asarray(t["data"], np.float32).reshape(t["shape"]) for t in answer["outputs"]}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shape == b[name].shape, name
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-6, err_msg=name)


# Health and metadata


def test_health_and_metadata(client, serving_runtime):
    assert client.is_server_live(client_timeout=TIMEOUT) and client.is_server_ready(client_timeout=TIMEOUT)
    for name in ("encoder", "decoder"):
        assert client.is_model_ready(name, client_timeout=TIMEOUT)
        assert client.is_model_ready(name, "1", client_timeout=TIMEOUT)
        metadata = client.get_model_metadata(name, client_timeout=TIMEOUT)
        assert (metadata.name, list(metadata.versions), metadata.platform) == (name, ["1"], "onnxruntime_onnx")
        for kind in ("inputs", "outputs"):
            sent = [(t.name, t.datatype, list(t.shape)) for t in getattr(metadata, kind)]
            assert sent == [(t["name"], t["datatype"], t["shape"]) for t in serving_runtime.models[name][kind].values()]
    assert list(metadata.inputs[0].shape) == [-1, LATENT]  # the decoder's z; -1: any batch size
    server = client.get_server_metadata(client_timeout=TIMEOUT)
    assert server.name == "kvae" and server.version and "binary_tensor_data" in server.extensions


@pytest.mark.parametrize(
    "call, code, message",
    [
        (lambda c: c.is_model_ready("critic", client_timeout=TIMEOUT), "NOT_FOUND", "unknown model 'critic'"),
        (lambda c: c.is_model_ready("decoder", "2", client_timeout=TIMEOUT), "NOT_FOUND", "no version '2'"),
        (lambda c: c.get_model_metadata("critic", client_timeout=TIMEOUT), "NOT_FOUND", "unknown model 'critic'"),
        (lambda c: c.get_model_metadata("decoder", "7", client_timeout=TIMEOUT), "NOT_FOUND", "no version '7'"),
    ],
)
def test_unknown_models_and_versions(client, call, code, message):
    with pytest.raises(InferenceServerException) as e:
        call(client)
    assert e.value.status() == f"StatusCode.{code}" and message in e.value.message()


def test_readiness_follows_the_app(server, client):
    server.app.ready = False  # what SIGTERM does first
    try:
        assert not client.is_server_ready(client_timeout=TIMEOUT)
        assert client.is_server_live(client_timeout=TIMEOUT)
    finally:
        server.app.ready = True
    assert client.is_server_ready(client_timeout=TIMEOUT)


# Inference: the same numbers as HTTP and the runtime


def _triton_inputs(inputs):
    tensors = []
    for name, a in inputs.items():
        tensors.append(triton.InferInput(name, list(a.shape), "FP32"))
        tensors[-1].set_data_from_numpy(a)  # raw_input_contents, tritonclient's only way
    return tensors


@pytest.mark.parametrize("model", ["encoder", "decoder"])
def test_infer_matches_http_and_runtime(server, client, stub, serving_runtime, model):
    inputs = _inputs(serving_runtime, model)
    result = client.infer(model, _triton_inputs(inputs), request_id="req-7", client_timeout=TIMEOUT)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (model, "1", "req-7")
    names = list(serving_runtime.models[model]["outputs"])
    got = {name: result.as_numpy(name) for name in names}
    _assert_same(got, serving_runtime.run(model, inputs))
    _assert_same(got, _http_infer(server, model, inputs))
    code, typed, _ = _call(stub, _request(model, inputs, raw=False))  # contents.fp32_contents
    assert code == OK
    _assert_same(_outputs(typed), got)


def test_infer_vamp_prior_models(vamp_runtime):
    srv, thread = _serve(vamp_runtime)
    c = triton.InferenceServerClient(url=f"127.0.0.1:{srv.grpc_address[1]}")
    try:
        for model in ("prior", "log_prior", "encoder", "decoder"):
            assert c.is_model_ready(model, client_timeout=TIMEOUT)
            inputs = _inputs(vamp_runtime, model, n=4)
            result = c.infer(model, _triton_inputs(inputs), client_timeout=TIMEOUT)
            got = {name: result.as_numpy(name) for name in vamp_runtime.models[model]["outputs"]}
            _assert_same(got, vamp_runtime.run(model, inputs))
            _assert_same(got, _http_infer(srv, model, inputs))
    finally:
        c.close()
        srv.shutdown()
        srv.server_close()
        thread.join(10)


def test_requested_outputs_only(client, serving_runtime):
    inputs = _inputs(serving_runtime, "encoder")
    wanted = [triton.InferRequestedOutput("z_log_var")]
    result = client.infer("encoder", _triton_inputs(inputs), outputs=wanted, client_timeout=TIMEOUT)
    assert [t.name for t in result.get_response().outputs] == ["z_log_var"]
    assert result.as_numpy("z_mean") is None
    np.testing.assert_allclose(result.as_numpy("z_log_var"), serving_runtime.run("encoder", inputs)["z_log_var"],
                               rtol=0, atol=1e-6)


# Bad input: INVALID_ARGUMENT or NOT_FOUND, naming the problem


def _z(n=2, value=0.5):
    return {"z": np.full((n, LATENT), value, np.float32)}


def _with(request, edit):
    edit(request)
    return request


BAD = {  # id -> (request, code, part of the message)
    "wrong datatype": (_with(_request("decoder", _z()), lambda r: setattr(r.inputs[0], "datatype", "FP64")),
                       INVALID, "has datatype FP32, received 'FP64'"),
    "wrong shape": (_request("decoder", {"z": np.zeros((2, LATENT + 1), np.float32)}), INVALID, "expects shape"),
    "negative dim": (_with(_request("decoder", _z()), lambda r: r.inputs[0].shape.__setitem__(0, -2)),
                     INVALID, "list of non-negative ints"),
    "batch over the limit": (_request("decoder", _z(MAX_BATCH_SIZE + 1)), INVALID,
                             f"over this server's limit of {MAX_BATCH_SIZE}"),
    "NaN": (_request("decoder", _z(value=np.nan)), INVALID, "NaN or Inf"),
    "Inf typed": (_request("decoder", _z(value=np.inf), raw=False), INVALID, "NaN or Inf"),
    "unknown model": (_request("critic", _z()), NOT_FOUND, "unknown model 'critic'"),
    "long unknown model": (_request("m" * 100_000, _z()), NOT_FOUND, "unknown model 'mmm"),
    "long unknown input": (_with(_request("decoder", _z()), lambda r: setattr(r.inputs[0], "name", "w" * 100_000)),
                           INVALID, "unknown input 'www"),
    "unknown version": (_request("decoder", _z(), model_version="2"), NOT_FOUND, "no version '2'"),
    "unknown input": (_with(_request("decoder", _z()), lambda r: setattr(r.inputs[0], "name", "w")),
                      INVALID, "unknown input 'w'"),
    "raw byte count": (_with(_request("decoder", _z()), lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 60)),
                       INVALID, "takes 64 bytes, raw_input_contents[0] has 60"),
    "typed value count": (_with(_request("decoder", _z(), raw=False),
                                lambda r: r.inputs[0].contents.fp32_contents.append(1.0)),
                          INVALID, "holds 16 values, contents.fp32_contents has 17"),
    "raw and typed": (_with(_request("decoder", _z()),
                            lambda r: r.inputs[0].contents.fp32_contents.extend([0] * 16)),
                      INVALID, "both contents and raw_input_contents[0]"),
    "other contents": (_with(_request("decoder", _z(), raw=False),
                             lambda r: r.inputs[0].contents.int_contents.extend([0] * 16)),
                       INVALID, "send contents.fp32_contents"),
    "raw entries": (_with(_request("decoder", _z()), lambda r: r.raw_input_contents.append(b"")),
                    INVALID, "raw_input_contents has 2 entries for 1 inputs"),
    "missing input": (pb.ModelInferRequest(model_name="decoder"), INVALID, "missing inputs ['z']"),
    "duplicate input": (_with(_request("decoder", _z()), lambda r: (r.inputs.append(r.inputs[0]),
                                                                    r.raw_input_contents.append(b"\0" * 64))),
                        INVALID, "input 'z' appears twice"),
    "unknown output": (_with(_request("decoder", _z()), lambda r: r.outputs.add(name="x_std")),
                       INVALID, "unknown output 'x_std'"),
    "duplicate output": (_with(_request("decoder", _z()), lambda r: [r.outputs.add(name="x_mean") for _ in "ab"]),
                         INVALID, "output 'x_mean' is requested twice"),
    "shared memory": (_with(_request("decoder", _z()),
                            lambda r: r.inputs[0].parameters["shared_memory_region"].CopyFrom(pb.InferParameter(string_param="r"))),
                      INVALID, "not supported"),
    "empty batch": (_request("decoder", {"z": np.zeros((0, LATENT), np.float32)}), INVALID, "empty batch"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_say_why(stub, case):
    request, expected, message = BAD[case]
    code, _, details = _call(stub, request)
    assert code == expected and message in details, (code, details)


def test_bad_requests_through_tritonclient(client):
    z = np.zeros((MAX_BATCH_SIZE + 1, LATENT), np.float32)
    with pytest.raises(InferenceServerException) as e:
        client.infer("decoder", _triton_inputs({"z": z}), client_timeout=TIMEOUT)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "over this server's limit" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        client.infer("decoder", _triton_inputs(_z()), model_version="3", client_timeout=TIMEOUT)
    assert e.value.status() == "StatusCode.NOT_FOUND" and "no version '3'" in e.value.message()


def test_message_over_the_size_limit_is_refused(stub, client):
    request = pb.ModelInferRequest(model_name="decoder")
    request.inputs.add(name="z", datatype="FP32", shape=[MAX_BATCH_SIZE, LATENT])
    request.raw_input_contents.append(b"\0" * (MAX_BODY_BYTES + 1))
    code, _, details = _call(stub, request)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    assert client.is_server_live(client_timeout=TIMEOUT)  # and the server carries on


def test_metrics_count_grpc_requests(server, client, stub):
    client.is_server_live(client_timeout=TIMEOUT)
    client.infer("decoder", _triton_inputs(_z()), client_timeout=TIMEOUT)
    _call(stub, _request("critic", _z()))  # NOT_FOUND: counted under 404, with no model label
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=TIMEOUT) as response:
        text = response.read().decode()
    lines = [line for line in text.splitlines()
             if line.startswith("kvae_requests_total{") and 'protocol="grpc"' in line]
    assert any('endpoint="live"' in line and 'code="200"' in line for line in lines), lines
    assert any('endpoint="infer"' in line and 'model="decoder"' in line and 'code="200"' in line for line in lines)
    assert any('endpoint="infer"' in line and 'model=""' in line and 'code="404"' in line for line in lines), lines
    assert "critic" not in text
    counts = [line for line in text.splitlines() if line.startswith("kvae_batch_size_count{")]
    assert any('protocol="grpc"' in line and 'model="decoder"' in line for line in counts), counts


# Fuzzing: NaN, Inf and huge values, raw and typed


@settings(max_examples=50, deadline=None)
@example(rows=[[3.4e38] * LATENT, [-3.4e38] * LATENT], raw=True)  # huge but finite: decoded like any other
@example(rows=[[3.4e38] * LATENT], raw=False)
@example(rows=[[0.0] * (LATENT - 1) + [np.inf]], raw=True)
@example(rows=[[np.nan] * LATENT], raw=False)
@given(
    rows=st.lists(st.lists(st.floats(width=32), min_size=LATENT, max_size=LATENT), min_size=1, max_size=4),
    raw=st.booleans(),
)
def test_fuzz_decoder_values(stub, serving_runtime, rows, raw):
    z = np.array(rows, np.float32)
    code, response, details = _call(stub, _request("decoder", {"z": z}, raw=raw))
    if not np.isfinite(z).all():
        assert code == INVALID and "NaN or Inf" in details, (code, details)
        return
    assert code == OK, (code, details)
    got = _outputs(response)
    assert all(np.isfinite(a).all() for a in got.values())
    _assert_same(got, serving_runtime.run("decoder", {"z": z}))
