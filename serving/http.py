"""App over HTTP/1.1: a minimal ASGI application run by uvicorn (httptools parser, uvloop event loop).

Why these: on this 2-core machine a bare Starlette handler on uvicorn answered ten times
the requests of the standard library's ThreadingHTTPServer (BENCHMARKS.md, "Serving");
Starlette's routing adds nothing App does not already do, so App sits on ASGI directly.

What this layer adds to App: the body limits (Content-Length over --max-body-bytes is
refused before a byte is read; a body that does not arrive within body_timeout gets 408),
a bound on the body bytes held at once, a bound on the JSON values one request may make
the parser build, and where a request runs. Small Open Inference Protocol requests run
on the event loop itself (a batch-1 decoder call takes tens of microseconds, less than a
hop to a thread); /v1 requests and large bodies run in a small thread pool, so that a
1024-image PNG grid does not stall the other connections.

Memory. A JSON body costs far more parsed than sent: each number becomes a Python float
(24 bytes) in a list (8 more) before NumPy sees it, so "0.0," (4 bytes) costs 32 and a
32 MiB body of them took 520 MB. App checks a tensor's element count after the parse, too
late for that; so before it, a large JSON body whose commas (at least the values it holds,
less one per array) exceed what any request to these models may hold is refused with 413.
What one worker holds at once is then about: 2 x --max-body-bytes of bodies (the budget
below; the others wait with theirs unread, in the socket) + one more body while its chunks
are joined + `threads` parses of at most max_json_values values (~64 bytes each).

The connections themselves are serving/connection.py's `Protocol`.
"""

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor

from .app import JSON_MEDIA, error_response, media_type

INLINE_BYTES = 64 * 2**10  # Open Inference Protocol bodies up to this run on the event loop
BODY_TIMEOUT = 30.0  # seconds from the end of the headers to the end of the body (and, before that, the longest
# a large body waits for the body budget)
JSON_SLACK = 64 * 2**10  # commas a request may hold beyond its tensors' values: keys, shapes, ids, parameters



class Headers(dict):
    """ASGI's [(name, value)] bytes pairs -> {lower-case name: value}; .get() takes any case (the last value wins)."""

    def __init__(self, raw):
        super().__init__((k.decode("latin-1"), v.decode("latin-1")) for k, v in raw)

    def get(self, name, default=None):
        return dict.get(self, name.lower(), default)


