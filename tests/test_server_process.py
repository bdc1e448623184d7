"""`kvae serve` as a process: no TensorFlow and little memory after every route, SIGTERM drains, workers share a port.

Real subprocesses on 127.0.0.1, real sockets; every wait has a deadline.
"""

import http.client
import io
import json
import os
import pathlib
import selectors
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.serving_fixtures import metric_sample

pytest_plugins = ["tests.serving_fixtures"]

KVAE = str(pathlib.Path(sys.executable).with_name("kvae"))
RSS_LIMIT_MB = 150  # the serving process's resident memory after every route, with the demo-sized artifacts


def start(artifacts, *args, wait=120):
    """`kvae serve ARTIFACTS --port 0 ARGS` -> (process, "127.0.0.1:PORT") once its banner is out."""
    process = subprocess.Popen([KVAE, "serve", str(artifacts), "--port", "0", "--quiet", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    if not selector.select(wait):
        process.kill()
        pytest.fail(f"no banner from kvae serve within {wait} s: {process.communicate()[1].decode()[-2000:]}")
    line = process.stdout.readline().decode()  # "kvae serving ARTIFACTS on http://127.0.0.1:PORT (models: ...)"
    assert " on http://127.0.0.1:" in line, (line, process.communicate(timeout=30)[1].decode()[-2000:])
    return process, line.split(" on http://")[1].split()[0]


def stop(process, timeout=60):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"kvae serve did not exit within {timeout} s of SIGTERM: {err.decode()[-2000:]}")
    return process.returncode, err.decode()


def call(address, method, path, body=None, headers=None, timeout=60):
    """One exchange on a fresh connection -> (status, headers, body); waits for the server to accept first."""
    host, port = address.split(":")
    deadline = time.monotonic() + timeout
    while True:
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            if isinstance(body, dict):
                body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        finally:
            connection.close()


def infer_json(z):
    return {"inputs": [{"name": "z", "shape": list(z.shape), "datatype": "FP32", "data": z.ravel().tolist()}]}


def infer_binary(name, x):
    header = json.dumps({
        "inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    return header + x.astype("<f4").tobytes(), {"Content-Type": "application/octet-stream",
                                                "Inference-Header-Content-Length": str(len(header))}


def metric(address, name, **labels):
    """One sample of the server's /metrics, or 0.0."""
    status, _, text = call(address, "GET", "/metrics")
    assert status == 200
    return metric_sample(text, name, **labels)


def status_kb(pid, field):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def test_every_route_then_no_tensorflow_and_little_memory(serving_artifacts, serving_runtime):
    process, address = start(serving_artifacts, "--workers", "1", "--grpc-port", "0")
    try:
        z = serving_runtime.sample_z(3, seed=1)
        x = serving_runtime.decode(z)
        for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/encoder", "/v2/models/decoder",
                     "/v2/models/decoder/ready"):
            assert call(address, "GET", path)[0] == 200, path
        status, _, payload = call(address, "POST", "/v2/models/decoder/infer", infer_json(z))
        assert status == 200
        got = {o["name"]: np.asarray(o["data"], np.float32) for o in json.loads(payload)["outputs"]}
        np.testing.assert_allclose(got["x_mean"].reshape(x.shape), x, atol=1e-6)
        for name, value in (("z", z), ("x", x)):
            model = "decoder" if name == "z" else "encoder"
            body, headers = infer_binary(name, value)
            assert call(address, "POST", f"/v2/models/{model}/infer", body, headers)[0] == 200, model
        assert call(address, "POST", "/v2/models/encoder/infer",
                    {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                 "data": x.ravel().tolist()}]})[0] == 200
        status, headers, png = call(address, "POST", "/v1/generate", {"n": 4, "seed": 2})
        assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
        assert call(address, "POST", "/v1/generate", {"n": 2, "format": "json"})[0] == 200
        assert call(address, "POST", "/v1/reconstruct", {"images": x.tolist(), "format": "json"})[0] == 200
        upload = io.BytesIO()
        Image.fromarray((x[0, ..., 0] * 255).astype(np.uint8), "L").save(upload, format="PNG")
        status, _, png = call(address, "POST", "/v1/reconstruct", upload.getvalue(), {"Content-Type": "image/png"})
        assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
        status, _, metrics = call(address, "GET", "/metrics")
        assert status == 200 and b'endpoint="reconstruct"' in metrics

        maps = pathlib.Path(f"/proc/{process.pid}/maps").read_text()
        assert "tensorflow" not in maps and "keras" not in maps  # never loaded, whatever the routes did
        rss_mb = status_kb(process.pid, "VmRSS") / 1024
        print(f"kvae serve after every route: {rss_mb:.0f} MB resident")
        assert rss_mb <= RSS_LIMIT_MB, f"{rss_mb:.0f} MB resident"
    finally:
        rc, err = stop(process)
    assert rc == 0 and "Traceback" not in err, err[-2000:]


