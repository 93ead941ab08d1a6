"""Turn a container of a pod spec into a local process launch.

The image is ignored. The process gets ``command`` followed by ``args`` (or
``args`` alone when there is no command), run without a shell, with ``$(VAR)``
references expanded as Kubernetes expands them. The environment contains
PATH, HOME and HOSTNAME (the pod name) from the stand-in, then ``envFrom``,
then ``env``. Values come from ``value``, from ``fieldRef`` (metadata.name,
namespace, uid, labels, annotations, spec.nodeName, spec.serviceAccountName,
status.podIP, status.hostIP and their plural forms), and from ConfigMaps and
Secrets read through the API server.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from local_stack.kubelet.memory import parse_quantity
from local_stack.kubelet.processes import LaunchSpec

#: Fetches a ConfigMap or Secret: (kind, namespace, name) to the object, or
#: None when it does not exist.
ObjectFetcher = Callable[[str, str, str], dict[str, Any] | None]

POD_IP = "127.0.0.1"

_FIELD_PATH = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ContainerConfigError(Exception):
    """The container's environment cannot be built. A kubelet reports this as
    CreateContainerConfigError and keeps the container waiting."""


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Expand ``$(NAME)`` references in ``text`` as the kubelet does.

    A reference to a defined variable becomes its value, a reference to an
    undefined one stays as written, and ``$$`` becomes ``$``.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return variables.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def build_launch(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    node_name: str,
    scratch_dir: Path,
    fetch: ObjectFetcher,
) -> LaunchSpec:
    """Return how to start ``container`` of ``pod``.

    Without ``workingDir`` the process runs in ``scratch_dir``, a fresh folder
    of this container. Raise ContainerConfigError when a referenced ConfigMap,
    Secret or key is missing and the reference is not optional, or a memory
    limit is invalid.
    """
    metadata = pod.get("metadata", {})
    env: dict[str, str] = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/root"),
        "HOSTNAME": str(metadata.get("name", "")),
    }
    namespace = metadata.get("namespace", "default")

    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(key)
            if ref is None:
                continue
            data = _object_data(kind, namespace, ref, fetch)
            if data is None:
                continue
            for name, value in data.items():
                env[prefix + name] = value

    for variable in container.get("env") or []:
        name = variable["name"]
        if "valueFrom" in variable:
            resolved = _value_from(
                pod, variable["valueFrom"], node_name, namespace, fetch
            )
            if resolved is None:
                continue
            env[name] = resolved
        else:
            env[name] = expand(variable.get("value", ""), env)

    command = [expand(part, env) for part in container.get("command") or []]
    args = [expand(part, env) for part in container.get("args") or []]
    working_dir = container.get("workingDir")
    if working_dir:
        cwd = Path(working_dir)
    else:
        scratch_dir.mkdir(parents=True, exist_ok=True)
        cwd = scratch_dir
    return LaunchSpec(
        argv=command + args,
        env=env,
        cwd=cwd,
        memory_limit_bytes=memory_limit(container),
    )


def memory_limit(container: Mapping[str, Any]) -> int | None:
    """Return the container's memory limit in bytes, or None without one."""
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    if limit is None:
        return None
    try:
        return parse_quantity(str(limit))
    except ValueError as error:
        raise ContainerConfigError(str(error)) from error


def _value_from(
    pod: Mapping[str, Any],
    source: Mapping[str, Any],
    node_name: str,
    namespace: str,
    fetch: ObjectFetcher,
) -> str | None:
    if "fieldRef" in source:
        return _field_value(pod, source["fieldRef"]["fieldPath"], node_name)
    for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
        ref = source.get(key)
        if ref is None:
            continue
        data = _object_data(kind, namespace, ref, fetch)
        if data is None:
            return None
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise ContainerConfigError(
                f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}"
            )
        return data[ref["key"]]
    # NOTE: resourceFieldRef is not supported; such variables are left unset.
    return None


def _field_value(pod: Mapping[str, Any], path: str, node_name: str) -> str:
    metadata = pod.get("metadata", {})
    spec = pod.get("spec", {})
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName") or node_name,
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": POD_IP,
        "status.podIPs": POD_IP,
        "status.hostIP": POD_IP,
        "status.hostIPs": POD_IP,
    }
    if path in simple:
        return str(simple[path])
    match = _FIELD_PATH.match(path)
    if match is not None:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ContainerConfigError(f"unsupported fieldPath {path!r} in env")


def _object_data(
    kind: str, namespace: str, ref: Mapping[str, Any], fetch: ObjectFetcher
) -> dict[str, str] | None:
    name = ref.get("name", "")
    found = fetch(kind, namespace, name)
    if found is None:
        if ref.get("optional"):
            return None
        raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
    if kind == "Secret":
        return {
            key: base64.b64decode(value).decode(errors="replace")
            for key, value in (found.get("data") or {}).items()
        }
    return dict(found.get("data") or {})
