"""Running the server: worker processes on one port, HTTP (uvicorn) and optionally gRPC, drained on SIGTERM.

Process model. `serve(options)` binds the HTTP socket (and reserves the gRPC port) in the
calling process, then runs `options.workers` workers. One worker runs in this process;
more are spawned processes that share the listening socket, each with its own
onnxruntime session using cores / workers intra-op threads, so that N workers on N cores
neither oversubscribe nor idle a core. The parent forwards SIGTERM and SIGINT to its
workers and exits when they have; if a worker dies on its own, the others are stopped
and the exit status says so (an orchestrator restarts the whole server).

Shutdown. SIGTERM first clears readiness: /v2/health/ready (and gRPC ServerReady) answer
"not ready" while the server keeps answering everything else for `shutdown_delay` seconds,
so that a load balancer stops sending first. Then the listening sockets close, requests in
flight finish (up to `drain_timeout` seconds) and the process exits 0. SIGINT (Ctrl-C)
skips the delay; a second signal stops at once.

`Server` is one worker's HTTP and gRPC servers around an App; tests run it in a thread.
"""

import dataclasses
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

import uvicorn

from .app import MAX_BATCH_SIZE, MAX_BODY_BYTES, App
from .connection import Protocol
from .http import HttpApp
from .metrics import MULTIPROCESS_DIR, Metrics

BACKLOG = 4096  # connections the kernel queues before a worker accepts them (SOMAXCONN caps it)


@dataclasses.dataclass(frozen=True)
class Options:
    """What `kvae serve` was asked for (picklable: spawned workers receive it)."""

    artifacts: str
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None  # None: no gRPC; 0: a free port
    workers: int = 1
    threads: int | None = None  # onnxruntime intra-op threads per worker; None: cores // workers
    concurrency: int = 1  # per worker: /v1 requests and large bodies run in a pool of this many threads
    max_batch_size: int = MAX_BATCH_SIZE
    max_body_bytes: int = MAX_BODY_BYTES
    access_log: bool = False
    quiet: bool = False
    shutdown_delay: float = 0.0
    drain_timeout: float = 30.0


def cores():
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0))


