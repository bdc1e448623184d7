"""Open Inference Protocol (v2) infer requests and responses: JSON tensors and the binary tensor data extension.

A request body is a JSON object, optionally followed by raw tensor bytes; the
`Inference-Header-Content-Length` header then gives the JSON part's length, and
each binary input says its byte count in `parameters.binary_data_size`, in the
order of `inputs`. Responses put an output in binary the same way when the
request asks for it (`outputs[i].parameters.binary_data` or the request's
`parameters.binary_data_output`), which is what tritonclient does by default.

The check_* functions are the checks an infer request meets whatever carries it:
serving/grpc.py calls them too, so HTTP and gRPC refuse the same inputs with the same messages.
"""

import json
import math
from typing import NamedTuple

import numpy as np
import orjson

from .errors import InputError

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
NUMPY = {"FP32": np.dtype("<f4")}  # wire byte order is little-endian


class InferRequest(NamedTuple):
    id: str | None
    inputs: dict  # {name: array in the declared shape}
    outputs: list  # [(name, binary)], in the order the response lists them


def parse_request(body, header_length, spec, max_batch_size):
    """Body bytes (+ the Inference-Header-Content-Length header, or None) -> InferRequest.

    spec: the model's {"inputs": {...}, "outputs": {...}} from the manifest. Checks the
    wire format, datatypes, element counts and batch limit; the runtime checks shapes and values.
    """
    if header_length is None:
        header, binary = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise InputError(f"{HEADER_LENGTH} must be an integer, received {header_length!r}.") from None
        if not 0 <= n <= len(body):
            raise InputError(f"{HEADER_LENGTH} is {n} but the body has {len(body)} bytes.")
        header, binary = body[:n], memoryview(body)[n:]
    request = json_object(header)
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError(f"'id' must be a string, received {request_id!r}.")
    parameters = _dict(request.get("parameters"), "parameters")
    binary_default = _bool(parameters.get("binary_data_output", False), "parameters.binary_data_output")

    tensors = request.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise InputError(f"'inputs' must be a non-empty list of tensors; the model takes {list(spec['inputs'])}.")
    inputs, offset = {}, 0
    for t in tensors:
        name, array, used = _input(t, spec, binary[offset:], max_batch_size)
        check_new_input(name, inputs)
        inputs[name], offset = array, offset + used
    if offset != len(binary):
        raise InputError(f"{len(binary)} bytes of binary data follow the JSON header, but the inputs declare {offset}.")
    check_all_inputs(inputs, spec)
    return InferRequest(request_id, inputs, _outputs(request.get("outputs"), spec, binary_default))


# The checks an infer request meets whatever carries it (HTTP JSON here, gRPC in serving/grpc.py).


