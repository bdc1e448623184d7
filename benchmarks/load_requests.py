"""The requests: Open Inference Protocol v2 decoder calls, the cases they make, and the check of an answer.

Every request sends z and asks for x_mean only, so every server does the same
work: batch 1 and batch 64, JSON tensors and binary tensor data (the
Inference-Header-Content-Length extension, binary out as well).
"""

import json
import os

import numpy as np

from benchmarks.load_cache import LATENT_DIM
from benchmarks.load_servers import http_request
from kvae_contract import artifacts as contract

BODIES = (("json", 1), ("binary", 1), ("json", 64), ("binary", 64))
INFER = "/v2/models/decoder/infer"
BINARY_HEADER = "Inference-Header-Content-Length"


def latent_rows(n=64, seed=0):
    return np.random.default_rng(seed).standard_normal((n, LATENT_DIM)).astype(np.float32)


def request_bodies(z):
    """{(kind, batch): (body bytes, headers)}: OIP infer requests of the decoder that ask for x_mean only.

    Asking for one output makes every server do the same work (kvae's decoder
    also has x_logits, which it would otherwise send as well). The binary
    requests ask for binary output too (parameters.binary_data_output).
    """
    bodies = {}
    for kind, batch in BODIES:
        rows = z[:batch]
        tensor = {"name": contract.Z, "shape": [batch, LATENT_DIM], "datatype": contract.FP32}
        request = {"inputs": [tensor], "outputs": [{"name": contract.X_MEAN}]}
        if kind == "json":
            tensor["data"] = [float(v) for v in rows.ravel()]
            bodies[kind, batch] = (json.dumps(request).encode(), {"Content-Type": "application/json"})
        else:
            raw = rows.astype("<f4").tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            request["parameters"] = {"binary_data_output": True}
            head = json.dumps(request).encode()
            bodies[kind, batch] = (head + raw, {"Content-Type": "application/octet-stream",
                                                BINARY_HEADER: str(len(head))})
    return bodies


def cases_of(connections):
    """(kind, batch, connections, name) of every HTTP case."""
    return [(kind, batch, c, f"{kind}/b{batch}/c{c}") for c in connections for kind, batch in BODIES]


def reference_x_mean(folder, z):
    """x_mean of the decoder for z, from onnxruntime in this process: what every server must answer."""
    import onnxruntime as ort

    session = ort.InferenceSession(os.path.join(folder, contract.onnx_path(contract.DECODER)),
                                   providers=["CPUExecutionProvider"])
    return session.run([contract.X_MEAN], {contract.Z: z})[0]


def decoded_x_mean(headers, data):
    """x_mean out of an OIP infer response body, JSON or binary; None if the answer was not binary."""
    n = int(headers.get(BINARY_HEADER) or 0)
    head = json.loads(data[:n] if n else data)
    offset = n
    for out in head["outputs"]:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if out["name"] == contract.X_MEAN:
            if size is None:
                return np.asarray(out["data"], np.float32), False
            return np.frombuffer(data[offset:offset + size], np.float32), True
        offset += size or 0
    raise KeyError(f"no {contract.X_MEAN} among the outputs {[o['name'] for o in head['outputs']]}")


def probe(server, kind, body, headers, expected):
    """None if the server answers this request with the expected x_mean (within 1e-4), else why not.

    wrk counts statuses only; this one request, before the load, shows that
    the 200s are the decoder's real answer, in the encoding the case names.
    """
    try:
        status, out_headers, data = http_request(server.url + INFER, "POST", body, headers)
    except OSError as e:
        return f"no answer ({e})"
    if status != 200:
        return f"HTTP {status}: {data[:160].decode(errors='replace')}"
    try:
        x, binary = decoded_x_mean(out_headers, data)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        return f"unreadable answer ({e})"
    if kind == "binary" and not binary:
        return "answers binary requests in JSON"
    if x.size != expected.size:
        return f"x_mean has {x.size} values, expected {expected.size}"
    return x_mean_differs(x, expected)


def x_mean_differs(x, expected):
    """None if x is onnxruntime's x_mean within 1e-4, else by how much it differs."""
    diff = float(np.abs(x.ravel() - expected.ravel()).max())
    return None if diff <= 1e-4 else f"x_mean differs from onnxruntime's by {diff:.2g}"
