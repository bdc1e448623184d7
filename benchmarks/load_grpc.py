"""The gRPC measurement: kvae serve --grpc-port, loaded by tritonclient.grpc from threads of this process."""

import os
import resource
import sys
import threading
import time

import numpy as np

from benchmarks.load_report import ms
from benchmarks.load_requests import latent_rows, reference_x_mean, x_mean_differs
from benchmarks.load_servers import Server, ServerError, free_port
from kvae_contract import artifacts as contract


def grpc_load(address, z, threads, duration):
    """`threads` threads, each with its own tritonclient.grpc client, calling infer back to back for `duration` s.

    Returns requests/s, p50/p99 (ms), errors, and the cores this process used:
    near one, the Python client (one GIL), not the server, set the pace.
    """
    from tritonclient.utils import InferenceServerException

    latencies = [[] for _ in range(threads)]
    errors = [0] * threads
    start = threading.Barrier(threads + 1)

    def client(i):
        c, request = _client(address, z)
        c.infer(**request)  # the channel is up before the clock starts
        start.wait()
        end = time.perf_counter() + duration
        while (t := time.perf_counter()) < end:
            try:
                c.infer(**request)
            except InferenceServerException:
                errors[i] += 1
                continue
            latencies[i].append(time.perf_counter() - t)
        c.close()

    pool = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    for t in pool:
        t.join()
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    all_ms = np.concatenate([np.asarray(v) for v in latencies]) * 1e3
    return {"req_per_s": all_ms.size / wall, "p50_ms": float(np.percentile(all_ms, 50)) if all_ms.size else None,
            "p99_ms": float(np.percentile(all_ms, 99)) if all_ms.size else None, "requests": int(all_ms.size),
            "seconds": wall, "errors": sum(errors), "client_cores": cpu / wall}


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def grpc_check(address, z, expected):
    """None if kvae's gRPC service answers x_mean for z (batch 64), else why not."""
    try:
        c, request = _client(address, z)
        x = c.infer(**request).as_numpy(contract.X_MEAN)
        c.close()
    except Exception as e:  # tritonclient and grpc raise their own types
        return f"gRPC infer failed: {e}"
    return x_mean_differs(x, expected)


def _client(address, z):
    """A tritonclient.grpc client, and the keyword arguments of its infer call: z as raw contents, x_mean out."""
    import tritonclient.grpc as triton

    c = triton.InferenceServerClient(address)
    tensor = triton.InferInput(contract.Z, list(z.shape), contract.FP32)
    tensor.set_data_from_numpy(z)  # raw_input_contents
    return c, {"model_name": "decoder", "inputs": [tensor], "outputs": [triton.InferRequestedOutput(contract.X_MEAN)]}


def measure_grpc(folder, settings, tmp, progress):
    """kvae serve --grpc-port on the MLP: batch 1 and 64 in turn, every round; {"runs": {case: [runs]}} or skipped."""
    z = latent_rows()
    expected = reference_x_mean(folder, z)
    port, grpc_port = free_port(), free_port()
    progress(f"gRPC, mlp: kvae serve --grpc-port, tritonclient.grpc from {settings['grpc_threads']} threads")
    server = Server("kvae_grpc", "kvae serve --grpc-port", [sys.executable, "-m", "kvae_serving", "serve", folder,
                    "--port", str(port), "--grpc-port", str(grpc_port), "--quiet"], port, tmp)
    try:
        server.wait_ready()
    except ServerError as e:
        server.stop()
        progress(f"  gRPC not measured: {e}")
        return {"skipped": str(e)}
    address = f"127.0.0.1:{grpc_port}"
    try:
        why = grpc_check(address, z, expected)
        if why:
            progress(f"  gRPC not measured: {why}")
            return {"skipped": why}
        grpc_load(address, z[:1], settings["grpc_threads"], settings["warmup"])
        runs = {}
        for k in range(settings["rounds"]):
            for batch in (1, 64) if k % 2 == 0 else (64, 1):
                r = grpc_load(address, z[:batch], settings["grpc_threads"], settings["duration"])
                r.update(round=k, loadavg=os.getloadavg()[0])
                runs.setdefault(f"raw/b{batch}", []).append(r)
                progress(f"  round {k + 1}/{settings['rounds']} batch {batch}: {r['req_per_s']:,.0f}/s, "
                         f"p99 {ms(r['p99_ms'])} ms, client {r['client_cores']:.2f} cores")
    finally:
        server.stop()
    return {"threads": settings["grpc_threads"], "runs": runs}
