"""The servers under test: their commands, and each one started, health-checked and stopped on 127.0.0.1.

  kvae      `python -m kvae_serving serve ARTIFACTS` (= kvae serve) as shipped, one worker per core
  kvae_1w   the same with --workers 1 (MLP only)
  kserve    KServe's ModelServer in the cache's venv (load_kserve.py)
  bare      Starlette + uvicorn + orjson, the floor (load_bare.py)
"""

import http.client
import os
import signal
import subprocess
import sys
import time

from benchmarks import harness
from kvae_contract import artifacts as contract

HERE = os.path.dirname(os.path.abspath(__file__))
READY = "/v2/health/ready"
START_TIMEOUT = 180  # seconds for a server to answer its health check (KServe imports a lot)
STOP_TIMEOUT = 15  # seconds between SIGTERM and SIGKILL


class ServerError(RuntimeError):
    pass


def free_port():
    """A port free on 127.0.0.1 now (the server binds it a moment later; loopback only, no one else races)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
                                     cwd=harness.ROOT, env={**os.environ, **(env or {})},
                                     start_new_session=True)

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
