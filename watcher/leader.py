"""Leader election on a ``coordination.k8s.io/v1`` Lease, so one replica enqueues.

Off by default: one replica with ``strategy: Recreate`` needs none. When on,
only the holder of the Lease watches. The algorithm is client-go's:

- A candidate takes the Lease when it has no holder, or when its record
  (the holder and renew time) has not changed for ``leaseDurationSeconds`` as
  measured on the candidate's own monotonic clock, so clock skew between
  machines does not matter.
- Every write is a replace with the read ``resourceVersion``, so two
  candidates never both win: the second gets 409 Conflict.
- The holder renews every retry period. When it fails to renew for the
  renew deadline, shorter than the lease duration, it stops watching before
  any other candidate may take the Lease.
- On a clean stop the holder releases the Lease (no holder, duration 1 s),
  so a successor takes over at once.

Two holders for a moment (a paused process, a partition) cause duplicate
tasks, which are harmless because the tasks are idempotent.

``kubernetes.leaderelection`` (client release 37.0.1) was read and not
used: its ``run()`` cannot be stopped and never releases the Lease, its
callback keeps running in a daemon thread after the Lease is lost, it
decides expiry with the wall clock, its configuration errors call
``sys.exit``, and its ``LeaseLock`` builds its own API client from the
default configuration.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from watcher.clock import Clock
from watcher.errors import ApiError, ApiUnavailableError
from watcher.kube import KubeClient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseOptions:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def micro_time(moment: datetime) -> str:
    """Format a time as the API server's MicroTime: always six fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Acquires, renews and releases one Lease for one identity."""

    def __init__(self, kube: KubeClient, options: LeaseOptions, clock: Clock) -> None:
        self._kube = kube
        self._options = options
        self._clock = clock
        self._observed_record: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        #: True while the last write of the Lease by this identity succeeded.
        self._held = False

    @property
    def path(self) -> str:
        namespace = self._options.namespace
        return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

    @property
    def is_leader(self) -> bool:
        return self._held

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this identity holds the Lease; return False if stopped first."""
        logger.info(
            "waiting for the Lease",
            extra={"lease": self._options.name, "identity": self._options.identity},
        )
        while not stop.is_set():
            if self.try_acquire_or_renew():
                logger.info(
                    "Lease acquired, leading",
                    extra={
                        "lease": self._options.name,
                        "identity": self._options.identity,
                    },
                )
                return True
            if self._clock.sleep(self._options.retry_period, stop):
                break
        return False

    def hold(self, stop: threading.Event) -> bool:
        """Renew the Lease until stopped (return True) or lost (return False).

        The Lease counts as lost when no renewal succeeded for the renew
        deadline; the caller must stop its work then.
        """
        last_renewal = self._clock.monotonic()
        attempt = 0
        while not self._clock.sleep(self._options.retry_period, stop):
            if self.try_acquire_or_renew():
                last_renewal = self._clock.monotonic()
                attempt = 0
                continue
            attempt += 1
            overdue = self._clock.monotonic() - last_renewal
            if overdue >= self._options.renew_deadline or not self._held:
                logger.error(
                    "Lease lost, stopping",
                    extra={
                        "lease": self._options.name,
                        "seconds_since_renewal": overdue,
                    },
                )
                self._held = False
                return False
            logger.warning(
                "Lease renewal failed, will retry",
                extra={
                    "lease": self._options.name,
                    "attempt": attempt,
                    "seconds_left": round(self._options.renew_deadline - overdue, 3),
                },
            )
        return True

    def try_acquire_or_renew(self) -> bool:
        """Make one attempt to take or renew the Lease; return whether it is held."""
        try:
            return self._try_acquire_or_renew()
        except (ApiError, ApiUnavailableError) as error:
            logger.warning(
                "Lease request failed",
                extra={"lease": self._options.name, "error": str(error)},
            )
            return False

    def _try_acquire_or_renew(self) -> bool:
        options = self._options
        now = micro_time(datetime.now(UTC))
        try:
            lease = self._kube.request_json("GET", f"{self.path}/{options.name}")
        except ApiError as error:
            if error.status != 404:
                raise
            return self._create(now)

        spec: dict[str, Any] = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        if record != self._observed_record:
            self._observed_record = record
            self._observed_at = self._clock.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or options.lease_duration)
        expired = self._clock.monotonic() - self._observed_at > duration
        if holder and holder != options.identity and not expired:
            self._held = False
            return False

        if holder != options.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec["holderIdentity"] = options.identity
        spec["leaseDurationSeconds"] = int(options.lease_duration)
        spec["renewTime"] = now
        lease["spec"] = spec
        return self._replace(lease)

    def _create(self, now: str) -> bool:
        options = self._options
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": options.name, "namespace": options.namespace},
            "spec": {
                "holderIdentity": options.identity,
                "leaseDurationSeconds": int(options.lease_duration),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            self._kube.request_json("POST", self.path, body=body)
        except ApiError as error:
            if error.status == 409:  # another candidate created it first
                return False
            raise
        self._held = True
        return True

    def _replace(self, lease: dict[str, Any]) -> bool:
        try:
            updated = self._kube.request_json(
                "PUT", f"{self.path}/{self._options.name}", body=lease
            )
        except ApiError as error:
            if error.status == 409:  # written by someone else since our read
                self._held = False
                return False
            raise
        spec = updated.get("spec") or {}
        self._observed_record = (
            spec.get("holderIdentity") or "",
            spec.get("renewTime"),
            spec.get("leaseDurationSeconds"),
        )
        self._observed_at = self._clock.monotonic()
        self._held = True
        return True

    def release(self) -> None:
        """Give the Lease up if held, so that a standby takes over at once."""
        if not self._held:
            return
        self._held = False
        options = self._options
        try:
            lease = self._kube.request_json("GET", f"{self.path}/{options.name}")
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != options.identity:
                return
            now = micro_time(datetime.now(UTC))
            spec.update(holderIdentity=None, leaseDurationSeconds=1, renewTime=now)
            lease["spec"] = spec
            self._kube.request_json("PUT", f"{self.path}/{options.name}", body=lease)
        except (ApiError, ApiUnavailableError) as error:
            logger.warning(
                "releasing the Lease failed; it expires by itself",
                extra={"lease": options.name, "error": str(error)},
            )
            return
        logger.info("Lease released", extra={"lease": options.name})
