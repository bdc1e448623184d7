"""Load: `kvae serve` under wrk, against KServe's ModelServer and a bare Starlette handler, on loopback.

    python -m benchmarks.load [--quick] [--duration S] [--rounds N] [--out PATH] [--no-kserve]

What is loaded: POST /v2/models/decoder/infer (Open Inference Protocol v2) on
the decoder of a latent-16 MLP and of a latent-16 conv model, each trained
briefly by `kvae train` and exported by `kvae export` once, then kept in
~/.cache/kvae-bench (or $KVAE_BENCH_CACHE): speed does not depend on quality.
Every request sends z and asks for x_mean only, so every server does the same
work: batch 1 and batch 64, JSON tensors and binary tensor data (the
Inference-Header-Content-Length extension, binary out as well), at 8 and 64
connections (the conv model at 8 only).

The servers, each a subprocess on 127.0.0.1 with a free port, in its own process group:
  kvae       `python -m kvae_serving ARTIFACTS` (= kvae serve) as shipped: one worker per core
  kvae_1w    the same with --workers 1 (MLP only): what the second worker adds
  kserve     KServe's ModelServer (its defaults: one worker) around an onnxruntime session with
             1 intra-op thread, spinning off (benchmarks/load_kserve.py), installed once by this
             benchmark into a throwaway venv in the cache (skipped, with a message, if that fails)
  bare       the floor: Starlette + uvicorn[standard] + orjson around the same session settings,
             as many workers as kvae (benchmarks/load_bare.py)
All of a model's servers are started together and health-checked; one request
of each case then checks each server's x_mean against onnxruntime run here
(a server that cannot answer a case is marked n/a for it, with the reason);
then each gets a short warm-up. The measurement alternates them: every round
runs every case on every server in turn (A B C A B C ..., the order rotated
each round), one `wrk -t1` run of `--duration` seconds each, so that the load
of a shared machine falls on all of them alike. Idle servers wait on a socket
and take no CPU. Tables give medians over rounds; ratios are medians of the
per-round ratios. wrk shares the cores with the server it loads, alike for all.
wrk corrects its latencies for coordinated omission: a stall (the server
descheduled by another job, say) counts for every request that would have
been sent during it, so p99 shows the machine's load; the report gives the
load average next to the numbers.

gRPC: kvae serve --grpc-port, loaded by tritonclient.grpc from threads of this
process (raw input contents), batch 1 and 64. The Python client holds one GIL:
its CPU use is reported, and near one core it, not the server, sets the pace.

Goals (MLP, batch-1 JSON, 8 connections): kvae >= 10x KServe and >= 1.0x the
bare handler in requests/s, p99 <= 2 ms, zero errors; and binary >= 1.5x JSON
at batch 64. Results go to benchmarks/results_load.json (--quick: a temp file).
"""

import argparse
import datetime
import http.client
import json
import operator
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from benchmarks import harness
from kvae_contract import artifacts as contract

ROOT = harness.ROOT
HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results_load.json")
CACHE = os.environ.get("KVAE_BENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kvae-bench")

LATENT_DIM = 16  # the reference request: z of shape [1, 16]
TRAIN_LIMIT = 25_600  # one epoch of 256 steps of 100 images: plenty, speed does not depend on quality
ARCHITECTURES = ("mlp", "conv")
BODIES = (("json", 1), ("binary", 1), ("json", 64), ("binary", 64))
INFER = "/v2/models/decoder/infer"
READY = "/v2/health/ready"
BINARY_HEADER = "Inference-Header-Content-Length"
FULL = {"duration": 5, "rounds": 2, "warmup": 1, "connections": {"mlp": (8, 64), "conv": (8,)},
        "grpc_threads": 8}
QUICK = {"duration": 1, "rounds": 1, "warmup": 1, "connections": {"mlp": (8, 64), "conv": (8,)},
         "grpc_threads": 4}