def check_tensor(name, datatype, shape, spec, max_batch_size):
    """One input's name, datatype and shape against the model's spec and the batch limit -> its element count.

    Made before any value is read, so that no request makes the server hold more than a full batch:
    shape a non-empty list of non-negative ints, shape[0] <= max_batch_size, and at most max_batch_size
    rows' worth of values (the manifest's shape with -1 for the batch). The runtime checks the exact shape.
    """
    if not isinstance(name, str) or name not in spec["inputs"]:
        raise InputError(f"unknown input {_short(name)}; the model takes {list(spec['inputs'])}.")
    expected = spec["inputs"][name]["datatype"]
    if datatype != expected:
        raise InputError(f"input {name!r} has datatype {expected}, received {_short(datatype)}.")
    if not (
        isinstance(shape, list)
        and shape
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InputError(f"input {name!r}: 'shape' must be a list of non-negative ints, received {_short(shape)}.")
    declared = spec["inputs"][name]["shape"]  # -1: any batch size
    if len(shape) != len(declared):  # before NumPy sees it: it holds at most 64 dimensions
        raise InputError(f"input {name!r} has shape {declared} (-1: any batch size), received {_short(shape)}.")
    if shape[0] > max_batch_size:
        raise InputError(f"input {name!r}: batch size {shape[0]} is over this server's limit of {max_batch_size}.")
    count = math.prod(shape)
    if count > max_batch_size * math.prod(d for d in declared if d > 0):
        raise InputError(f"input {name!r}: shape {shape} holds {count} values, more than a full batch of this model.")
    return count


def check_raw_size(name, datatype, shape, count, size, what):
    """Raw little-endian bytes of `count` values: `size` must be an int, exactly count x the datatype's itemsize.

    what: how the message names the size received, e.g. "binary_data_size is 16". Returns the byte count.
    """
    nbytes = count * NUMPY[datatype].itemsize
    if not (isinstance(size, int) and size == nbytes):
        raise InputError(f"input {name!r}: shape {shape} of {datatype} takes {nbytes} bytes, {what}.")
    return nbytes


def check_new_input(name, inputs):
    """InputError if `inputs` (those read so far) already has `name`."""
    if name in inputs:
        raise InputError(f"input {name!r} appears twice.")


def check_all_inputs(inputs, spec):
    """InputError naming the model's inputs that `inputs` lacks."""
    missing = [n for n in spec["inputs"] if n not in inputs]
    if missing:
        raise InputError(f"missing inputs {missing}; the model takes {list(spec['inputs'])}.")


def check_output(name, chosen, spec):
    """A requested output's name: InputError if the model has no such output or `chosen` (the names so far) has it."""
    if not (isinstance(name, str) and name in spec["outputs"]):
        raise _unknown_output(name, spec)
    if name in chosen:
        raise InputError(f"output {name!r} is requested twice.")


def _unknown_output(name, spec):
    return InputError(f"unknown output {_short(name)}; the model's outputs are {list(spec['outputs'])}.")


def _input(t, spec, binary, max_batch_size):
    """One entry of 'inputs' -> (name, array shaped as declared, binary bytes used)."""
    if not isinstance(t, dict):
        raise InputError(f"each input must be a JSON object, received {_short(t)}.")
    name, datatype, shape = t.get("name"), t.get("datatype"), t.get("shape")
    count = check_tensor(name, datatype, shape, spec, max_batch_size)
    size = _dict(t.get("parameters"), f"input {name!r} parameters").get("binary_data_size")
    if size is not None:
        if "data" in t:
            raise InputError(f"input {name!r} has both 'data' and parameters.binary_data_size; send one.")
        check_raw_size(name, datatype, shape, count, size, f"binary_data_size is {size!r}")
        if len(binary) < size:
            raise InputError(f"input {name!r} declares {size} bytes of binary data; only {len(binary)} follow.")
        return name, np.frombuffer(binary[:size], NUMPY[datatype]).reshape(shape), size
    if "data" not in t:
        raise InputError(f"input {name!r} has no 'data' (nor parameters.binary_data_size).")
    try:
        # Flat or nested lists; only the element count has to match `shape`.
        data = json_numbers(t["data"])
    except (ValueError, TypeError, RecursionError):
        raise InputError(f"input {name!r}: 'data' is ragged or not a list of numbers.") from None
    if data.dtype.kind not in "iuf":
        raise InputError(f"input {name!r}: 'data' must hold numbers only, not strings, booleans, nulls or objects.")
    if data.size != count:
        raise InputError(f"input {name!r}: shape {shape} holds {count} values, 'data' has {data.size}.")
    with np.errstate(over="ignore"):  # beyond float32's range -> inf, which the runtime rejects
        return name, data.astype(NUMPY[datatype]).reshape(shape), 0


def _outputs(tensors, spec, binary_default):
    """'outputs' of the request -> [(name, binary)], all the model's outputs when absent."""
    if tensors is None:
        return [(name, binary_default) for name in spec["outputs"]]
    if not isinstance(tensors, list) or not tensors:
        raise InputError("'outputs' must be a non-empty list of {'name': ...} objects when given.")
    chosen = []
    for t in tensors:
        if not isinstance(t, dict):
            raise _unknown_output(t, spec)
        check_output(t.get("name"), dict(chosen), spec)
        params = _dict(t.get("parameters"), f"output {t['name']!r} parameters")
        chosen.append((t["name"], _bool(params.get("binary_data", binary_default), "binary_data")))
    return chosen


def encode_response(model_name, version, request_id, results, binary, datatypes):
    """results {name: array}, binary {name: bool} -> (body bytes, headers)."""
    outputs, chunks = [], []
    for name, array in results.items():
        tensor = {"name": name, "datatype": datatypes[name], "shape": list(array.shape)}
        if binary[name]:
            raw = np.ascontiguousarray(array, NUMPY[datatypes[name]]).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            # orjson writes each float32 as the shortest decimal that reads back to the same float32.
            tensor["data"] = np.ascontiguousarray(array, NUMPY[datatypes[name]]).ravel()
        outputs.append(tensor)
    response = {"model_name": model_name, "model_version": version, "outputs": outputs}
    if request_id is not None:
        response["id"] = request_id
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {"Content-Type": JSON_TYPE}
    return header + b"".join(chunks), {"Content-Type": BINARY_TYPE, HEADER_LENGTH: str(len(header))}


def json_numbers(value):
    """A JSON number or (nested) list of numbers -> a NumPy array; ValueError if ragged.

    JSON ints beyond int64 (which NumPy would hold as Python objects) become float64, and those beyond
    float64 too become +-inf, so that a value too large for the tensor is reported as such. Anything that
    is not a number (strings, booleans, nulls) leaves the array of dtype object, for the caller to refuse.
    """
    data = np.asarray(value)
    if data.dtype == object and all(type(v) in (int, float) for v in data.flat):  # type(): True is no number here
        data = np.array([_float(v) for v in data.flat], np.float64).reshape(data.shape)
    return data


def _float(v):
    try:
        return float(v)
    except OverflowError:  # an int beyond float64
        return math.inf if v > 0 else -math.inf


def batch_size(inputs):
    """The rows of a request's first input (what the metrics count as its batch size)."""
    first = next(iter(inputs.values()))
    return first.shape[0] if first.ndim else 1


def json_object(data):
    """JSON bytes -> dict. orjson parses; what it refuses is read again by the standard library,
    which takes the rest of JSON as Python does (integers of any size, NaN) or says what is wrong."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError too
            raise InputError(f"the request is not valid JSON: {_short(str(e))}") from None
    if not isinstance(value, dict):
        raise InputError(f"the request must be a JSON object, received {type(value).__name__}.")
    return value


def _dict(value, what):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object, received {_short(value)}.")
    return value


def _bool(value, what):
    if not isinstance(value, bool):
        raise InputError(f"{what} must be true or false, received {_short(value)}.")
    return value


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
