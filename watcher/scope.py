"""The part of the cluster that one watch covers: one namespace, or all."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    """One namespace, or all namespaces when ``namespace`` is None."""

    namespace: str | None = None

    @property
    def name(self) -> str:
        """Return the label of this scope in logs, metrics and checkpoint keys."""
        return (
            "all-namespaces"
            if self.namespace is None
            else f"namespace:{self.namespace}"
        )

    @property
    def pods_path(self) -> str:
        """Return the API path of the pods in this scope."""
        if self.namespace is None:
            return "/api/v1/pods"
        return f"/api/v1/namespaces/{self.namespace}/pods"


def scopes_for(namespaces: list[str]) -> list[Scope]:
    """Return one scope per namespace, or the cluster-wide scope when empty."""
    if not namespaces:
        return [Scope()]
    return [Scope(namespace) for namespace in dict.fromkeys(namespaces)]