KSERVE_INSTALL_TIMEOUT = 600  # seconds for `pip install kserve onnxruntime numpy`, once
START_TIMEOUT = 180  # seconds for a server to answer its health check (KServe imports a lot)
STOP_TIMEOUT = 15  # seconds between SIGTERM and SIGKILL
GOAL_CASE = "json/b1/c8"
COMPARE = {">=": operator.ge, "<=": operator.le, "==": operator.eq}
WRK_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


class ServerError(RuntimeError):
    pass


# What the benchmark needs before it starts.


def find_wrk():
    """wrk's path; exits non-zero, naming the install command, when it is missing (the Makefile installs it)."""
    path = shutil.which("wrk")
    if path is None:
        sys.exit("benchmarks.load: wrk (the HTTP load generator) is not installed. "
                 "Install it with `apt-get install wrk` and run again.")
    return path


def artifacts(arch, progress):
    """The cached artifacts folder of a latent-16 `arch` model; trained and exported on first use.

    `kvae train` and `kvae export` run in their own processes, as shipped, so that
    this process never loads TensorFlow. The folder name carries the contract's
    format version: a new format retrains instead of serving stale files.
    """
    folder = os.path.join(CACHE, f"artifacts-{arch}-latent{LATENT_DIM}-format{contract.FORMAT_VERSION}")
    if os.path.exists(os.path.join(folder, contract.MANIFEST)):
        return folder
    progress(f"Training ({TRAIN_LIMIT // 100} steps) and exporting the {arch} model once, into {folder}")
    os.makedirs(CACHE, exist_ok=True)
    kvae = [sys.executable, "-m", "kvae_cli"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory(prefix="kvae-load-train-") as tmp:
        run = os.path.join(tmp, "run")
        subprocess.run([*kvae, "train", "--run-dir", run, "--architecture", arch, "--latent-dim", str(LATENT_DIM),
                        "--train-limit", str(TRAIN_LIMIT), "--epochs", "1", "--seed", "0"],
                       check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        subprocess.run([*kvae, "export", run, "--out", folder, "--force"], check=True, cwd=ROOT, env=env,
                       stdout=subprocess.DEVNULL)
    return folder


def kserve_python(progress):
    """(python, version) of a throwaway venv holding kserve, onnxruntime and numpy, or (None, why not).

    KServe pins its own FastAPI, pydantic and protobuf: it gets a venv of its own
    in the cache, made once; a failed or slow install (no network, over
    KSERVE_INSTALL_TIMEOUT) skips KServe instead of stopping the benchmark.
    """
    venv = os.path.join(CACHE, "kserve-venv")
    python = os.path.join(venv, "bin", "python")
    version = _kserve_version(python)
    if version:
        return python, version
    progress(f"Installing KServe into {venv} (once; at most {KSERVE_INSTALL_TIMEOUT // 60} minutes)")
    log = os.path.join(CACHE, "kserve-install.log")
    os.makedirs(CACHE, exist_ok=True)
    try:
        with open(log, "w") as out:
            subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True, stdout=out, stderr=out,
                           timeout=120)
            subprocess.run([python, "-m", "pip", "install", "kserve", "onnxruntime", "numpy"], check=True,
                           stdout=out, stderr=out, timeout=KSERVE_INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, f"pip install kserve took over {KSERVE_INSTALL_TIMEOUT} s (log: {log})"
    except (subprocess.CalledProcessError, OSError) as e:
        return None, f"pip install kserve failed ({e}; log: {log})"
    version = _kserve_version(python)
    return (python, version) if version else (None, f"kserve does not import after the install (log: {log})")


def _kserve_version(python):
    """KServe's version in that interpreter, or None if it (or onnxruntime) does not import."""
    if not os.path.exists(python):
        return None
    probe = "import importlib.metadata as m, kserve, onnxruntime, numpy; print(m.version('kserve'))"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    return out.stdout.strip() if out.returncode == 0 else None


# Requests.


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


def wrk_script(folder, kind, batch, body, headers):
    """A wrk Lua script that POSTs this body (read from a file: binary bytes need no escaping)."""
    body_path = os.path.join(folder, f"{kind}-{batch}.body")
    with open(body_path, "wb") as f:
        f.write(body)
    lines = ['wrk.method = "POST"', f'local f = assert(io.open("{body_path}", "rb"))', 'wrk.body = f:read("*a")',
             "f:close()", *(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())]
    path = os.path.join(folder, f"{kind}-{batch}.lua")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def reference_x_mean(folder, z):
    """x_mean of the decoder for z, from onnxruntime in this process: what every server must answer."""
    import onnxruntime as ort

    session = ort.InferenceSession(os.path.join(folder, contract.onnx_path(contract.DECODER)),
                                   providers=["CPUExecutionProvider"])
    return session.run([contract.X_MEAN], {contract.Z: z})[0]


def http_request(url, method="GET", body=None, headers=None, timeout=30):
    """(status, headers, body) of one request on a fresh connection."""
    host, _, rest = url.removeprefix("http://").partition("/")
    name, _, port = host.partition(":")
    conn = http.client.HTTPConnection(name, int(port), timeout=timeout)
    try:
        conn.request(method, "/" + rest, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


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
    diff = float(np.abs(x - expected.ravel()).max())
    return None if diff <= 1e-4 else f"x_mean differs from onnxruntime's by {diff:.2g}"


# Servers.


def free_port():
    """A port free on 127.0.0.1 now (the server binds it a moment later; loopback only, no one else races)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server subprocess on 127.0.0.1: started, health-checked, stopped.

    It leads its own process group, so that one that ignores SIGTERM past the
    deadline is killed together with the worker processes it spawned.
    """

    def __init__(self, name, label, cmd, port, log_dir, env=None):
        self.name, self.label, self.cmd, self.port = name, label, cmd, port
        self.url = f"http://127.0.0.1:{port}"
        self.unsupported = {}  # (kind, batch) -> why this server cannot answer that case
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=ROOT, env={**os.environ, **(env or {})}, start_new_session=True)

    def wait_ready(self, timeout=START_TIMEOUT):
        """Polls the health check until it answers 200; ServerError (with the log's tail) on exit or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with status {self.proc.returncode}. {self.tail()}")
            try:
                if http_request(self.url + READY, timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise ServerError(f"{self.name} did not answer {READY} within {timeout} s. {self.tail()}")

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM to the server; SIGKILL to its process group after `timeout` s, or to workers it left behind."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this benchmark created; usually empty by now
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.log.close()

    def tail(self, n=1500):
        self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f"Log {self.log_path}:\n" + f.read()[-n:]


def http_servers(arch, folder, kserve, cores):
    """{name: (label, command(port))}: the HTTP servers measured on this model."""
    onnx = os.path.join(folder, contract.onnx_path(contract.DECODER))

    def kvae(*extra):
        return lambda port: [sys.executable, "-m", "kvae_serving", "serve", folder, "--port", str(port), "--quiet",
                             *extra]

    specs = {"kvae": (f"kvae serve ({cores} workers)", kvae())}
    if arch == "mlp":
        specs["kvae_1w"] = ("kvae serve --workers 1", kvae("--workers", "1"))
    if kserve:
        specs["kserve"] = ("KServe ModelServer (1 worker)",
                           lambda port: [kserve, os.path.join(HERE, "load_kserve.py"), onnx, str(port)])
    specs["bare"] = (f"bare Starlette ({cores} workers)",
                     lambda port: [sys.executable, os.path.join(HERE, "load_bare.py"), onnx, str(port), str(cores)])
    return specs


def start_servers(specs, log_dir, progress):
    """Starts every server at once (their imports overlap), then waits for each; ({name: Server}, {name: why not})."""
    servers = {}
    for name, (label, command) in specs.items():
        port = free_port()
        servers[name] = Server(name, label, command(port), port, log_dir)
    failed = {}
    for name, server in list(servers.items()):
        try:
            server.wait_ready()
        except ServerError as e:
            progress(f"  {name} did not start: {e}")
            failed[name] = str(e)
            server.stop()
            del servers[name]
    return servers, failed


def stop_servers(servers):
    for server in servers.values():
        server.stop()


# Load.


def run_wrk(wrk, url, script, connections, duration):
    """One wrk run (one thread, `connections` connections, `duration` whole seconds); its parsed report."""
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s", "-s", script, url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        return {"failed": f"wrk exited with status {out.returncode}: {out.stderr.strip()[-300:]}"}
    try:
        return parse_wrk(out.stdout)
    except (AttributeError, ValueError) as e:
        return {"failed": f"unreadable wrk report ({e}): {out.stdout[-300:]}"}


def parse_wrk(text):
    """requests/s, p50 and p99 (ms), requests, socket errors and non-2xx responses from `wrk --latency`'s report."""
    def to_ms(value, unit):
        return float(value) * WRK_UNITS_MS[unit]

    def percentile(p):
        return to_ms(*re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M).groups())

    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    counts = map(int, sockets.groups()) if sockets else (0,) * 4
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), counts))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non_2xx = int(non_2xx.group(1)) if non_2xx else 0
    requests = int(done.group(1))
    return {
        "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "p50_ms": percentile(50) if requests else None, "p99_ms": percentile(99) if requests else None,
        "requests": requests, "seconds": to_ms(done.group(2), done.group(3)) / 1e3,
        "socket_errors": socket_errors, "non_2xx": non_2xx, "errors": sum(socket_errors.values()) + non_2xx,
    }


