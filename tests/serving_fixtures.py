"""Fixtures for the serving tests, loaded with `pytest_plugins = ["tests.serving_fixtures"]` so each is built once.

serving_artifacts: `kvae_export.export_run` of conftest's tiny_run; serving_runtime: a Runtime on them;
vamp_artifacts, vamp_runtime: the same for conftest's tiny_vamp_run (a VampPrior, K = 10);
live_server: the real HTTP server on 127.0.0.1 (a free port) in a background thread;
conditional_2d_artifacts: a conditional model with two latent dimensions, evaluated (`kvae evaluate`: kl_per_dim)
before it is exported (the explorer's class picker, plane and KL ranking).
"""

import http.client
import json
import shutil
import threading

import pytest

MAX_BATCH_SIZE = 64  # small limits keep the over-the-limit tests cheap
MAX_BODY_BYTES = 2**20


@pytest.fixture(scope="session")
def serving_artifacts(tiny_run, tmp_path_factory):
    import kvae_export
    from tests.conftest import shared_path

    return shared_path(tmp_path_factory, "serving_artifacts", lambda out: kvae_export.export_run(tiny_run[0], out))


@pytest.fixture(scope="session")
def serving_runtime(serving_artifacts):
    from kvae_serving.runtime import Runtime

    return Runtime(serving_artifacts)


@pytest.fixture(scope="session")
def vamp_artifacts(tiny_vamp_run, tmp_path_factory):
    import kvae_export
    from tests.conftest import shared_path

    return shared_path(tmp_path_factory, "vamp_artifacts", lambda out: kvae_export.export_run(tiny_vamp_run[0], out))


@pytest.fixture(scope="session")
def vamp_runtime(vamp_artifacts):
    from kvae_serving.runtime import Runtime

    return Runtime(vamp_artifacts)


@pytest.fixture(scope="session")
def conditional_2d_artifacts(splits, tmp_path_factory):
    """A Bernoulli MLP VAE on 10 classes with latent_dim 2, one epoch on 1,000 real images, evaluated on 200 test
    images (k = 2: evaluation.json with kl_per_dim, which export_run copies into the manifest), then exported."""
    import kvae_export
    from kvae.runs import evaluate_run
    from tests.conftest import _train_tiny, shared_path

    def build(out):
        run_dir = out.parent / "conditional_2d_run"
        shutil.rmtree(run_dir, ignore_errors=True)
        _train_tiny(run_dir, splits, train_limit=1000, latent_dim=2, num_classes=10)
        evaluate_run(run_dir, k=2, limit=200, verbose=0)
        kvae_export.export_run(run_dir, out)

    return shared_path(tmp_path_factory, "conditional_2d_artifacts", build)


@pytest.fixture(scope="session")
def live_server(serving_runtime):
    from kvae_serving.server import make_server

    srv = make_server(
        serving_runtime, "127.0.0.1", 0, quiet=True, max_batch_size=MAX_BATCH_SIZE, max_body_bytes=MAX_BODY_BYTES
    )
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(10)


def address(server):
    host, port = server.server_address[:2]
    return f"{host}:{port}"


def request(server, method, path, body=None, headers=None, timeout=30):
    """One HTTP exchange on a fresh connection -> (status, headers, body bytes)."""
    host, port = server.server_address[:2]
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()  # headers: case-insensitive, as HTTP
    finally:
        connection.close()


def error_of(status, body):
    """The message of a JSON error response, after checking it is one (4xx, {"error": str})."""
    assert 400 <= status < 500, (status, body[:300])
    message = json.loads(body)["error"]
    assert isinstance(message, str) and message
    return message


def metric_sample(text, name, **labels):
    """The value of the sample `name` whose labels include `labels` in a /metrics body (Prometheus text, read by
    prometheus_client's own parser), or 0.0 when there is none (a counter not yet incremented)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0
