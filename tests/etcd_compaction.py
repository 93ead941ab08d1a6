"""Compacting the local stack's etcd, so that old resourceVersions expire.

A fresh etcd keeps its whole history until its first compaction, five
minutes after the start; a test that needs ``410 Gone`` for an old
resourceVersion compacts first. etcd's gRPC gateway takes JSON over HTTP.
"""

from __future__ import annotations

import base64
import json
import urllib.request

from local_stack.config import StackConfig


def compact_etcd(config: StackConfig) -> int:
    """Compact etcd's history up to its current revision; return that revision."""
    base = f"http://127.0.0.1:{config.etcd_port}/v3/kv"
    key = base64.b64encode(b"/registry/compaction-probe").decode()
    header = _post(f"{base}/range", {"key": key})["header"]
    revision = int(header["revision"])
    _post(f"{base}/compaction", {"revision": revision, "physical": True})
    return revision


def _post(url: str, body: dict[str, object]) -> dict[str, dict[str, str]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, dict[str, str]] = json.loads(response.read())
        return result
