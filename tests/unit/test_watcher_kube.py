"""Unit tests of the HTTP boundary, against a small HTTP server on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from watcher.errors import ApiError, ApiUnavailableError, StreamStalledError
from watcher.kube import KubeClient

WATCH_LINES = [b'{"type":"ADDED","object":{}}', b'{"type":"BOOKMARK","object":{}}']


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/chunked":
            self._start(200, {"Transfer-Encoding": "chunked"})
            for line in WATCH_LINES:
                # One event split over two chunks, as a proxy may send it.
                for part in (line[:5], line[5:] + b"\n"):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/plain":
            body = b"\n".join(WATCH_LINES) + b"\n"
            self._start(200, {"Content-Length": str(len(body))})
            self.wfile.write(body)
        elif path == "/gone":
            body = b'{"kind":"Status","code":410,"reason":"Expired"}'
            self._start(410, {"Content-Length": str(len(body))})
            self.wfile.write(body)
        elif path == "/stall":
            self._start(200, {"Transfer-Encoding": "chunked"})
            self.wfile.write(b"2\r\n{}\r\n")
            self.wfile.flush()
            time.sleep(2)
        elif path == "/html":
            body = b"<html>bad gateway</html>"
            self._start(200, {"Content-Length": str(len(body))})
            self.wfile.write(body)

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def kube() -> Iterator[KubeClient]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    configuration.retries = False
    yield KubeClient(client.ApiClient(configuration), connect_timeout=2)
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/chunked", "/plain"])
def test_stream_yields_lines(kube: KubeClient, path: str) -> None:
    with kube.open_stream(path, query=[("watch", "true")], read_timeout=5) as stream:
        lines = list(stream)

    assert lines == WATCH_LINES


def test_stream_error_status_raises(kube: KubeClient) -> None:
    with (
        pytest.raises(ApiError) as raised,
        kube.open_stream("/gone", query=[], read_timeout=5),
    ):
        pass

    assert raised.value.status == 410
    assert "Expired" in raised.value.body


def test_stream_read_timeout_raises_stalled(kube: KubeClient) -> None:
    with (
        pytest.raises(StreamStalledError),
        kube.open_stream("/stall", query=[], read_timeout=0.5) as stream,
    ):
        list(stream)


def test_request_json_rejects_non_json(kube: KubeClient) -> None:
    with pytest.raises(ApiError, match="not JSON"):
        kube.request_json("GET", "/html")


def test_request_json_error_status(kube: KubeClient) -> None:
    with pytest.raises(ApiError) as raised:
        kube.request_json("GET", "/gone")

    assert raised.value.status == 410


def test_unreachable_server_raises_unavailable() -> None:
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port, nothing listens
    configuration.retries = False
    kube = KubeClient(client.ApiClient(configuration), connect_timeout=1)

    with pytest.raises(ApiUnavailableError):
        kube.request_json("GET", "/api/v1/pods")