def cases_of(connections):
    """(kind, batch, connections, name) of every HTTP case."""
    return [(kind, batch, c, f"{kind}/b{batch}/c{c}") for c in connections for kind, batch in BODIES]


def alternate(servers, cases, scripts, settings, wrk, progress):
    """Every round, every case on every server in turn (order rotated each round); {server: {case: [runs]}}."""
    names = list(servers)
    runs = {name: {} for name in names}
    for k in range(settings["rounds"]):
        order = names[k % len(names):] + names[:k % len(names)]
        for kind, batch, connections, case in cases:
            shown = []
            for name in order:
                server = servers[name]
                if (kind, batch) in server.unsupported:
                    continue
                r = run_wrk(wrk, server.url + INFER, scripts[kind, batch], connections, settings["duration"])
                r.update(round=k, loadavg=os.getloadavg()[0])
                runs[name].setdefault(case, []).append(r)
                shown.append(f"{name} {r['failed']}" if "failed" in r else
                             f"{name} {r['req_per_s']:,.0f}/s p99 {ms(r['p99_ms'])} ms" +
                             (f" ({r['errors']} errors)" if r["errors"] else ""))
            progress(f"  round {k + 1}/{settings['rounds']} {case}: {', '.join(shown)} (load {os.getloadavg()[0]:.1f})")
    return runs


