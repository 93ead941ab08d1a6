"""Flower watching this module's real prefork worker through its Redis database.

The ``flower`` fixture runs ``celery -A tasks.app flower`` with basic auth,
as the local stack does. Tests read the worker and tasks through Flower's
REST API, send a reconciliation through it, and check that the API rejects
requests without valid credentials.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest

from tests.integration.conftest import FlowerServer
from tests.integration.monitor import Monitor

RECONCILE_TASK = "pod_monitor.reconcile"
#: Seconds Flower may take to learn of a worker or a task from its events.
SEEN_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def worker_name(monitor_env: Monitor, flower: FlowerServer) -> str:
    """Start the module's worker after Flower and return its node name."""
    process = monitor_env.worker()
    template = process.argv[process.argv.index("-n") + 1]
    # Celery expands %h to the host name in the node name Flower reports.
    return template.replace("%h", socket.gethostname())


def get_json(flower: FlowerServer, path: str, **params: Any) -> Any:
    response = httpx.get(f"{flower.url}{path}", auth=flower.auth, params=params)
    response.raise_for_status()
    return response.json()


def wait_for_task(flower: FlowerServer, task_id: str, state: str) -> dict[str, Any]:
    """Poll ``/api/task/info/ID`` until Flower reports ``state``."""
    deadline = time.monotonic() + SEEN_TIMEOUT
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = httpx.get(f"{flower.url}/api/task/info/{task_id}", auth=flower.auth)
        if response.status_code == 200:
            info = response.json()
            if info.get("state") == state:
                return info
        time.sleep(0.3)
    pytest.fail(f"Flower did not report task {task_id} as {state}; last info {info}")


def apply_reconcile(flower: FlowerServer, body: dict[str, Any]) -> str:
    response = httpx.post(
        f"{flower.url}/api/task/async-apply/{RECONCILE_TASK}",
        auth=flower.auth,
        json=body,
    )
    response.raise_for_status()
    task_id: str = response.json()["task-id"]
    return task_id


def test_flower_lists_worker(flower: FlowerServer, worker_name: str) -> None:
    deadline = time.monotonic() + SEEN_TIMEOUT
    workers: dict[str, Any] = {}
    while worker_name not in workers and time.monotonic() < deadline:
        workers = get_json(flower, "/api/workers", refresh="true")
        time.sleep(0.5)

    assert worker_name in workers
    queues = {queue["name"] for queue in workers[worker_name]["active_queues"]}
    assert queues == {"pod-changes", "reconcile"}
    assert RECONCILE_TASK in workers[worker_name]["registered"]


def test_flower_apply_runs_reconciliation(
    flower: FlowerServer, worker_name: str
) -> None:
    task_id = apply_reconcile(flower, {"kwargs": {"trigger": "flower"}})

    info = wait_for_task(flower, task_id, "SUCCESS")
    tasks = get_json(flower, "/api/tasks", taskname=RECONCILE_TASK)
    result = get_json(flower, f"/api/task/result/{task_id}")

    assert info["name"] == RECONCILE_TASK
    assert info["worker"] == worker_name
    assert "'flower'" in info["kwargs"]
    # The task's own expiry applies to runs sent through Flower too.
    assert info["expires"] is not None
    assert "'status': 'completed'" in info["result"]
    assert task_id in tasks
    assert tasks[task_id]["state"] == "SUCCESS"
    assert result["state"] == "SUCCESS"
    assert result["result"]["status"] == "completed"
    assert result["result"]["trigger"] == "flower"
    assert result["result"]["run_id"] == task_id


def test_flower_apply_without_trigger_is_manual(
    flower: FlowerServer, worker_name: str
) -> None:
    task_id = apply_reconcile(flower, {})

    wait_for_task(flower, task_id, "SUCCESS")
    result = get_json(flower, f"/api/task/result/{task_id}")

    assert result["result"]["trigger"] == "manual"


@pytest.mark.parametrize(
    "path", ["/api/workers", "/api/tasks", "/api/task/info/x", "/api/queues/length"]
)
def test_flower_api_rejects_missing_credentials(
    flower: FlowerServer, path: str
) -> None:
    response = httpx.get(f"{flower.url}{path}")

    assert response.status_code == 401


def test_flower_api_rejects_wrong_password(flower: FlowerServer) -> None:
    user, _ = flower.auth

    response = httpx.get(f"{flower.url}/api/workers", auth=(user, "wrong"))

    assert response.status_code == 401


def test_flower_apply_rejects_missing_credentials(
    flower: FlowerServer, worker_name: str
) -> None:
    before = get_json(flower, "/api/tasks", taskname=RECONCILE_TASK)

    response = httpx.post(
        f"{flower.url}/api/task/async-apply/{RECONCILE_TASK}", json={}
    )
    time.sleep(2.0)
    after = get_json(flower, "/api/tasks", taskname=RECONCILE_TASK)

    assert response.status_code == 401
    assert set(after) == set(before)


def test_flower_healthcheck_needs_no_credentials(flower: FlowerServer) -> None:
    response = httpx.get(f"{flower.url}/healthcheck")

    assert response.status_code == 200
    assert response.text == "OK"
