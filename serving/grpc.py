"""The Open Inference Protocol v2 over gRPC (service inference.GRPCInferenceService), beside the HTTP one.

The stubs are Triton's own: tritonclient ships the Python code protoc generated from
Triton's grpc_service.proto (tritonclient.grpc.service_pb2, service_pb2_grpc), the
definition every OIP gRPC client is built against. Importing them keeps this server
and tritonclient on the same wire format without a copy of the .proto files here,
and without protoc in the build.

What is answered: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata
and ModelInfer, for every model of the artifacts (encoder and decoder; prior and
log_prior for a VampPrior or an HVAE); the other methods answer UNIMPLEMENTED. ModelInfer reads
FP32 inputs from raw_input_contents (little-endian bytes, one entry per input, in
order) or from contents.fp32_contents, and answers in raw_output_contents, as Triton
does. Every input passes the same checks as on HTTP (kvae_serving.protocol.check_*),
with the same limits and messages. kvae's errors keep their message and take the gRPC
code of their HTTP status (400 INVALID_ARGUMENT, 404 NOT_FOUND); anything else is a
bug: INTERNAL, with the traceback on stderr.
"""

import functools
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from . import protocol
from .errors import InputError, KvaeError, NotFoundError
from .manifest import MODEL_VERSION

MAX_CONCURRENT_RPCS = 1024  # calls in progress or queued for a thread; more answer RESOURCE_EXHAUSTED at once
MAX_SEND_BYTES = 2**31 - 1  # protobuf's limit for one message; the batch limit bounds a response well below it
UNSUPPORTED = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset", "classification")
CODES = {  # HTTP status of a kvae error kind -> gRPC status code; any other status is INTERNAL
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


def make_grpc_server(app, host, port, threads=4):
    """A bound, not yet started grpc.Server answering `app` on host:port (0: a free port) -> (server, port).

    SO_REUSEPORT stays on (grpc's default on Linux, set here explicitly): every worker process binds
    the same port, which the parent holds reserved. Requests over app.max_body_bytes are refused by
    grpc itself (RESOURCE_EXHAUSTED) before they are read.
    """
    options = [
        ("grpc.so_reuseport", 1),
        ("grpc.max_receive_message_length", app.max_body_bytes),
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
    ]
    server = grpc.server(ThreadPoolExecutor(threads, thread_name_prefix="kvae-grpc"), options=options,
                         maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Service(app), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:  # grpc's "Failed to bind": an OSError is what `kvae serve` reports in one line
        raise OSError(f"gRPC cannot listen on {address}: {e}") from None
    return server, bound


def _rpc(endpoint):
    """Wraps a Service method `(self, request) -> (response, batch)`: errors -> gRPC status, and metrics.

    The metrics label the model only once it is known to exist, so that clients cannot grow the label set.
    """

    def wrap(method):
        @functools.wraps(method)
        def handler(self, request, context):
            start, batch, failure = time.perf_counter(), None, None
            try:
                response, batch = method(self, request)
                status = 200
            except KvaeError as e:  # the family's HTTP status -> its gRPC code, with kvae's message
                status, failure = e.status, (CODES.get(e.status, grpc.StatusCode.INTERNAL), str(e))
            except Exception as e:  # a bug: answer, log, keep serving
                traceback.print_exc(file=sys.stderr)
                status = 500
                failure = grpc.StatusCode.INTERNAL, f"internal error ({type(e).__name__}); see the server log."
            if self.app.metrics is not None:
                model = getattr(request, "model_name", None) or getattr(request, "name", "")
                model = model if model in self.app.runtime.models else ""
                self.app.metrics.observe("grpc", endpoint, model, status, time.perf_counter() - start, batch)
            if failure is not None:
                context.abort(*failure)  # raises: grpc answers with this status and message
            return response

        return handler

    return wrap


class Service(service_pb2_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over an App (kvae_serving.app.App)."""

    def __init__(self, app):
        self.app = app

    @_rpc("live")
    def ServerLive(self, request):
        return pb.ServerLiveResponse(live=True), None

    @_rpc("ready")
    def ServerReady(self, request):
        """False while the server drains after SIGTERM (app.ready), so that load balancers stop sending."""
        return pb.ServerReadyResponse(ready=self.app.ready), None

    @_rpc("model_ready")
    def ModelReady(self, request):
        self._spec(request.name, request.version)
        return pb.ModelReadyResponse(ready=True), None

    @_rpc("server_metadata")
    def ServerMetadata(self, request):
        metadata = self.app.server_metadata()
        return pb.ServerMetadataResponse(**{k: metadata[k] for k in ("name", "version", "extensions")}), None

    @_rpc("model_metadata")
    def ModelMetadata(self, request):
        """Tensors as the manifest has them: shape with -1 for the batch dimension."""
        self._spec(request.name, request.version)
        metadata = self.app.model_metadata(request.name)
        tensors = {
            kind: [pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                   for t in metadata[kind]]
            for kind in ("inputs", "outputs")
        }
        return pb.ModelMetadataResponse(
            name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"], **tensors
        ), None

    @_rpc("infer")
    def ModelInfer(self, request):
        """Inputs -> the requested outputs (all of the model's when none are named), in raw_output_contents."""
        spec = self._spec(request.model_name, request.model_version)
        inputs = read_inputs(request, spec, self.app.max_batch_size)
        outputs = []
        for t in request.outputs:
            _supported(t.parameters, f"output {t.name!r}")
            protocol.check_output(t.name, outputs, spec)
            outputs.append(t.name)
        results = self.app.runtime.run(request.model_name, inputs, outputs or list(spec["outputs"]))
        response = pb.ModelInferResponse(model_name=request.model_name, model_version=MODEL_VERSION, id=request.id)
        for name, array in results.items():
            datatype = spec["outputs"][name]["datatype"]
            response.outputs.add(name=name, datatype=datatype, shape=array.shape)
            response.raw_output_contents.append(np.ascontiguousarray(array, protocol.NUMPY[datatype]).tobytes())
        return response, protocol.batch_size(inputs)

    def _spec(self, name, version):
        """The model's {"inputs", "outputs"} spec, or NotFoundError for an unknown model or version ("": the latest)."""
        models = self.app.runtime.models
        if name not in models:  # names cut short: a status message travels in a header, which is small
            raise NotFoundError(f"unknown model {protocol._short(name)}; models are {list(models)}.")
        if version not in ("", MODEL_VERSION):
            raise NotFoundError(
                f"model {name!r} has no version {protocol._short(version)}; versions are [{MODEL_VERSION!r}]."
            )
        return models[name]


def read_inputs(request, spec, max_batch_size):
    """A ModelInferRequest's inputs -> {name: array shaped as sent}, after HTTP's checks (protocol.check_*).

    raw_input_contents, when used, holds one entry per input, in the order of `inputs`.
    """
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InputError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input, in the order of 'inputs', or none."
        )
    inputs = {}
    for i, t in enumerate(request.inputs):
        array = read_tensor(t, raw[i] if raw else None, i, spec, max_batch_size)
        protocol.check_new_input(t.name, inputs)
        inputs[t.name] = array
    protocol.check_all_inputs(inputs, spec)
    return inputs


def read_tensor(t, raw, i, spec, max_batch_size):
    """One InferInputTensor (+ its raw_input_contents entry, or None) -> array of t.shape, or InputError.

    Only FP32 models exist (kvae_contract.artifacts), so the typed values are contents.fp32_contents.
    """
    shape = list(t.shape)
    count = protocol.check_tensor(t.name, t.datatype, shape, spec, max_batch_size)
    _supported(t.parameters, f"input {t.name!r}")
    dtype = protocol.NUMPY[t.datatype]
    typed = [field.name for field, _ in t.contents.ListFields()]  # the contents fields that hold values
    if raw is not None:
        if typed:
            raise InputError(f"input {t.name!r} has both contents and raw_input_contents[{i}]; send one.")
        protocol.check_raw_size(t.name, t.datatype, shape, count, len(raw), f"raw_input_contents[{i}] has {len(raw)}")
        return np.frombuffer(raw, dtype).reshape(shape)
    if typed not in ([], ["fp32_contents"]):
        raise InputError(f"input {t.name!r} is {t.datatype}: send contents.fp32_contents, received {typed}.")
    values = t.contents.fp32_contents
    if len(values) != count:
        raise InputError(
            f"input {t.name!r}: shape {shape} holds {count} values, contents.fp32_contents has {len(values)}."
        )
    return np.array(values, dtype).reshape(shape)


def _supported(parameters, what):
    """Refuses Triton's tensor parameters that would change the answer (shared-memory regions this server
    cannot see, classification instead of values) rather than ignore them; others are ignored."""
    refused = sorted(key for key in parameters if key in UNSUPPORTED)
    if refused:
        raise InputError(f"{what}: parameters {refused} are not supported; send and receive the values in messages.")