def measure_http(arch, folder, settings, kserve, cores, wrk, tmp, progress):
    """One model's HTTP servers: started together, probed, warmed up, loaded in alternation, stopped."""
    z = latent_rows()
    expected = reference_x_mean(folder, z)
    bodies = request_bodies(z)
    scripts = {key: wrk_script(tmp, *key, *bodies[key]) for key in bodies}
    specs = http_servers(arch, folder, kserve, cores)
    progress(f"HTTP, {arch}: starting {', '.join(specs)}")
    servers, failed = start_servers(specs, tmp, progress)
    try:
        for server in servers.values():
            for kind, batch in BODIES:
                why = probe(server, kind, *bodies[kind, batch], expected[:batch])
                if why:
                    server.unsupported[kind, batch] = why
                    progress(f"  {server.name}: {kind} batch {batch} not measured: {why}")
            run_wrk(wrk, server.url + INFER, scripts["json", 1], 8, settings["warmup"])  # warm-up, not kept
        runs = alternate(servers, cases_of(settings["connections"][arch]), scripts, settings, wrk, progress)
    finally:
        stop_servers(servers)
    return {
        "servers": {name: {"label": specs[name][0], "failed": failed.get(name),
                           "command": servers[name].cmd if name in servers else None,
                           "unsupported": {f"{k}/b{b}": why for (k, b), why in
                                           (servers[name].unsupported.items() if name in servers else [])}}
                    for name in specs},
        "runs": runs,
    }


