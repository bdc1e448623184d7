"""What the server answers, whatever carries it: Open Inference Protocol v2 under /v2, PNG-or-JSON for people under /v1.

`App.handle(method, path, query, headers, body) -> (status, headers, body)` holds all
the routing and knows nothing of sockets: serving/http.py carries it over HTTP
(uvicorn), serving/grpc.py answers the same protocol over gRPC with the same checks.

Routes
    GET  /v2/health/live, /v2/health/ready, /v2
    GET  /v2/models/{name}[/versions/1]          model metadata (encoder, decoder; prior, log_prior for a VampPrior
                                                 or an HVAE)
    GET  /v2/models/{name}[/versions/1]/ready
    POST /v2/models/{name}[/versions/1]/infer    JSON tensors, or binary tensor data
    POST /v1/generate     {"n", "seed", "temperature", "format"[, "label" | "labels"]} -> PNG grid, or JSON images
                          (and their codes z)
    POST /v1/reconstruct  JSON {"images": [...], "format"[, "labels"]} or an image file body (?label=k)
                          -> PNG grid, or JSON images
    POST /v1/encode       the same inputs -> JSON codes {"z", "z_log_var" (null for an HVAE)[, "images": a file's pixels]}
    GET  /v1/model        JSON: latent_dim, classes, prior, levels, kl_per_dim, test images, limits (what the page needs)
    GET  /v1/test-images  the artifacts' test images (test_images.png): PNG grid, or JSON images (?format=json)
    GET  /, /explorer/*   the latent-space explorer page (serving/static.py: a fixed list of files)
Conditional models (num_classes in the manifest) take labels: "label": k for
every image, or "labels": one class id per image; /v1/generate without them
draws the classes in turn. OIP infer passes the one-hot input y like any input.
Errors are JSON {"error": "..."} with a 4xx status (503 from /v2/health/ready while draining).
    GET  /metrics         Prometheus text: requests, failures, latency per model and endpoint, batch sizes
"""

import secrets
import sys
import time
import traceback
import urllib.parse
from importlib import metadata

import numpy as np
import orjson

from kvae_contract.artifacts import KL_PER_DIM, default_labels

from . import images, protocol, static, test_images
from .errors import InputError, KvaeError, NotFoundError
from .manifest import HIERARCHY, MODEL_VERSION

MAX_BATCH_SIZE = 1024
MAX_BODY_BYTES = 64 * 2**20  # a full JSON batch of 1024 28x28 images is about 16 MiB
EXTENSIONS = ["binary_tensor_data"]
GENERATE_DEFAULTS = {"n": 16, "seed": None, "temperature": 1.0, "format": None, "label": None, "labels": None}
JSON = {"Content-Type": protocol.JSON_TYPE}
FORM_TYPE = "application/x-www-form-urlencoded"  # what curl -d and urllib send by default