def test_sigterm_turns_readiness_off_then_drains_and_exits_0(serving_artifacts, serving_runtime):
    process, address = start(serving_artifacts, "--workers", "1", "--shutdown-delay", "6", "--drain-timeout", "30")
    host, port = address.split(":")
    z = serving_runtime.sample_z(2, seed=4)
    body = json.dumps(infer_json(z)).encode()
    try:
        assert call(address, "GET", "/v2/health/ready")[0] == 200
        # A request in flight across the whole shutdown: its head and half its body now, the rest at the end.
        slow = socket.create_connection((host, int(port)), timeout=60)
        slow.sendall(b"POST /v2/models/decoder/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2])
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.5)
        status, _, payload = call(address, "GET", "/v2/health/ready")
        assert status == 503 and json.loads(payload) == {"ready": False}
        assert call(address, "GET", "/v2/health/live")[0] == 200  # still answering during the delay
        assert call(address, "POST", "/v2/models/decoder/infer", infer_json(z))[0] == 200
        # Past the delay the port closes (polled, not slept: a loaded machine may take longer), the slow request
        # still in flight.
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=10).close()
            except ConnectionRefusedError:
                assert time.monotonic() - signalled >= 6 - 0.1, "the port closed before --shutdown-delay was over"
                break
            assert time.monotonic() < deadline, "the port was still open 30 s after SIGTERM"
            time.sleep(0.2)
        assert process.poll() is None, "exited with a request in flight"
        slow.sendall(body[len(body) // 2:])
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = slow.recv(65536)
            if not chunk:
                break
            answer += chunk
        slow.close()
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
        x_mean = {o["name"]: o for o in json.loads(answer.split(b"\r\n\r\n", 1)[1])["outputs"]}["x_mean"]
        np.testing.assert_allclose(np.asarray(x_mean["data"], np.float32).reshape(x_mean["shape"]),
                                   serving_runtime.decode(z), atol=1e-6)
        try:  # no second signal: the first one's shutdown ends by itself once the slow request is answered
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("kvae serve did not exit within 30 s of answering its last request")
        rc, err = process.returncode, err.decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert rc == 0, err[-2000:]


def test_two_workers_share_the_port_and_their_metrics(serving_artifacts, serving_runtime):
    process, address = start(serving_artifacts, "--workers", "2", "--threads", "1")
    try:
        z = serving_runtime.sample_z(1, seed=0)
        for _ in range(40):  # fresh connections: the kernel hands them to whichever worker accepts
            status, headers, _ = call(address, "POST", "/v2/models/decoder/infer", infer_json(z))
            assert status == 200
        children = pathlib.Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        pids = [int(p) for p in children if b"spawn_main" in pathlib.Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(pids) == 2, children  # two spawned workers
        assert metric(address, "kvae_requests_total", endpoint="infer", model="decoder", code="200") == 40.0
    finally:
        rc, err = stop(process)
    assert rc == 0 and "Traceback" not in err, err[-2000:]
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}/status") or "zombie" in pathlib.Path(f"/proc/{pid}/status").read_text()
