"""One HTTP/1.1 connection: uvicorn's httptools protocol, hardened against slow and hostile clients.

`Protocol` is uvicorn's httptools protocol with what it lacks against slow or hostile
clients: a deadline for a request's head (a client that connects and trickles headers is
cut off with 408; an HTTP/0.9 request line, which has no headers to wait for, gets 400 at
once), caps on the head's size and header count (431), and an end to connections whose
client stops reading its answers (aborted when what is left of them, in the transport's
buffer and the kernel's send queue, has not shrunk in send_timeout). One connection costs
a protocol object and its buffers on the event loop, never a thread.
"""

import re
import struct

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .app import error_response

try:  # a socket's unsent and unacknowledged bytes: ioctl SIOCOUTQ (Linux spells it TIOCOUTQ)
    import fcntl
    import termios

    _OUTQ = termios.TIOCOUTQ
except (ImportError, AttributeError):  # elsewhere the transport's buffer alone is watched
    fcntl = _OUTQ = None

HEAD_TIMEOUT = 10.0  # seconds from a request's first byte (or the connection) to the end of its headers
SEND_TIMEOUT = 30.0  # seconds an answer may wait to be sent without the client reading any of it
MAX_HEAD_BYTES = 64 * 2**10  # request line + headers
MAX_HEADERS = 100


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus a deadline and caps for each request's head.

    A head runs from the end of the previous message (or the connection's start) to the end
    of its headers, as the parser's callbacks say, so that a pipelined request's body is
    never taken for a head. Its deadline runs from its first byte (from the connection, for
    the first one). The timeouts are read per connection from the class: tests may set
    `Protocol.head_timeout` and `Protocol.send_timeout` on a running server.
    """

    head_timeout = HEAD_TIMEOUT
    send_timeout = SEND_TIMEOUT
    max_head_bytes = MAX_HEAD_BYTES
    max_headers = MAX_HEADERS

    def connection_made(self, transport):
        super().connection_made(transport)
        self._in_head, self._head_bytes, self._refusal, self._upgraded = True, 0, None, False
        self._send_watch = None  # the check that a response waiting in the write buffer still drains
        self._cycles = []  # the requests (uvicorn's RequestResponseCycle) parsed and not yet answered
        self._line = b""  # the start of a request line not yet checked; None: checked, or not at a chunk's start
        self._head_deadline = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def connection_lost(self, exc):
        self._cancel_head_deadline()
        if self._send_watch is not None:
            self._send_watch.cancel()
            self._send_watch = None
        self._disconnect_cycles()
        super().connection_lost(exc)

    def _disconnect_cycles(self):
        """Tells every request of this connection still being answered that its client is gone. uvicorn tells
        only the newest one (self.cycle); with pipelined requests the one answering is older, and its next
        write to the closed uvloop transport would raise instead of being dropped."""
        for cycle in self._cycles:
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        self._cycles = []

    def data_received(self, data):
        if self._upgraded:  # the parser stopped at an Upgrade; nothing more is read (see _stop_after_upgrade)
            return
        if self._in_head:
            self._arm_head_deadline()  # the first bytes of the next request on a kept-alive connection
            if self._line is not None and self._check_request_line(data):
                return
            end = data.find(b"\r\n\r\n")  # the head's end, when this chunk has it (a body may follow)
            self._head_bytes += len(data) if end < 0 else end + 4
            if self._head_bytes > self.max_head_bytes:
                return self._refuse(431, f"the request line and headers are over {self.max_head_bytes} bytes.")
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop_after_upgrade()
        except httptools.HttpParserError as e:  # what the parser refuses: unknown methods, bad Content-Length...
            if self._refusal is not None:  # raised by on_header below
                return self._refuse(*self._refusal)
            detail = str(e).rstrip(".") or type(e).__name__
            self._refuse(400, f"malformed HTTP/1.1 request ({detail}).")

    def _check_request_line(self, data):
        """True (and a 400) when the request line has no HTTP version: HTTP/0.9, whose request has no headers
        for the parser to wait for. The line is checked when whole; lines with a version are the parser's."""
        self._line += data[: _MAX_LINE - len(self._line)]
        line = self._line.lstrip(b"\r\n")  # empty lines before a request line are allowed (RFC 9112, 2.2)
        if b"\n" not in line:
            if len(self._line) >= _MAX_LINE:
                self._line = None  # the head's size cap and deadline take over
            return False
        self._line = None
        if _HTTP09_LINE.match(line):
            self._refuse(400, "the request line has no HTTP version: HTTP/0.9 is not supported; send HTTP/1.1.")
            return True
        return False

    def on_message_begin(self):
        super().on_message_begin()
        self._refusal = None
        self._in_head = True
        self._arm_head_deadline()
        if self._line == b"":  # a pipelined request starting inside the chunk that ended the previous one
            self._line = None

    def on_header(self, name, value):
        if len(self.headers) >= self.max_headers:
            self._refusal = (431, f"a request may have at most {self.max_headers} headers.")
            raise ValueError(self._refusal[1])  # stops the parser: data_received answers
        super().on_header(name, value)

    def on_headers_complete(self):
        self._in_head, self._head_bytes = False, 0
        self._cancel_head_deadline()
        super().on_headers_complete()
        self._cycles = [c for c in self._cycles if not c.response_complete and c is not self.cycle]
        if self.cycle is not None:
            self._cycles.append(self.cycle)

    def on_message_complete(self):
        super().on_message_complete()
        self._in_head, self._line = True, b""  # what follows is the next request's head (uvicorn's keep-alive
        # timeout covers the idle time before it, once the response is out)

    def on_response_complete(self):
        super().on_response_complete()
        self._watch_send()  # from the buffer's size now: a new response is written only once the client read
        # enough of the last ones for the buffer to go under its high-water mark (uvicorn waits for that)

    def _watch_send(self, before=None):
        """Aborts the connection when its responses wait in the transport's buffer and what is left of them has
        not shrunk in send_timeout seconds: a client that asks for a large answer and never reads it would hold
        it forever (closing a transport waits for its buffer to drain). What is left counts the kernel's send
        queue too, which shrinks with every byte the client takes; the transport's buffer alone moves only
        when that queue (megabytes) has largely emptied."""
        if self._send_watch is not None:
            self._send_watch.cancel()
        self._send_watch = None
        buffered = self.transport.get_write_buffer_size()
        if not buffered:  # all with the kernel (the usual case): no memory held here, and uvicorn's keep-alive
            return  # timeout closes the connection if it stays idle
        left = buffered + _unacknowledged(self.transport)
        if before is not None and left >= before:
            self._disconnect_cycles()  # before the transport closes under them
            return self.transport.abort()
        self._send_watch = self.loop.call_later(self.send_timeout, self._watch_send, left)

    def _stop_after_upgrade(self):
        """An Upgrade request (h2c, websocket...): answered as plain HTTP/1.1, then the connection closes, since
        the parser reads nothing after it (uvicorn would keep it open, any byte postponing its keep-alive timeout)."""
        self._upgraded = True
        self._cancel_head_deadline()
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
        else:
            self.cycle.keep_alive = False

    def _arm_head_deadline(self):
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_deadline(self):
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self):
        self._head_deadline = None
        if self._in_head and not self.transport.is_closing():
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.keep_alive = False  # a pipelined head stalled: answer the request in flight, then close
            elif self._head_bytes:
                self._refuse(408, f"the request's headers did not arrive within {self.head_timeout:g} s.")
            else:
                self.transport.close()

    def _refuse(self, status, message):
        """Answers with a JSON error and closes: for what never reaches the application."""
        if self.transport.is_closing():
            return
        _, headers, payload = error_response(status, message)
        lines = [f"HTTP/1.1 {status} {_REASONS[status]}", *(f"{k}: {v}" for k, v in headers.items()),
                 f"content-length: {len(payload)}", "connection: close", "", ""]
        self.transport.write("\r\n".join(lines).encode("latin-1") + payload)
        self.transport.close()


def _unacknowledged(transport):
    """Bytes in the kernel's send queue of the transport's socket (Linux: SIOCOUTQ), 0 where unknown."""
    sock = transport.get_extra_info("socket")
    if sock is None or _OUTQ is None:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
    except (OSError, ValueError):  # closed, or not a socket this ioctl knows
        return 0


_MAX_LINE = 8 * 2**10  # request-line bytes kept for the HTTP/0.9 check
_HTTP09_LINE = re.compile(rb"[^ \r\n]+ [^ \r\n]+\r?\n")  # method and target, no version
_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}