def grpc_load(address, z, threads, duration):
    """`threads` threads, each with its own tritonclient.grpc client, calling infer back to back for `duration` s.

    Returns requests/s, p50/p99 (ms), errors, and the cores this process used:
    near one, the Python client (one GIL), not the server, set the pace.
    """
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    latencies = [[] for _ in range(threads)]
    errors = [0] * threads
    start = threading.Barrier(threads + 1)

    def client(i):
        c = triton.InferenceServerClient(address)
        tensor = triton.InferInput(contract.Z, list(z.shape), contract.FP32)
        tensor.set_data_from_numpy(z)  # raw_input_contents
        outputs = [triton.InferRequestedOutput(contract.X_MEAN)]
        c.infer("decoder", [tensor], outputs=outputs)  # the channel is up before the clock starts
        start.wait()
        end = time.perf_counter() + duration
        while (t := time.perf_counter()) < end:
            try:
                c.infer("decoder", [tensor], outputs=outputs)
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
    import tritonclient.grpc as triton

    try:
        c = triton.InferenceServerClient(address)
        tensor = triton.InferInput(contract.Z, list(z.shape), contract.FP32)
        tensor.set_data_from_numpy(z)
        outputs = [triton.InferRequestedOutput(contract.X_MEAN)]
        x = c.infer("decoder", [tensor], outputs=outputs).as_numpy(contract.X_MEAN)
        c.close()
    except Exception as e:  # tritonclient and grpc raise their own types
        return f"gRPC infer failed: {e}"
    diff = float(np.abs(x.ravel() - expected.ravel()).max())
    return None if diff <= 1e-4 else f"x_mean differs from onnxruntime's by {diff:.2g}"


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


# Summaries.


def summary(runs):
    """Medians over rounds of requests/s, p50 and p99; errors summed; None if no run completed."""
    ok = [r for r in runs or [] if "failed" not in r]
    if not ok:
        return None
    out = {key: harness.median([r[key] for r in ok]) for key in ("req_per_s", "p50_ms", "p99_ms")}
    out["errors"] = sum(r["errors"] for r in ok)
    if "client_cores" in ok[0]:
        out["client_cores"] = harness.median([r["client_cores"] for r in ok])
    return out


def ratio(runs_a, runs_b):
    """Median over rounds of a's requests/s over b's in the same round; None when either is missing."""
    b = {r["round"]: r["req_per_s"] for r in runs_b or [] if "failed" not in r and r["req_per_s"] > 0}
    per_round = [r["req_per_s"] / b[r["round"]] for r in runs_a or [] if "failed" not in r and r["round"] in b]
    return {"median": harness.median(per_round), "all": per_round} if per_round else None


def ratios(http):
    """Within the run: kvae over KServe, over bare and over one worker, per case; binary over JSON at batch 64."""
    out = {}
    for arch, part in http.items():
        runs = part["runs"]
        kvae = runs.get("kvae", {})
        by_case = {}
        for case in kvae:
            by_case[case] = {f"kvae/{other}": ratio(kvae[case], runs[other].get(case))
                             for other in ("kserve", "bare", "kvae_1w") if other in runs}
        binary = {}
        for name, cases in runs.items():
            for case in cases:
                if case.startswith("binary/b64/"):
                    json_case = cases.get(case.replace("binary", "json"))
                    binary[f"{name}/{case.split('/')[-1]}"] = ratio(cases[case], json_case)
        out[arch] = {"per_case": by_case, "binary_over_json_b64": binary}
    return out


