"""An HTTP proxy on 127.0.0.1 that forwards to an S3 server and breaks some requests.

Clients point their ``endpoint_url`` at the proxy. While it has a fault budget left,
every ``every``-th request is broken in turn in one of three ways that real object
stores and networks produce:

``503``
    answered ``503 SlowDown`` without reaching the server (throttling);
``drop``
    the connection is closed before any answer, the request not forwarded;
``lost``
    the request reaches the server (it takes effect) but the connection is closed
    before the answer comes back, so the client cannot know it succeeded.

``fail_paths`` makes every request whose path contains one of the strings fail with
``500`` for ever, to model a persistent fault.
"""

from __future__ import annotations

import http.client
import itertools
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
_INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


class FaultProxy:
    """A threaded forwarding proxy with a bounded budget of injected faults."""

    def __init__(
        self,
        upstream: str,
        *,
        every: int = 7,
        budget: int = 0,
        kinds: tuple[str, ...] = ("503", "drop", "lost"),
        fail_paths: tuple[str, ...] = (),
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.every = every
        self.budget = budget
        self.fail_paths = fail_paths
        self.injected: Counter[str] = Counter()
        self.requests = 0
        # The access key ids the clients signed with (never their secrets).
        self.access_keys: set[str] = set()
        self._kinds = itertools.cycle(kinds)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _drop(self) -> None:
                self.close_connection = True
                self.connection.close()

            def _handle(self) -> None:
                body = self._body()
                signed = self.headers.get("Authorization", "")
                if "Credential=" in signed:
                    key = signed.split("Credential=", 1)[1].split("/", 1)[0]
                    with proxy._lock:
                        proxy.access_keys.add(key)
                if any(p in self.path for p in proxy.fail_paths):
                    with proxy._lock:
                        proxy.injected["persistent"] += 1
                    self._answer(500, _INTERNAL)
                    return
                fault = proxy._next_fault()
                if fault == "503":
                    self._answer(503, _SLOW_DOWN)
                    return
                if fault == "drop":
                    self._drop()
                    return
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"
                }
                headers["Content-Length"] = str(len(body))
                try:
                    connection.request(self.command, self.path, body, headers)
                    answer = connection.getresponse()
                    data = answer.read()
                finally:
                    connection.close()
                if fault == "lost":
                    self._drop()
                    return
                self.send_response(answer.status, answer.reason)
                # A HEAD answer's Content-Length is the object's size: keep it.
                dropped = _HOP_BY_HOP | ({"content-length"} if data else set())
                for key, value in answer.getheaders():
                    if key.lower() not in dropped:
                        self.send_header(key, value)
                if data or answer.getheader("Content-Length") is None:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _next_fault(self) -> str | None:
        with self._lock:
            self.requests += 1
            if self.budget <= 0 or self.requests % self.every:
                return None
            self.budget -= 1
            kind = next(self._kinds)
            self.injected[kind] += 1
            return kind

    def start(self) -> FaultProxy:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
