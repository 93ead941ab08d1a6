"""A small JSON client of the Kubernetes API server, built from a kubeconfig.

The stand-in handles pods as plain dicts and sends patches as JSON, so it
talks HTTPS through urllib3 directly. The kubernetes package only parses the
kubeconfig (server, CA, client certificate or token).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any, cast
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import config as kube_config
from kubernetes.client import Configuration

logger = logging.getLogger(__name__)

#: Seconds to connect and to wait for a response to an ordinary request.
REQUEST_TIMEOUT_SECONDS = 30.0

#: Maximum length of the error body kept in an ApiError message, in characters.
MAX_ERROR_BODY = 500

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """The API server rejected a request or could not be reached.

    ``status`` is the HTTP status code, or 0 when no response arrived.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class KubeClient:
    """JSON requests to one API server, safe to share between threads."""

    def __init__(self, kubeconfig: str, pool_size: int = 32) -> None:
        configuration = Configuration()
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
        self.host = configuration.host.rstrip("/")
        self._headers: dict[str, str] = {"Accept": "application/json"}
        token = configuration.api_key.get("authorization")
        if token:
            self._headers["Authorization"] = token
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=pool_size,
            block=False,
            cert_reqs="CERT_REQUIRED" if configuration.verify_ssl else "CERT_NONE",
            ca_certs=configuration.ssl_ca_cert,
            cert_file=configuration.cert_file,
            key_file=configuration.key_file,
            retries=False,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        body: object = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """Send one request and return the decoded JSON response.

        Raise ApiError for a status of 300 or more and for connection errors.
        """
        response = self._send(method, path, query, body, content_type, stream=False)
        try:
            data = response.data
        finally:
            response.release_conn()
        if response.status >= 300:
            raise ApiError(response.status, _error_message(data))
        return cast(dict[str, Any], json.loads(data)) if data else {}

    def watch(
        self, path: str, query: Mapping[str, str | int], read_timeout: float
    ) -> Iterator[dict[str, Any]]:
        """Yield the events of one watch request until the server ends it.

        Raise WatchExpiredError for 410 Gone, as a response or as an ERROR event,
        and ApiError for other failures.
        """
        response = self._send(
            "GET",
            path,
            {**query, "watch": "true"},
            None,
            "",
            stream=True,
            timeout=read_timeout,
        )
        try:
            if response.status == 410:
                raise WatchExpiredError(_error_message(response.data))
            if response.status >= 300:
                raise ApiError(response.status, _error_message(response.data))
            buffer = b""
            for chunk in response.stream(64 * 1024, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield _checked_event(json.loads(line))
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ApiError(0, f"watch {path} failed: {error}") from error
        finally:
            response.release_conn()

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None,
        body: object,
        content_type: str,
        *,
        stream: bool,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> urllib3.BaseHTTPResponse:
        url = self.host + path
        if query:
            url += "?" + urlencode({key: str(value) for key, value in query.items()})
        headers = dict(self._headers)
        encoded = None
        if body is not None:
            encoded = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            return self._pool.request(
                method,
                url,
                body=encoded,
                headers=headers,
                preload_content=not stream,
                timeout=urllib3.Timeout(connect=REQUEST_TIMEOUT_SECONDS, read=timeout),
            )
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ApiError(0, f"{method} {path} failed: {error}") from error


def pod_path(namespace: str, name: str, subresource: str = "") -> str:
    path = f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}"
    return f"{path}/{subresource}" if subresource else path


def _checked_event(event: dict[str, Any]) -> dict[str, Any]:
    if event.get("type") == "ERROR":
        status = event.get("object") or {}
        code = int(status.get("code") or 0)
        message = str(status.get("message", "watch error"))
        if code == 410:
            raise WatchExpiredError(message)
        raise ApiError(code, message)
    return event


def _error_message(data: bytes) -> str:
    try:
        status = json.loads(data)
    except ValueError:
        return data[:MAX_ERROR_BODY].decode(errors="replace")
    if isinstance(status, dict) and "message" in status:
        return str(status["message"])[:MAX_ERROR_BODY]
    return data[:MAX_ERROR_BODY].decode(errors="replace")
