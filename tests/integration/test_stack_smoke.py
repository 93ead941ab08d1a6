"""Smoke tests proving that each part of the local stack is the real thing.

Nothing here is mocked: the tests talk to kube-apiserver, Kafka and Redis
started by `python -m local_stack up`, and run a real prefork Celery worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.worker import WorkController
from confluent_kafka import Producer
from kubernetes import client as kube_client

from local_stack import build
from local_stack.config import StackConfig
from tests.integration import smoke_celery_app
from tests.kube_clients import new_kube_api_client
from tests.stack_settings import CELERY_FIXTURE_DATABASE

CHECKOUT_DIR = Path(__file__).resolve().parents[2]

#: Seconds to wait for a record or a task result. Both arrive in well under
#: a second on a healthy stack; the margin covers a cold JVM and worker.
DELIVERY_TIMEOUT = 60.0


def test_apiserver_reports_pinned_version(
    kube_api_client: kube_client.ApiClient,
) -> None:
    info = kube_client.VersionApi(kube_api_client).get_code()

    pinned = build.kube_binaries()[0].version
    assert pinned == "v1.36.3"
    assert info.git_version == pinned
    assert info.major == "1"
    assert info.minor == "36"


def test_configmap_round_trips(
    kube_api_client: kube_client.ApiClient, kube_namespace: str
) -> None:
    core = kube_client.CoreV1Api(kube_api_client)
    body = kube_client.V1ConfigMap(
        metadata=kube_client.V1ObjectMeta(name="smoke", labels={"smoke": "yes"}),
        data={"greeting": "hello", "empty": ""},
    )

    created = core.create_namespaced_config_map(kube_namespace, body)
    read = core.read_namespaced_config_map("smoke", kube_namespace)
    listed = core.list_namespaced_config_map(kube_namespace, label_selector="smoke=yes")

    assert read.data == {"greeting": "hello", "empty": ""}
    assert read.metadata is not None
    assert created.metadata is not None
    assert read.metadata.uid == created.metadata.uid
    assert [item.metadata.name for item in listed.items if item.metadata] == ["smoke"]


def test_rbac_rejects_unbound_user(stack: StackConfig, kube_namespace: str) -> None:
    # The admin may impersonate any user. A user without RoleBindings must be
    # rejected, which proves that RBAC, not AlwaysAllow, authorizes requests.
    impersonating = new_kube_api_client(stack)
    impersonating.set_default_header(  # type: ignore[no-untyped-call]
        "Impersonate-User", "smoke-nobody"
    )
    core = kube_client.CoreV1Api(impersonating)

    with pytest.raises(kube_client.ApiException) as raised:
        core.list_namespaced_config_map(kube_namespace)
    impersonating.close()  # type: ignore[no-untyped-call]

    assert raised.value.status == 403


def test_kafka_record_is_consumed(
    kafka_bootstrap_servers: str, kafka_topic: str, kafka_consumer: Any
) -> None:
    producer = Producer({"bootstrap.servers": kafka_bootstrap_servers})
    producer.produce(kafka_topic, key=b"execution-1", value=b'{"state": "Running"}')
    assert producer.flush(DELIVERY_TIMEOUT) == 0

    message = None
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while message is None and time.monotonic() < deadline:
        candidate = kafka_consumer.poll(1.0)
        if candidate is not None and candidate.error() is None:
            message = candidate

    assert message is not None, f"no record arrived within {DELIVERY_TIMEOUT}s"
    assert message.topic() == kafka_topic
    assert message.key() == b"execution-1"
    assert message.value() == b'{"state": "Running"}'


@pytest.fixture
def celery_worker_process(
    redis_url: str, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A `celery worker -P prefork` subprocess serving the smoke app."""
    log_path = tmp_path / "celery-worker.log"
    environment = dict(os.environ)
    environment[smoke_celery_app.REDIS_URL_VARIABLE] = redis_url
    argv = [
        sys.executable,
        "-m",
        "celery",
        "--app",
        "tests.integration.smoke_celery_app",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        "1",
        "--hostname",
        f"smoke-{uuid.uuid4().hex[:8]}@%h",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            argv,
            cwd=CHECKOUT_DIR,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield worker
    finally:
        # SIGTERM starts a warm shutdown, which lets running tasks finish.
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
        print(log_path.read_text(errors="replace")[-3000:])


def test_celery_task_runs_in_prefork_worker(
    redis_url: str, celery_worker_process: subprocess.Popen[bytes]
) -> None:
    app = smoke_celery_app.make_app(redis_url)

    result = app.send_task(smoke_celery_app.ADD_TASK, args=(2, 40))
    value = result.get(timeout=DELIVERY_TIMEOUT)

    assert value["sum"] == 42
    assert celery_worker_process.poll() is None, "worker exited while running the task"
    # With the prefork pool the task runs in a child of the worker process.
    assert value["ppid"] == celery_worker_process.pid
    assert value["pid"] != celery_worker_process.pid


def test_stack_settings_match_environment(stack: StackConfig) -> None:
    assert stack.kubeconfig_path.exists()
    assert stack.kafka_bootstrap_servers == f"127.0.0.1:{stack.kafka_port}"
    assert stack.redis_url == f"redis://127.0.0.1:{stack.redis_port}/0"


@pytest.fixture(scope="session")
def celery_config(_stack_session: StackConfig) -> dict[str, str]:
    """Point Celery's own `celery_app` fixture at the stack's Redis."""
    url = f"redis://127.0.0.1:{_stack_session.redis_port}/{CELERY_FIXTURE_DATABASE}"
    return {"broker_url": url, "result_backend": url}


def test_celery_contrib_fixtures_use_stack_redis(
    celery_app: Celery, celery_worker: WorkController
) -> None:
    # celery_worker here is celery.contrib.pytest's in-process worker, which
    # tests/conftest.py restores over pytest-celery's Docker-based one.
    @celery_app.task(name="smoke.multiply")
    def multiply(left: int, right: int) -> int:
        return left * right

    celery_worker.reload()
    result = multiply.delay(6, 7)

    assert result.get(timeout=DELIVERY_TIMEOUT) == 42
    assert celery_app.conf.broker_url.endswith(f"/{CELERY_FIXTURE_DATABASE}")
