"""The floor of benchmarks/load.py: the least an Open Inference Protocol decoder endpoint can be.

    python benchmarks/load_bare.py MODEL.onnx PORT WORKERS

Starlette + uvicorn[standard] (httptools, uvloop) + orjson around one onnxruntime
session per worker process with kvae serve's settings when it runs one thread per
worker: 1 intra-op thread, spinning off. No checks, no metrics, no routing beyond
two paths: whatever kvae serve spends on top of this is its own overhead. Binary
tensor data (the Inference-Header-Content-Length extension) in and out, as simply
as it goes; JSON otherwise. Started as a subprocess (benchmarks/load_servers.py), never imported.
"""

import os
import sys

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

HEADER = "Inference-Header-Content-Length"


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


SESSION = session(os.environ["KVAE_BARE_ONNX"]) if "KVAE_BARE_ONNX" in os.environ else None


async def infer(request):
    body = await request.body()
    n = int(request.headers.get(HEADER, 0))
    header = orjson.loads(body[:n] if n else body)
    z = header["inputs"][0]
    data = np.frombuffer(body[n:], np.float32) if n else np.asarray(z["data"], np.float32)
    x = SESSION.run(["x_mean"], {"z": data.reshape(z["shape"])})[0]
    out = {"name": "x_mean", "datatype": "FP32", "shape": list(x.shape)}
    if not n:
        out["data"] = x.ravel()
        return Response(orjson.dumps({"model_name": "decoder", "outputs": [out]}, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")
    raw = x.tobytes()
    out["parameters"] = {"binary_data_size": len(raw)}
    head = orjson.dumps({"model_name": "decoder", "outputs": [out]})
    return Response(head + raw, media_type="application/octet-stream", headers={HEADER: str(len(head))})


async def ready(request):
    return Response(b"")


app = Starlette(routes=[Route("/v2/models/decoder/infer", infer, methods=["POST"]), Route("/v2/health/ready", ready)])

if __name__ == "__main__":
    path, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.environ["KVAE_BARE_ONNX"] = os.path.abspath(path)  # read by each worker when it imports this module
    uvicorn.run("load_bare:app", app_dir=os.path.dirname(os.path.abspath(__file__)), host="127.0.0.1", port=port,
                workers=workers, http="httptools", loop="uvloop", access_log=False, log_level="warning")