class HTTPError(InputError):
    """A request HTTP itself refuses (405, 415), with that status; other errors carry their kind's status."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class App:
    """Requests -> responses, on top of a Runtime.

    Args:
        runtime: the kvae_serving.runtime.Runtime to answer with.
        max_batch_size: the largest batch (and /v1/generate n) accepted.
        max_body_bytes: the largest request body; the transports refuse more before reading it.
        metrics: a kvae_serving.metrics.Metrics to count requests in, or None.

    `ready` is what /v2/health/ready answers; the server clears it when it starts to drain.
    """

    def __init__(self, runtime, max_batch_size=MAX_BATCH_SIZE, max_body_bytes=MAX_BODY_BYTES, metrics=None):
        self.runtime = runtime
        self.max_batch_size = max_batch_size
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.ready = True
        self.test_images = test_images.load(runtime)  # (images, labels), or None for artifacts without them
        self.routes = {  # path -> (method, endpoint label, handler(headers, body, query))
            "/v2/health/live": ("GET", "live", lambda *_: _json({"live": True})),
            "/v2/health/ready": ("GET", "ready", lambda *_: self.readiness()),
            "/v2": ("GET", "server_metadata", lambda *_: _json(self.server_metadata())),
            "/v1/generate": ("POST", "generate", self.generate),
            "/v1/reconstruct": ("POST", "reconstruct", self.reconstruct),
            "/v1/encode": ("POST", "encode", self.encode),
            "/v1/model": ("GET", "model", lambda *_: _json(self.model_facts())),
            "/v1/test-images": ("GET", "test_images", self.test_images_route),
            "/metrics": ("GET", "metrics", self.metrics_text),
        }
        for path, (headers, payload) in static.load().items():  # the explorer page: these paths and no others
            self.routes[path] = ("GET", "explorer", lambda *_, h=headers, p=payload: (200, dict(h), p))
        self._model_routes = {}  # path -> what _model_route made of it (a few per model)

    def handle(self, method, path, query, headers, body, protocol_name="http"):
        """-> (status, headers dict, body bytes).

        path: the request path as sent (percent-encoded); query: the query string;
        headers: anything with a case-insensitive .get(); body: bytes.
        """
        start = time.perf_counter()
        endpoint, model, batch = "unknown", "", None
        try:
            route = self.routes.get(path) or self._model_route(path)
            allowed, endpoint, handler, model = route if len(route) == 4 else (*route, "")
            if method != allowed and (method, allowed) != ("HEAD", "GET"):
                raise HTTPError(405, f"{method} is not allowed on {path}; use {allowed}.")
            response = handler(headers, body, dict(urllib.parse.parse_qsl(query)) if query else {})
            if len(response) == 4:  # infer says its batch size
                batch, response = response[3], response[:3]
        except KvaeError as e:  # the family's status, set in one place: InputError 400, NotFoundError 404, ...
            response = error_response(e.status, str(e))
        except Exception as e:  # a bug: answer, log, keep serving
            traceback.print_exc(file=sys.stderr)
            response = error_response(500, f"internal error ({type(e).__name__}); see the server log.")
        if self.metrics is not None:
            self.metrics.observe(protocol_name, endpoint, model, response[0], time.perf_counter() - start, batch)
        return response

    def _model_route(self, path):
        """/v2/models/{name}[/versions/{v}][/ready | /infer] -> (method, endpoint, handler, model)."""
        route = self._model_routes.get(path)
        if route is not None:
            return route
        sent, path = path, path.rstrip("/") or "/"
        if path in self.routes:
            return self.routes[path]
        parts = path.split("/")  # "", "v2", "models", name[, "versions", v][, "ready" | "infer"]
        if parts[:3] != ["", "v2", "models"] or len(parts) < 4:
            raise NotFoundError(
                f"no route {path!r}; see /v2 (Open Inference Protocol) and /v1/generate, /v1/reconstruct."
            )
        name, rest = urllib.parse.unquote(parts[3]), parts[4:]
        if rest[:1] == ["versions"] and len(rest) >= 2:
            version, rest = urllib.parse.unquote(rest[1]), rest[2:]
        else:
            version = None
        if name not in self.runtime.models:
            raise NotFoundError(f"unknown model {name!r}; models are {list(self.runtime.models)}.")
        if version not in (None, MODEL_VERSION):
            raise NotFoundError(f"model {name!r} has no version {version!r}; versions are [{MODEL_VERSION!r}].")
        if rest == []:
            route = "GET", "model_metadata", lambda *_: _json(self.model_metadata(name)), name
        elif rest == ["ready"]:
            route = "GET", "model_ready", lambda *_: _json({"name": name, "ready": True}), name
        elif rest == ["infer"]:
            route = "POST", "infer", lambda headers, body, _: self.infer(name, headers, body), name
        else:
            raise NotFoundError(f"no route {path!r}; model routes end in '', '/ready' or '/infer'.")
        if len(self._model_routes) < 64:  # valid paths only, and a bounded number of spellings of them
            self._model_routes[sent] = route
        return route

    def readiness(self):
        return _json({"ready": self.ready}, 200 if self.ready else 503)

    def metrics_text(self, headers, body, query):
        if self.metrics is None:
            raise NotFoundError("this server keeps no metrics.")
        content_type, payload = self.metrics.exposition()
        return 200, {"Content-Type": content_type}, payload

    # Open Inference Protocol

    def server_metadata(self):
        try:
            version = metadata.version("kvae")  # the installed distribution; importing kvae is not allowed here
        except metadata.PackageNotFoundError:
            version = str(self.runtime.manifest.get("kvae_version", "unknown"))
        return {"name": "kvae", "version": version, "extensions": EXTENSIONS}

    def model_metadata(self, name):
        spec = self.runtime.models[name]
        tensors = {
            kind: [{k: t[k] for k in ("name", "datatype", "shape")} for t in spec[kind].values()]
            for kind in ("inputs", "outputs")
        }
        return {"name": name, "versions": [MODEL_VERSION], "platform": "onnxruntime_onnx", **tensors}

    def infer(self, name, headers, body):
        header_length = headers.get(protocol.HEADER_LENGTH)
        _content_type(headers, (protocol.JSON_TYPE, protocol.BINARY_TYPE))
        spec = self.runtime.models[name]
        request = protocol.parse_request(body, header_length, spec, self.max_batch_size)
        results = self.runtime.run(name, request.inputs, [n for n, _ in request.outputs])
        datatypes = {n: t["datatype"] for n, t in spec["outputs"].items()}
        payload, response_headers = protocol.encode_response(
            name, MODEL_VERSION, request.id, results, dict(request.outputs), datatypes
        )
        return 200, response_headers, payload, protocol.batch_size(request.inputs)

    # For people

    def generate(self, headers, body, query):
        params = {**GENERATE_DEFAULTS, **_json_params(headers, body, GENERATE_DEFAULTS)}
        n = params["n"]
        if isinstance(n, int) and n > self.max_batch_size:
            raise InputError(f"n must be <= {self.max_batch_size} (the server's --max-batch-size), received {n}.")
        seed = params["seed"] if params["seed"] is not None else secrets.randbelow(2**31)
        labels = _labels(params)
        # Runtime.sample's steps, kept apart so that JSON answers carry the codes behind the images too.
        z = self.runtime.sample_z(n, seed, params["temperature"])
        if labels is None and self.runtime.num_classes is not None:
            labels = default_labels(len(z), self.runtime.num_classes)  # every class in turn, as Runtime.sample
        x = self.runtime.decode(z, labels)
        extra = {"seed": seed, "temperature": params["temperature"], "z": z}
        if labels is not None:
            extra["labels"] = labels
        return self._images(x, headers, params["format"] or query.get("format"), extra)

    def reconstruct(self, headers, body, query):
        media = _content_type(headers, (protocol.JSON_TYPE, FORM_TYPE, "image/*"))
        fmt = query.get("format")
        if media.startswith("image/"):
            x = images.read_image(body, self.runtime.input_shape)
            labels = _labels({"label": _query_int(query, "label")})
        else:
            params = _json_params(headers, body, {"images": None, "format": None, "label": None, "labels": None})
            fmt = params.get("format") or fmt
            x = self._json_images(params.get("images"))
            labels = _labels(params)
        x = self.runtime.reconstruct(x, labels)
        return self._images(x, headers, fmt, {})

    def encode(self, headers, body, query):
        """Codes of images sent as /v1/reconstruct takes them: the encoder's z_mean and z_log_var (an HVAE: z, null).

        An image file's answer also holds its pixels as the model reads them (its size
        checked, converted to the model's channels), which the client cannot know otherwise.
        """
        media = _content_type(headers, (protocol.JSON_TYPE, FORM_TYPE, "image/*"))
        extra = {}
        if media.startswith("image/"):
            x = extra["images"] = images.read_image(body, self.runtime.input_shape)
            labels = _labels({"label": _query_int(query, "label")})
        else:
            params = _json_params(headers, body, {"images": None, "label": None, "labels": None})
            x = self._json_images(params.get("images"))
            labels = _labels(params)
        z, z_log_var = self.runtime.encode(x, labels)
        return _json({"shape": list(z.shape), "z": z, "z_log_var": z_log_var, **extra})

    def model_facts(self):
        """What a client needs to draw and explore this model without reading the manifest itself."""
        runtime, manifest = self.runtime, self.runtime.manifest
        return {
            "latent_dim": runtime.latent_dim,
            "input_shape": list(runtime.input_shape),
            "num_classes": runtime.num_classes,
            "prior": runtime.prior,
            "num_components": runtime.num_components,
            "levels": manifest[HIERARCHY]["levels"] if runtime.hierarchical else None,
            "likelihood": runtime.likelihood,
            "models": list(runtime.models),
            KL_PER_DIM: manifest.get(KL_PER_DIM),  # from the run's `kvae evaluate`, when it was evaluated
            "test_images": 0 if self.test_images is None else len(self.test_images[0]),
            "max_batch_size": self.max_batch_size,
            "max_body_bytes": self.max_body_bytes,
        }

    def test_images_route(self, headers, body, query):
        if self.test_images is None:
            raise NotFoundError(
                "these artifacts have no test images (test_images.png, written by kvae export since the explorer): "
                "re-export the model to get them, or send your own images."
            )
        x, labels = self.test_images
        return self._images(x, headers, query.get("format"), {} if labels is None else {"labels": labels})

    def _json_images(self, value):
        """A JSON array of images (n, *input_shape), or (n, h, w) for one channel, pixels in [0, 1] -> float32."""
        shape = self.runtime.input_shape
        if value is None:
            raise InputError(f"send {{'images': [...]}}: a list of images shaped {list(shape)}, pixels in [0, 1].")
        try:
            x = protocol.json_numbers(value)
        except (ValueError, TypeError, RecursionError):
            raise InputError("'images' is ragged or not a nested list of numbers.") from None
        if x.dtype.kind not in "iuf":
            raise InputError("'images' must hold numbers only.")
        if shape[-1] == 1 and x.shape[1:] == shape[:-1]:
            x = x[..., None]  # grey images without the channel axis
        if x.ndim and len(x) > self.max_batch_size:
            raise InputError(f"at most {self.max_batch_size} images per request (--max-batch-size), received {len(x)}.")
        if x.shape[1:] != shape or len(x) == 0:
            raise InputError(
                f"'images' must be shaped [n, {', '.join(map(str, shape))}] with n >= 1, received {list(x.shape)}."
            )
        if not ((x >= 0) & (x <= 1)).all():  # False for NaN too
            received = "NaN or Inf" if not np.isfinite(x).all() else f"values from {x.min():.6g} to {x.max():.6g}"
            raise InputError(
                f"'images': pixels must be numbers in [0, 1] (divide 8-bit values by 255); received {received}."
            )
        return x.astype(np.float32)

    def _images(self, x, headers, fmt, extra):
        if fmt is None:
            fmt = "json" if protocol.JSON_TYPE in (headers.get("Accept") or "") else "png"
        if fmt == "json":
            return _json({**extra, "shape": list(x.shape), "images": x})
        if fmt == "png":
            seed = {"X-Seed": str(extra["seed"])} if "seed" in extra else {}
            return 200, {"Content-Type": "image/png", **seed}, images.grid_png(x)
        raise InputError(f"format must be 'png' or 'json', received {fmt!r}.")


def _labels(params):
    """"label": k or "labels": [...] of a request -> what Runtime takes (None: neither was sent)."""
    label, labels = params.get("label"), params.get("labels")
    if label is not None and labels is not None:
        raise InputError("send 'label' (one class for every image) or 'labels' (one per image), not both.")
    if label is not None and not (isinstance(label, int) and not isinstance(label, bool)):
        raise InputError(f"'label' must be an int class id, received {label!r}.")
    if labels is not None and not (
        isinstance(labels, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in labels)
    ):
        raise InputError("'labels' must be a list of int class ids, one per image.")
    return label if label is not None else labels


def _query_int(query, name):
    if name not in query:
        return None
    try:
        return int(query[name])
    except ValueError:
        raise InputError(f"?{name}= must be an int, received {query[name]!r}.") from None


def _json(value, status=200):
    return status, dict(JSON), orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(status, message):
    return _json({"error": message}, status)


def _content_type(headers, allowed):
    """The request's media type if `allowed` has it ('image/*' matches any image); no header passes as JSON."""
    if (headers.get("Content-Encoding") or "identity").lower() != "identity":
        raise HTTPError(
            415, f"Content-Encoding {headers.get('Content-Encoding')!r} is not supported; send the body uncompressed."
        )
    media = media_type(headers)
    if media in allowed or ("image/*" in allowed and media.startswith("image/")):
        return media
    raise HTTPError(415, f"Content-Type {media!r} is not accepted here; use one of {list(allowed)}.")


def media_type(headers):
    """The request's Content-Type without parameters, lower-case; no header reads as JSON."""
    return (headers.get("Content-Type") or protocol.JSON_TYPE).split(";")[0].strip().lower()


JSON_MEDIA = (protocol.JSON_TYPE, FORM_TYPE)  # the media types App reads as JSON (/v1 takes curl -d's form type)


def _json_params(headers, body, known):
    """A JSON object body with only `known` keys; an empty body is {}.

    curl -d labels its body application/x-www-form-urlencoded; /v1 reads that as JSON too.
    """
    _content_type(headers, JSON_MEDIA)
    if not body.strip():
        return {}
    params = protocol.json_object(body)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InputError(f"unknown keys {unknown}; this endpoint takes {sorted(known)}.")
    return params