class HttpApp:
    """The ASGI application around an App.

    Args:
        app: the kvae_serving.app.App to answer with.
        threads: the pool that runs /v1 requests and large bodies (each run also uses the
            runtime's intra-op threads).
        body_timeout: seconds a client has to send a body once its headers are in, and
            (separately) the longest a large body waits for the body budget (503 after it).

    max_json_values: the most values (commas) a large JSON body may hold, from the models'
    inputs and App's max_batch_size (None: no such check, for an App without a Runtime).
    """

    def __init__(self, app, threads=1, body_timeout=BODY_TIMEOUT):
        if threads < 1:
            raise ValueError(f"threads must be >= 1, received {threads}")
        self.app = app
        self.threads = threads
        self.body_timeout = body_timeout
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="kvae-compute")
        # Body bytes held at once by the requests past INLINE_BYTES: those waiting leave theirs in the socket.
        self.body_budget = 2 * app.max_body_bytes
        self._held = 0
        self._released = None  # asyncio.Condition, made on the event loop
        self.max_json_values = _max_json_values(app)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # "lifespan" (turned off in the server) or websockets: nothing to do
            return
        if scope["http_version"] not in ("1.1", "1.0"):
            message = f"HTTP/{scope['http_version']} is not supported; send HTTP/1.1."
            return await _send(send, *error_response(400, message), close=True)
        headers = Headers(scope["headers"])
        if "transfer-encoding" in headers:
            return await _send(send, *error_response(411, "chunked request bodies are not supported; send Content-Length."),
                               close=True)
        length = int(headers.get("content-length") or 0)  # httptools refused anything but digits
        if length > self.app.max_body_bytes:
            if length <= 4 * self.app.max_body_bytes:  # read and drop it, so that a client still sending sees the 413
                try:
                    await self._body(receive, keep=False)
                except TimeoutError:
                    pass
            limit = f"this server's limit of {self.app.max_body_bytes} (--max-body-bytes)"
            return await _send(send, *error_response(413, f"the body has {length} bytes, over {limit}."), close=True)
        large = length > INLINE_BYTES
        if large:
            try:
                async with asyncio.timeout(self.body_timeout):
                    await self._hold(length)
            except TimeoutError:
                message = (f"the server is busy with other large requests (over {INLINE_BYTES} bytes) and could not "
                           f"take this one within {self.body_timeout:g} s; retry later.")
                status, response_headers, payload = error_response(503, message)
                return await _send(send, status, {**response_headers, "Retry-After": "1"}, payload, close=True)
        try:
            try:
                body = await self._body(receive) if length else b""
            except TimeoutError:
                message = f"the body did not arrive within {self.body_timeout:g} s of the headers."
                return await _send(send, *error_response(408, message), close=True)
            if body is None:  # the client went away
                return
            path = scope["raw_path"].decode("latin-1")
            query = scope["query_string"].decode("latin-1")
            args = (scope["method"], path, query, headers, body)
            if large or path.startswith("/v1/"):
                run = self._handle_large if large else self.app.handle
                response = await asyncio.get_running_loop().run_in_executor(self.pool, run, *args)
            else:
                response = self.app.handle(*args)
        finally:
            if large:
                await self._release(length)
        await _send(send, *response, head=scope["method"] == "HEAD")

    def _handle_large(self, method, path, query, headers, body):
        """App.handle, after the JSON value bound (see the module): in the pool, as counting reads the whole body."""
        end = _json_end(headers, body)
        if self.max_json_values is not None and end > self.max_json_values:
            commas = body.count(b",", 0, end)
            if commas > self.max_json_values:
                message = (f"the JSON holds {commas} commas, more than the values of any request to this server "
                           f"({self.max_json_values}, from --max-batch-size and the models' inputs); send large "
                           "tensors as binary data (the binary_tensor_data extension) or in smaller requests.")
                return error_response(413, message)
        return self.app.handle(method, path, query, headers, body)

    async def _body(self, receive, keep=True):
        """The whole body, or None if the client disconnected; TimeoutError after body_timeout."""
        chunks = []
        async with asyncio.timeout(self.body_timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                if keep:
                    chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # b"" when not kept

    async def _hold(self, length):
        if self._released is None:
            self._released = asyncio.Condition()
        async with self._released:  # one request alone may always go, however large
            await self._released.wait_for(lambda: self._held == 0 or self._held + length <= self.body_budget)
            self._held += length

    async def _release(self, length):
        async with self._released:
            self._held -= length
            self._released.notify_all()


def _max_json_values(app):
    """JSON_SLACK + max_batch_size x the most values per row any model takes (the largest valid request)."""
    models = getattr(getattr(app, "runtime", None), "models", None)
    if not models:
        return None
    per_row = 0
    for spec in models.values():
        dims = [t["shape"][1:] for t in spec["inputs"].values()]
        if any(d <= 0 for shape in dims for d in shape):  # a free dimension beyond the batch: no bound
            return None
        per_row = max(per_row, sum(math.prod(shape) for shape in dims))
    return app.max_batch_size * per_row + JSON_SLACK


def _json_end(headers, body):
    """How many leading bytes of the body App parses as JSON (0 when it reads none: images, binary-only)."""
    header_length = headers.get("inference-header-content-length")
    if header_length is not None:
        digits = header_length.strip()
        return int(digits) if digits.isascii() and digits.isdigit() else 0  # App refuses a bad value itself
    return len(body) if media_type(headers) in JSON_MEDIA else 0


async def _send(send, status, headers, payload, close=False, head=False):
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw.append((b"Content-Length", str(len(payload)).encode()))
    if close:
        raw.append((b"Connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else payload})
