"""The HTTP server: Open Inference Protocol v2 under /v2, PNG-or-JSON endpoints for people under /v1.

Built on the standard library's ThreadingHTTPServer (one thread per connection,
HTTP/1.1 keep-alive): nothing to install, nothing heavy to import. Measured on
2 cores against the same App behind starlette 1.10 + uvicorn 0.54 (httptools):
median latency 0.14 vs 0.30 ms (health), 0.7 vs 0.9 ms (decoder infer, one z),
4 keep-alive clients 1200-1340 vs 620-1070 requests/s; starlette + uvicorn
would add 6 packages and ~85 ms of imports. `App.handle` holds all the routing
and knows nothing of sockets, should another front end be wanted.

Routes
    GET  /v2/health/live, /v2/health/ready, /v2
    GET  /v2/models/{name}[/versions/1]          model metadata (encoder, decoder; prior, log_prior for a VampPrior)
    GET  /v2/models/{name}[/versions/1]/ready
    POST /v2/models/{name}[/versions/1]/infer    JSON tensors, or binary tensor data
    POST /v1/generate     {"n", "seed", "temperature", "format"[, "label" | "labels"]} -> PNG grid, or JSON images
    POST /v1/reconstruct  JSON {"images": [...], "format"[, "labels"]} or an image file body (?label=k)
                          -> PNG grid, or JSON images
Conditional models (num_classes in the manifest) take labels: "label": k for
every image, or "labels": one class id per image; /v1/generate without them
draws the classes in turn. OIP infer passes the one-hot input y like any input.
Errors are JSON {"error": "..."} with a 4xx status.
"""

import json
import secrets
import signal
import socket
import sys
import threading
import traceback
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata

import numpy as np