def goals(http, rat):
    """The issue's goals on the MLP, batch-1 JSON at 8 connections (binary/JSON: batch 64, 8 connections)."""
    def median_of(r):
        return r["median"] if r else None

    mlp = http.get("mlp", {}).get("runs", {})
    kvae = summary(mlp.get("kvae", {}).get(GOAL_CASE))
    per_case = rat.get("mlp", {}).get("per_case", {}).get(GOAL_CASE, {})
    checks = [
        ("kvae / KServe requests/s, batch-1 JSON, 8 connections", median_of(per_case.get("kvae/kserve")), ">=", 10.0),
        ("kvae / bare handler requests/s, batch-1 JSON, 8 connections", median_of(per_case.get("kvae/bare")), ">=",
         1.0),
        ("kvae p99 (ms), batch-1 JSON, 8 connections", kvae and kvae["p99_ms"], "<=", 2.0),
        ("kvae errors, batch-1 JSON, 8 connections", kvae and kvae["errors"], "==", 0),
        ("kvae binary / JSON requests/s, batch 64, 8 connections",
         median_of(rat.get("mlp", {}).get("binary_over_json_b64", {}).get("kvae/c8")), ">=", 1.5),
    ]
    out = []
    for text, value, op, target in checks:
        status = "not measured" if value is None else "met" if COMPARE[op](value, target) else "missed"
        out.append({"goal": f"{text} {op} {target:g}", "value": value, "status": status})
    return out


# Report.


def ms(value):
    return "-" if value is None else f"{value:.2f}"


def cell(s):
    if s is None:
        return "n/a"
    text = f"{s['req_per_s']:,.0f} ({ms(s['p50_ms'])}/{ms(s['p99_ms'])})"
    return text + (f" E{s['errors']}" if s["errors"] else "")


def times(r):
    return f"{r['median']:.2f}x" if r and r["median"] is not None else "-"


def render(results):
    """The printed report: HTTP table, ratios, gRPC, goals, what was not measured."""
    lines = []
    s = results["settings"]
    load = harness.median([r["loadavg"] for part in results["http"].values() for cases in part["runs"].values()
                           for runs in cases.values() for r in runs])
    lines.append(f"HTTP: requests/s (p50/p99 ms), medians of {s['rounds']} round(s) of {s['duration']} s, wrk -t1; "
                 f"En: n errors (socket errors + non-2xx). Load average during the runs: {load or 0:.1f} "
                 f"on {results['machine']['cores']} cores.")
    for arch, part in results["http"].items():
        names = list(part["servers"])
        rows = [[f"{arch:<5} case", *(part["servers"][n]["label"] for n in names), "kvae/KServe", "kvae/bare",
                 "kvae 2w/1w"]]
        cases = [c for *_, c in cases_of(s["connections"][arch])]
        for case in cases:
            per = results["ratios"][arch]["per_case"].get(case, {})
            rows.append([f"      {case}"] + [cell(summary(part["runs"].get(n, {}).get(case))) for n in names]
                        + [times(per.get("kvae/kserve")), times(per.get("kvae/bare")), times(per.get("kvae/kvae_1w"))])
        lines.append("")
        lines.extend(_table(rows))
        binary = results["ratios"][arch]["binary_over_json_b64"]
        if binary:
            lines.append("  binary / JSON at batch 64: " + ", ".join(f"{k} {times(v)}" for k, v in binary.items()))
    g = results["grpc"]
    lines.append("")
    if "skipped" in g:
        lines.append(f"gRPC: not measured: {g['skipped']}")
    else:
        lines.append(f"gRPC (kvae serve --grpc-port, mlp): tritonclient.grpc from {g['threads']} threads of one Python "
                     f"process, raw contents")
        rows = [["case", "req/s", "p50 ms", "p99 ms", "errors", "client cores"]]
        for case, runs in g["runs"].items():
            t = summary(runs)
            rows.append([case, f"{t['req_per_s']:,.0f}", ms(t["p50_ms"]), ms(t["p99_ms"]), str(t["errors"]),
                         f"{t['client_cores']:.2f}"])
        lines.extend(_table(rows))
        busy = max(summary(runs)["client_cores"] for runs in g["runs"].values())
        lines.append(f"  the client used up to {busy:.2f} cores of {results['machine']['cores']}: "
                     + ("it (one GIL), not the server, is likely the bottleneck" if busy > 0.8 else
                        "below one core, so the client was not the bottleneck"))
    lines.append("")
    lines.append("Goals:")
    for goal in results["goals"]:
        v = goal["value"]
        value = "-" if v is None else str(v) if isinstance(v, int) else f"{v:.2f}"
        lines.append(f"  [{goal['status']}] {goal['goal']}: {value}")
    notes = _not_measured(results)
    if notes:
        lines.append("")
        lines.append("Not measured:")
        lines.extend(f"  {n}" for n in notes)
    return "\n".join(lines)


