"""Unit tests of the Lease election, on a fake API server and fake time."""

from __future__ import annotations

import copy
import re
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from watcher.errors import ApiError, ApiUnavailableError
from watcher.leader import LeaseElector, LeaseOptions, micro_time
from watcher.testing import FakeClock

OPTIONS = LeaseOptions(namespace="ops", name="watcher", identity="me")
LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/watcher"


class FakeLeases:
    """One Lease with optimistic concurrency, as the API server keeps it."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.requests: list[tuple[str, str]] = []
        self.unavailable = False

    def hold(
        self, holder: str, renew_time: str = "2026-01-01T00:00:00.000000Z"
    ) -> None:
        self.version += 1
        self.lease = {
            "metadata": {"name": "watcher", "resourceVersion": str(self.version)},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": 15,
                "renewTime": renew_time,
            },
        }

    def request_json(
        self, method: str, path: str, *, body: dict[str, Any] | None = None, **_: Any
    ) -> dict[str, Any]:
        self.requests.append((method, path))
        if self.unavailable:
            raise ApiUnavailableError("fake API server down")
        if method == "GET":
            if self.lease is None:
                raise ApiError(404, "Not Found")
            return copy.deepcopy(self.lease)
        assert body is not None
        if method == "POST":
            if self.lease is not None:
                raise ApiError(409, "AlreadyExists")
            self.version += 1
            self.lease = {
                **body,
                "metadata": {**body["metadata"], "resourceVersion": "1"},
            }
            return copy.deepcopy(self.lease)
        if method == "PUT":
            assert self.lease is not None
            if (
                body["metadata"]["resourceVersion"]
                != self.lease["metadata"]["resourceVersion"]
            ):
                raise ApiError(409, "Conflict")
            self.version += 1
            self.lease = copy.deepcopy(body)
            self.lease["metadata"]["resourceVersion"] = str(self.version)
            return copy.deepcopy(self.lease)
        raise AssertionError(method)


def make() -> tuple[LeaseElector, FakeLeases, FakeClock]:
    leases = FakeLeases()
    clock = FakeClock()
    elector = LeaseElector(leases, OPTIONS, clock)  # type: ignore[arg-type]
    return elector, leases, clock


def test_lease_created_when_absent() -> None:
    elector, leases, _ = make()

    assert elector.try_acquire_or_renew() is True

    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] == "me"
    assert ("POST", LEASE_PATH.rsplit("/", 1)[0]) in leases.requests


def test_lease_held_by_other_not_taken() -> None:
    elector, leases, clock = make()
    leases.hold("other")

    assert elector.try_acquire_or_renew() is False
    clock.advance(10)
    assert elector.try_acquire_or_renew() is False


def test_lease_taken_after_holder_stops_renewing() -> None:
    elector, leases, clock = make()
    leases.hold("other")
    assert elector.try_acquire_or_renew() is False

    clock.advance(16)

    assert elector.try_acquire_or_renew() is True
    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] == "me"
    assert leases.lease["spec"]["leaseTransitions"] == 1


def test_lease_renewed_by_other_not_taken() -> None:
    elector, leases, clock = make()
    leases.hold("other", renew_time="2026-01-01T00:00:00.000000Z")
    elector.try_acquire_or_renew()
    clock.advance(10)
    leases.hold("other", renew_time="2026-01-01T00:00:10.000000Z")
    elector.try_acquire_or_renew()

    clock.advance(10)

    assert elector.try_acquire_or_renew() is False


def test_hold_returns_false_after_renew_deadline() -> None:
    elector, leases, _ = make()
    assert elector.try_acquire_or_renew() is True
    leases.unavailable = True

    assert elector.hold(threading.Event()) is False
    assert elector.is_leader is False


def test_hold_stops_when_lease_taken() -> None:
    elector, leases, clock = make()
    assert elector.try_acquire_or_renew() is True
    # Another candidate wrote the Lease, and keeps renewing it.
    leases.hold("other")

    def renew_other() -> None:
        leases.hold(
            "other", renew_time=f"2026-01-01T00:00:{len(clock.sleeps):02}.000000Z"
        )

    clock.on_sleep = renew_other

    assert elector.hold(threading.Event()) is False
    assert len(clock.sleeps) == 1


def test_hold_returns_true_on_stop() -> None:
    elector, _, clock = make()
    elector.try_acquire_or_renew()
    stop = threading.Event()
    renewals = 0

    def count_renewal() -> None:
        nonlocal renewals
        renewals += 1
        if renewals == 3:
            stop.set()

    clock.on_sleep = count_renewal

    assert elector.hold(stop) is True
    assert elector.is_leader is True


def test_release_clears_holder() -> None:
    elector, leases, _ = make()
    elector.try_acquire_or_renew()

    elector.release()

    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] is None
    assert leases.lease["spec"]["leaseDurationSeconds"] == 1


def test_acquire_returns_false_when_stopped() -> None:
    elector, leases, _ = make()
    leases.hold("other")
    stop = threading.Event()
    stop.set()

    assert elector.acquire(stop) is False


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 1, 0, 0, 0, 0, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 0, 123, tzinfo=UTC),
    ],
)
def test_micro_time_has_six_digits(moment: datetime) -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", micro_time(moment))
