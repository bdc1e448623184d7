"""Prometheus metrics of the server (prometheus_client): requests, failures, latency per model and endpoint, batch sizes.

Labels: protocol ("http" or "grpc"), endpoint (a route's name, e.g. "infer", "generate",
never the raw path, so that a client cannot grow the label set), model ("" off the model
routes) and, on the counters, code (the HTTP status; gRPC answers count under the HTTP
status of their error kind).

With several worker processes, each one writes its values to files under
PROMETHEUS_MULTIPROC_DIR (set by the server before the workers start) and /metrics
adds them up: prometheus_client's multiprocess mode.
"""

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = tuple(2.0**i for i in range(11))  # 1 ... 1024


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        labels = ("protocol", "endpoint", "model")
        self.requests = Counter(
            "kvae_requests", "Requests answered.", (*labels, "code"), registry=self.registry
        )
        self.failures = Counter(
            "kvae_request_failures", "Requests answered with an error (4xx or 5xx).", (*labels, "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "kvae_request_duration_seconds", "Time from a whole request to its response, in seconds.", labels,
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch = Histogram(
            "kvae_batch_size", "Rows per inference request.", ("protocol", "model"),
            buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self._children = {}  # label values -> the metrics' children, so that a request pays one dict lookup

    def observe(self, protocol, endpoint, model, code, seconds, batch=None):
        key = (protocol, endpoint, model, code)
        children = self._children.get(key)
        if children is None:
            labels = (protocol, endpoint, model)
            children = self._children[key] = (
                self.requests.labels(*labels, str(code)),
                self.failures.labels(*labels, str(code)) if code >= 400 else None,
                self.latency.labels(*labels),
                self.batch.labels(protocol, model) if endpoint == "infer" else None,
            )
        requests, failures, latency, batch_size = children
        requests.inc()
        if failures is not None:
            failures.inc()
        latency.observe(seconds)
        if batch_size is not None and batch is not None:
            batch_size.observe(batch)

    def exposition(self):
        """-> (Content-Type, the text format's bytes), summed over the workers in multiprocess mode."""
        if os.environ.get(MULTIPROCESS_DIR):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = self.registry
        return CONTENT_TYPE_LATEST, generate_latest(registry)