def _not_measured(results):
    notes = [f"KServe: {results['kserve']['skipped']}"] if results["kserve"].get("skipped") else []
    for arch, part in results["http"].items():
        for name, server in part["servers"].items():
            if server["failed"]:
                notes.append(f"{arch} {name}: did not start: {server['failed'].splitlines()[0]}")
            for case, why in server["unsupported"].items():
                notes.append(f"{arch} {name} {case}: {why}")
    if "skipped" in results["grpc"]:
        notes.append(f"gRPC: {results['grpc']['skipped'].splitlines()[0]}")
    return notes


def _table(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]


def machine(wrk, kserve_version, cores):
    import onnxruntime
    import uvicorn

    version = subprocess.run([wrk, "--version"], capture_output=True, text=True)
    return {"cpu": harness.cpu_name(), "cores": cores, "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "uvicorn": uvicorn.__version__, "kserve": kserve_version,
            "wrk": (version.stdout or version.stderr).splitlines()[0] if (version.stdout or version.stderr) else None,
            "commit": harness.commit(), "loadavg_at_start": os.getloadavg()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 s per case, one round (numbers meaningless)")
    p.add_argument("--duration", type=int, help="seconds of load per case and server (whole seconds, wrk's unit; "
                   f"default {FULL['duration']}, --quick {QUICK['duration']})")
    p.add_argument("--rounds", type=int, help=f"rounds of every case on every server (default {FULL['rounds']})")
    p.add_argument("--no-kserve", action="store_true", help="skip KServe (and its one-time install)")
    p.add_argument("--out", help=f"JSON results (default {os.path.relpath(RESULTS)}; with --quick, a temp file)")
    args = p.parse_args(argv)
    settings = {**(QUICK if args.quick else FULL)}
    if args.duration is not None:
        settings["duration"] = max(1, args.duration)
    if args.rounds is not None:
        settings["rounds"] = max(1, args.rounds)
    out = args.out or (os.path.join(tempfile.gettempdir(), "kvae-load-quick.json") if args.quick else RESULTS)
    wrk = find_wrk()
    started = time.time()

    def progress(msg):
        print(f"[{time.time() - started:6.0f} s] {msg}", flush=True)

    cores = len(os.sched_getaffinity(0))
    folders = {arch: artifacts(arch, progress) for arch in ARCHITECTURES}
    kserve, kserve_version = (None, "--no-kserve") if args.no_kserve else kserve_python(progress)
    if kserve is None:
        progress(f"KServe skipped: {kserve_version}")
    runs = settings["rounds"] * (2 + sum(len(http_servers(arch, folders[arch], kserve, cores))
                                         * len(cases_of(settings["connections"][arch])) for arch in ARCHITECTURES))
    progress(f"{runs} load runs of {settings['duration']} s: about {runs * (settings['duration'] + 0.5) / 60:.0f} "
             "minutes, plus starting the servers")
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
               "machine": machine(wrk, kserve_version if kserve else None, cores),
               "settings": {**settings, "latent_dim": LATENT_DIM, "train_limit": TRAIN_LIMIT},
               "kserve": {"python": kserve, "version": kserve_version} if kserve else {"skipped": kserve_version},
               "http": {}}
    with tempfile.TemporaryDirectory(prefix="kvae-load-") as tmp:
        for arch in ARCHITECTURES:
            results["http"][arch] = measure_http(arch, folders[arch], settings, kserve, cores, wrk, tmp, progress)
        results["grpc"] = measure_grpc(folders["mlp"], settings, tmp, progress)
    results["ratios"] = ratios(results["http"])
    results["goals"] = goals(results["http"], results["ratios"])
    results["wall_s"] = time.time() - started
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    progress(f"Wrote {out}")
    print(render(results))
    return results


if __name__ == "__main__":
    main()
