"""Minimal JSON client for kube-apiserver with the stack's admin certificate.

The stack uses it for its own health checks and bootstrap, so `up` and
`status` do not import the much larger kubernetes client.
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_stack.config import HOST
from local_stack.errors import StackError


@dataclass(frozen=True)
class Response:
    """Status code and decoded JSON body (None when the body is not JSON)."""

    status: int
    body: Any
    text: str


class AdminClient:
    """Sends requests to kube-apiserver as a member of system:masters."""

    def __init__(
        self, port: int, ca_file: Path, cert_file: Path, key_file: Path
    ) -> None:
        self._port = port
        self._context = ssl.create_default_context(cafile=str(ca_file))
        self._context.load_cert_chain(str(cert_file), str(key_file))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float = 5.0,
        content_type: str = "application/json",
    ) -> Response:
        """Send one request and return the response.

        Raises OSError (including ssl.SSLError) when no connection is made.
        """
        connection = http.client.HTTPSConnection(
            HOST, self._port, context=self._context, timeout=timeout
        )
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json"}
            if payload is not None:
                headers["Content-Type"] = content_type
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            text = response.read().decode(errors="replace")
        finally:
            connection.close()
        try:
            decoded: Any = json.loads(text)
        except ValueError:
            decoded = None
        return Response(status=response.status, body=decoded, text=text)

    def create(self, path: str, body: Any) -> Response:
        """POST `body` to `path`, treating 409 AlreadyExists as success."""
        response = self.request("POST", path, body)
        if response.status not in {200, 201, 202, 409}:
            raise StackError(
                f"POST {path} returned {response.status}: {response.text[:500]}"
            )
        return response