from . import images, protocol
from .errors import InputError, KvaeError, NotFoundError
from .manifest import MODEL_VERSION

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

    concurrency bounds the model runs at a time, so that many connections do
    not oversubscribe the cores (each run uses the runtime's intra-op threads).
    """

    def __init__(self, runtime, max_batch_size=MAX_BATCH_SIZE, max_body_bytes=MAX_BODY_BYTES, concurrency=2):
        self.runtime = runtime
        self.max_batch_size = max_batch_size
        self.max_body_bytes = max_body_bytes
        self._compute = threading.BoundedSemaphore(concurrency)
        self.routes = {  # path -> (method, handler(headers, body, query))
            "/v2/health/live": ("GET", lambda *_: _json({"live": True})),
            "/v2/health/ready": ("GET", lambda *_: _json({"ready": True})),
            "/v2": ("GET", lambda *_: _json(self.server_metadata())),
            "/v1/generate": ("POST", self.generate),
            "/v1/reconstruct": ("POST", self.reconstruct),
        }

    def handle(self, method, target, headers, body):
        """-> (status, headers dict, body bytes). `headers` needs only a case-insensitive .get()."""
        try:
            return self._route(method, target, headers, body)
        except KvaeError as e:  # the family's status, set in one place: InputError 400, NotFoundError 404, ...
            return _error(e.status, str(e))
        except Exception as e:  # a bug: answer, log, keep serving
            traceback.print_exc(file=sys.stderr)
            return _error(500, f"internal error ({type(e).__name__}); see the server log.")

    def _route(self, method, target, headers, body):
        url = urllib.parse.urlsplit(target)
        path = url.path.rstrip("/") or "/"
        query = dict(urllib.parse.parse_qsl(url.query))
        route = self.routes.get(path)
        if route is None:
            route = self._model_route(path)
        allowed, handler = route
        if method != allowed and (method, allowed) != ("HEAD", "GET"):
            raise HTTPError(405, f"{method} is not allowed on {path}; use {allowed}.")
        return handler(headers, body, query)

    def _model_route(self, path):
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
            return "GET", lambda *_: _json(self.model_metadata(name))
        if rest == ["ready"]:
            return "GET", lambda *_: _json({"name": name, "ready": True})
        if rest == ["infer"]:
            return "POST", lambda headers, body, _: self.infer(name, headers, body)
        raise NotFoundError(f"no route {path!r}; model routes end in '', '/ready' or '/infer'.")

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
        with self._compute:
            results = self.runtime.run(name, request.inputs, [n for n, _ in request.outputs])
        datatypes = {n: t["datatype"] for n, t in spec["outputs"].items()}
        payload, response_headers = protocol.encode_response(
            name, MODEL_VERSION, request.id, results, dict(request.outputs), datatypes
        )
        return 200, response_headers, payload

    # For people

    def generate(self, headers, body, query):
        params = {**GENERATE_DEFAULTS, **_json_params(headers, body, GENERATE_DEFAULTS)}
        n = params["n"]
        if isinstance(n, int) and n > self.max_batch_size:
            raise InputError(f"n must be <= {self.max_batch_size} (the server's --max-batch-size), received {n}.")
        seed = params["seed"] if params["seed"] is not None else secrets.randbelow(2**31)
        labels = _labels(params)
        with self._compute:
            x = self.runtime.sample(n, seed, params["temperature"], labels)
        extra = {"seed": seed, "temperature": params["temperature"]}
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
        with self._compute:
            x = self.runtime.reconstruct(x, labels)
        return self._images(x, headers, fmt, {})

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
            return _json({**extra, "shape": list(x.shape), "images": x.tolist()})
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
    return status, dict(JSON), json.dumps(value, separators=(",", ":")).encode()


def _error(status, message):
    return _json({"error": message}, status)


def _content_type(headers, allowed):
    """The request's media type if `allowed` has it ('image/*' matches any image); no header passes as JSON."""
    if (headers.get("Content-Encoding") or "identity").lower() != "identity":
        raise HTTPError(
            415, f"Content-Encoding {headers.get('Content-Encoding')!r} is not supported; send the body uncompressed."
        )
    media = (headers.get("Content-Type") or protocol.JSON_TYPE).split(";")[0].strip().lower()
    if media in allowed or ("image/*" in allowed and media.startswith("image/")):
        return media
    raise HTTPError(415, f"Content-Type {media!r} is not accepted here; use one of {list(allowed)}.")


def _json_params(headers, body, known):
    """A JSON object body with only `known` keys; an empty body is {}.

    curl -d labels its body application/x-www-form-urlencoded; /v1 reads that as JSON too.
    """
    _content_type(headers, (protocol.JSON_TYPE, FORM_TYPE))
    if not body.strip():
        return {}
    params = protocol.json_object(body)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InputError(f"unknown keys {unknown}; this endpoint takes {sorted(known)}.")
    return params


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: tritonclient and browsers reuse connections
    server_version = "kvae-serving"
    timeout = 30  # seconds a silent client may hold its connection thread
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle + delayed ACK would add 40 ms

    def handle_request(self):
        app = self.server.app
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return self._send(*_error(411, "chunked request bodies are not supported; send Content-Length."))
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            return self._send(*_error(400, f"bad Content-Length {self.headers.get('Content-Length')!r}."))
        if length > app.max_body_bytes:
            self.close_connection = True
            if length <= 4 * app.max_body_bytes:  # read and drop it, so that a client still sending sees the 413
                while length > 0 and (chunk := self.rfile.read(min(length, 2**16))):
                    length -= len(chunk)
            limit = f"this server's limit of {app.max_body_bytes} (--max-body-bytes)"
            return self._send(*_error(413, f"the body has {self.headers['Content-Length']} bytes, over {limit}."))
        body = self.rfile.read(length)
        if len(body) < length:  # the client went away
            self.close_connection = True
            return
        self._send(*app.handle(self.command, self.path, self.headers, body))

    def __getattr__(self, name):
        # http.server calls do_<METHOD>: every method goes to App, which answers 405 where it does not fit (not 501).
        if name.startswith("do_"):
            return self.handle_request
        raise AttributeError(name)

    def _send(self, status, headers, payload):
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def send_error(self, code, message=None, explain=None):
        """http.server's own answers to malformed HTTP (bad request line, headers...), as JSON errors.

        Its 5xx ones (505 for an unknown HTTP version) are about the request too: they become 400s.
        """
        self.close_connection = True
        self._send(*_error(code if code < 500 else 400, message or HTTPStatus(code).phrase))

    def log_message(self, format, *args):
        if not self.server.quiet:
            super().log_message(format, *args)


class Server(ThreadingHTTPServer):
    daemon_threads = True  # open keep-alive connections do not hold up shutdown

    def __init__(self, app, host="127.0.0.1", port=8000, quiet=False):
        self.app, self.quiet = app, quiet
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(runtime, host="127.0.0.1", port=8000, quiet=False, **limits):
    """A bound, not yet running Server; port 0 picks a free port (see .url). limits: App's keyword arguments."""
    return Server(App(runtime, **limits), host, port, quiet)


def serve(runtime, host="127.0.0.1", port=8000, **kwargs):
    """Serves until Ctrl-C or SIGTERM."""
    server = make_server(runtime, host, port, **kwargs)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # SystemExit ends serve_forever; `finally` cleans up
    print(f"kvae serving {runtime.artifacts_dir} on {server.url} (models: {', '.join(runtime.models)})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
