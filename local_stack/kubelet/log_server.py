"""HTTPS server of the kubelet endpoints that the local stack needs.

``GET /healthz`` returns 200 ``ok``. ``GET /containerLogs/NS/POD/CONTAINER``
is where the API server sends ``pods/NAME/log`` requests, with the query
parameters ``tailLines``, ``limitBytes``, ``timestamps``, ``follow``,
``previous``, ``sinceSeconds`` and ``sinceTime``. Responses are chunked, so a
followed log reaches the client line by line. There is no authentication: the
server listens on loopback only.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from local_stack.kubelet.clock import parse_time
from local_stack.kubelet.logs import LogOptions, LogReader
from local_stack.kubelet.pods import LogLookupError, LogTarget

logger = logging.getLogger(__name__)

LogFinder = Callable[[str, str, str, bool], LogTarget]

#: Seconds a client may take for the TLS handshake and each request line.
CLIENT_TIMEOUT_SECONDS = 30.0

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class InvalidQueryError(ValueError):
    """A query parameter has an invalid value. The message names it."""


def parse_log_options(query: dict[str, list[str]]) -> tuple[LogOptions, bool]:
    """Parse the query of a containerLogs request into options and the
    ``previous`` flag. Raise InvalidQueryError for invalid values."""

    def last(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    def boolean(name: str) -> bool:
        value = last(name)
        if value is None or value == "":
            return False
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise InvalidQueryError(f"invalid boolean value {value!r} for {name}")

    def integer(name: str, minimum: int) -> int | None:
        value = last(name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raise InvalidQueryError(
                f"invalid integer value {value!r} for {name}"
            ) from None
        if number < minimum:
            raise InvalidQueryError(f"{name} must be at least {minimum}, got {number}")
        return number

    since_ns = None
    since_seconds = integer("sinceSeconds", 1)
    since_time = last("sinceTime")
    if since_seconds is not None:
        since_ns = time.time_ns() - since_seconds * 1_000_000_000
    elif since_time:
        try:
            since_ns = int(parse_time(since_time) * 1_000_000_000)
        except ValueError:
            raise InvalidQueryError(
                f"invalid time value {since_time!r} for sinceTime"
            ) from None
    options = LogOptions(
        tail_lines=integer("tailLines", 0),
        limit_bytes=integer("limitBytes", 1),
        timestamps=boolean("timestamps"),
        since_ns=since_ns,
        follow=boolean("follow"),
    )
    return options, boolean("previous")


class _TLSServer(ThreadingHTTPServer):
    """Threading HTTP server that does the TLS handshake in the request's own
    thread, so a slow client cannot block the accept loop."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], context: ssl.SSLContext, find_log: LogFinder
    ) -> None:
        super().__init__(address, _Handler)
        self.tls_context = context
        self.find_log = find_log

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(CLIENT_TIMEOUT_SECONDS)
        try:
            secure = self.tls_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as error:
            logger.debug(
                "TLS handshake failed",
                extra={"client": str(client_address), "error": str(error)},
            )
            return
        super().finish_request(secure, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception(
            "log endpoint request failed", extra={"client": str(client_address)}
        )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TLSServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = url.path.split("/")
        if url.path == "/healthz":
            self._send_text(200, "ok")
        elif len(parts) == 5 and parts[1] == "containerLogs":
            namespace, pod, container = (unquote(part) for part in parts[2:])
            self._send_log(
                namespace, pod, container, parse_qs(url.query, keep_blank_values=True)
            )
        else:
            self._send_text(404, "404 page not found")

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("log endpoint request", extra={"request": format % args})

    def _send_log(
        self, namespace: str, pod: str, container: str, query: dict[str, list[str]]
    ) -> None:
        try:
            options, previous = parse_log_options(query)
            target = self.server.find_log(namespace, pod, container, previous)
        except InvalidQueryError as error:
            self._send_text(400, str(error))
            return
        except LogLookupError as error:
            self._send_text(error.status, str(error))
            return

        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if target.paths.exists():
                reader = LogReader(target.paths)
                chunks = reader.stream(
                    options, target.is_active, self._client_connected
                )
                for chunk in chunks:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    if options.follow:
                        self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            # The client went away, for example a follow that was cancelled.
            self.close_connection = True

    def _client_connected(self) -> bool:
        """Return false once the client closed the connection, which a
        follower that waits for lines would otherwise notice only when it
        writes the next line."""
        sock: socket.socket = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        if not readable:
            return True
        timeout = sock.gettimeout()
        sock.settimeout(0)
        try:
            data: bytes = sock.recv(1)
        except ssl.SSLWantReadError:
            return True
        except OSError:
            return False
        finally:
            sock.settimeout(timeout)
        return data != b""

    def _send_text(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LogServer:
    """The HTTPS server on ``bind``:``port``, served from a thread."""

    def __init__(
        self, bind: str, port: int, cert: Path, key: Path, find_log: LogFinder
    ) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server = _TLSServer((bind, port), context, find_log)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="log-server", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