def worker_threads(options):
    return options.threads or max(1, cores() // options.workers)


class Server:
    """One worker: uvicorn on `sock` (or a new socket on host:port) and, with grpc_port, a gRPC server.

    `serve_forever()` runs until `shutdown()` or, in the main thread, SIGTERM/SIGINT.
    """

    def __init__(self, app, host="127.0.0.1", port=8000, sock=None, grpc_port=None, concurrency=1,
                 access_log=False, quiet=True, shutdown_delay=0.0, drain_timeout=30.0):
        self.app = app
        self.socket = sock if sock is not None else bind(host, port)
        self.server_address = self.socket.getsockname()[:2]
        self.grpc = self.grpc_address = None
        if grpc_port is not None:
            from .grpc import make_grpc_server  # grpcio loads only when asked for

            self.grpc, port = make_grpc_server(app, host, grpc_port, threads=max(4, concurrency))
            self.grpc_address = (host, port)
        config = uvicorn.Config(
            HttpApp(app, threads=concurrency),
            http=Protocol,
            lifespan="off",
            ws="none",  # no WebSocket routes: nothing to upgrade to
            access_log=access_log,
            log_level="warning" if quiet else "info",
            server_header=False,  # nothing about the software in a response
            proxy_headers=False,  # X-Forwarded-* would only rename the client in logs: not worth its time per request
            backlog=BACKLOG,
            timeout_graceful_shutdown=drain_timeout,
        )
        self._uvicorn = _Uvicorn(config, app, shutdown_delay)
        self._done = threading.Event()

    @property
    def url(self):
        host, port = self.server_address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def serve_forever(self):
        if self.grpc is not None:
            self.grpc.start()
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            if self.grpc is not None:
                self.grpc.stop(grace=self._uvicorn.config.timeout_graceful_shutdown).wait()
            self._done.set()

    def shutdown(self, timeout=30):
        """Stops serve_forever (running in another thread) gracefully and waits for it."""
        self._uvicorn.should_exit = True
        self._done.wait(timeout)

    def server_close(self):
        self.socket.close()


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, with readiness cleared first and the exit delayed on SIGTERM (see the module)."""

    def __init__(self, config, app, shutdown_delay):
        super().__init__(config)
        self.app = app
        self.shutdown_delay = shutdown_delay
        self._exit_at = None

    def handle_exit(self, sig, frame):
        self.app.ready = False
        if self.should_exit:  # a second signal
            self.force_exit = True
        elif sig == signal.SIGTERM and self.shutdown_delay > 0 and self._exit_at is None:
            self._exit_at = time.monotonic() + self.shutdown_delay
        else:
            self.should_exit = True
        # uvicorn would raise the signal again after its shutdown (exiting by the signal); kvae exits 0.

    async def on_tick(self, counter):
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)


def bind(host, port, reuse_port=False, listen=True):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def make_app(options, threads):
    from .runtime import Runtime

    # The server's batch limit is the runtime's too, so that /v2 inference and /v1 requests stop at the same size.
    runtime = Runtime(options.artifacts, intra_op_num_threads=threads, max_batch_size=options.max_batch_size)
    return App(runtime, options.max_batch_size, options.max_body_bytes, metrics=Metrics())


def run_worker(options, sock, grpc_port):
    """One worker process (or the only one): load the artifacts, serve until told to stop."""
    _raise_open_files_limit()
    app = make_app(options, worker_threads(options))
    server = Server(app, options.host, sock=sock, grpc_port=grpc_port, concurrency=options.concurrency,
                    access_log=options.access_log, quiet=options.quiet, shutdown_delay=options.shutdown_delay,
                    drain_timeout=options.drain_timeout)
    server.serve_forever()


def serve(options):
    """Serves until SIGTERM or Ctrl-C; returns the exit status."""
    from . import manifest

    models = manifest.model_names(manifest.load(options.artifacts))  # a bad directory fails here, before binding
    sock = bind(options.host, options.port)
    grpc_port = grpc_reservation = None
    if options.grpc_port is not None:
        # Held (bound, never listening) so that port 0 resolves once for every worker; gRPC binds with SO_REUSEPORT.
        grpc_reservation = bind(options.host, options.grpc_port, reuse_port=True, listen=False)
        grpc_port = grpc_reservation.getsockname()[1]
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    grpc = f"; gRPC on {options.host}:{grpc_port}" if grpc_port is not None else ""
    print(f"kvae serving {options.artifacts} on {url} (models: {', '.join(models)}{grpc}; "
          f"{options.workers} worker{'s' * (options.workers > 1)} x {worker_threads(options)} threads); "
          f"explorer: {url}/", flush=True)
    if options.workers == 1:
        run_worker(options, sock, grpc_port)
        return 0
    metrics_dir = tempfile.mkdtemp(prefix="kvae-metrics-")
    os.environ[MULTIPROCESS_DIR] = metrics_dir  # inherited by the workers: their metrics add up
    try:
        return _supervise(options, sock, grpc_port)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if grpc_reservation is not None:
            grpc_reservation.close()


def _supervise(options, sock, grpc_port):
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked onnxruntime threads
    workers = [context.Process(target=run_worker, args=(options, sock, grpc_port), name=f"kvae-worker-{i}")
               for i in range(options.workers)]
    stopping = []

    def forward(sig, frame):
        stopping.append(sig)
        for w in workers:
            if w.pid is not None and w.exitcode is None:
                os.kill(w.pid, sig)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for w in workers:
            w.start()
        while any(w.is_alive() for w in workers):
            multiprocessing.connection.wait([w.sentinel for w in workers if w.is_alive()], timeout=1.0)
            died = [w for w in workers if w.exitcode not in (None, 0)]
            if died and not stopping:
                print(f"kvae serve: worker {died[0].name} exited with status {died[0].exitcode}; stopping the others.",
                      file=sys.stderr, flush=True)
                forward(signal.SIGTERM, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    bad = [w.exitcode for w in workers if w.exitcode != 0]
    return 0 if not bad or (stopping and all(code in (0, -signal.SIGTERM, -signal.SIGINT) for code in bad)) else 1


def _raise_open_files_limit():
    """Each connection is a file descriptor; the soft limit (often 1024) goes up to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def make_server(runtime, host="127.0.0.1", port=8000, quiet=True, grpc_port=None, **limits):
    """A bound, not yet running Server around a Runtime (port 0: a free one, see .url); limits: App's keywords."""
    return Server(App(runtime, metrics=Metrics(), **limits), host, port, grpc_port=grpc_port, quiet=quiet)
