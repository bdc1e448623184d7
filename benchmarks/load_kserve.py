"""KServe's ModelServer around the decoder on onnxruntime, as a KServe user would write it (benchmarks/load.py).

    KSERVE_VENV/bin/python benchmarks/load_kserve.py MODEL.onnx PORT

A kserve.Model whose predict runs one onnxruntime session (1 intra-op thread,
spinning off, like kvae serve's per-worker sessions) and answers x_mean, in
binary when the request asks for it; ModelServer with its defaults (one
worker) except: gRPC off, bound to 127.0.0.1, no line logged per request.
Runs in the throwaway venv benchmarks/load_cache.py installs KServe into;
never imported by the benchmarks package (kserve is not in kvae's venv).
"""

import logging
import sys

import kserve
import onnxruntime as ort
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse


class Decoder(kserve.Model):
    def __init__(self, path):
        super().__init__("decoder")
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        z = payload.inputs[0].as_numpy()
        x = self.session.run(["x_mean"], {"z": z})[0]
        out = InferOutput(name="x_mean", shape=list(x.shape), datatype="FP32")
        out.set_data_from_numpy(x, binary_data=payload.use_binary_outputs)
        # Without requested_outputs: KServe would let each requested output's absent binary_data override
        # binary_data_output and answer binary requests in JSON. x_mean is the only output anyway.
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[out],
                             use_binary_outputs=payload.use_binary_outputs)


class LoopbackConfig(uvicorn.Config):
    """uvicorn's Config bound to 127.0.0.1: KServe's REST server hard-codes 0.0.0.0, the benchmark stays on loopback."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "host": "127.0.0.1"})


if __name__ == "__main__":
    path, port = sys.argv[1], int(sys.argv[2])  # kserve's own parser (run at import) ignores these
    uvicorn.Config = LoopbackConfig
    server = kserve.ModelServer(http_port=port, enable_grpc=False, enable_latency_logging=False)
    for name in ("uvicorn.access", "kserve.trace"):  # no line per request, like kvae serve --quiet
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([Decoder(path)])
