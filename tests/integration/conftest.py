"""Fixtures of the main job's tests: a running monitor per test module."""

from __future__ import annotations

import os
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in __all__
    AdminClient,
    NewTopic,
)
from kubernetes import client as kube_client

from local_stack.config import StackConfig
from tests.conftest import TEST_TOPIC_PARTITIONS
from tests.integration.monitor import Monitor, free_port
from tests.kube_clients import new_kube_api_client
from tests.stack_settings import claim_redis_database


def _module_name(request: pytest.FixtureRequest, prefix: str) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", request.module.__name__.split(".")[-1].lower())
    return f"{prefix}-{stem.strip('-')[:40]}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def monitor_env(
    request: pytest.FixtureRequest,
    _stack_session: StackConfig,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Monitor]:
    """Namespace, topic, Redis database and environment of one test module.

    No process runs yet; ``monitor`` starts the watcher and the worker.
    """
    stack = _stack_session
    api_client = new_kube_api_client(stack)
    core = kube_client.CoreV1Api(api_client)
    namespace = _module_name(request, "m")
    core.create_namespace(
        kube_client.V1Namespace(metadata=kube_client.V1ObjectMeta(name=namespace))
    )
    topic = _module_name(request, "events")
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap_servers})
    admin.create_topics(
        [NewTopic(topic, num_partitions=TEST_TOPIC_PARTITIONS, replication_factor=1)]
    )[topic].result(timeout=30)
    database = claim_redis_database(stack.redis_port)
    redis_url = f"redis://127.0.0.1:{stack.redis_port}/{database}"
    redis.Redis.from_url(redis_url).flushdb()

    env = {
        **os.environ,
        "KUBECONFIG": str(stack.kubeconfig_path),
        "POD_MONITOR_REDIS_URL": redis_url,
        "POD_MONITOR_KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        "POD_MONITOR_KAFKA_TOPIC": topic,
        "POD_MONITOR_NAMESPACES": namespace,
        # Short delivery timeout, so a Kafka outage turns into retries soon.
        "POD_MONITOR_KAFKA_DELIVERY_TIMEOUT_SECONDS": "10",
        "POD_MONITOR_PENDING_GRACE_SECONDS": "5",
    }
    log_dir: Path = tmp_path_factory.mktemp(namespace)
    monitor = Monitor(
        namespace=namespace,
        topic=topic,
        redis_url=redis_url,
        bootstrap_servers=stack.kafka_bootstrap_servers,
        core=core,
        env=env,
        log_dir=log_dir,
    )
    yield monitor
    monitor.stop_all()
    try:
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
        core.delete_namespace(namespace)
    except kube_client.ApiException:
        pass
    api_client.close()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def monitor(monitor_env: Monitor) -> Monitor:
    """A running watcher and prefork worker for this test module."""
    monitor_env.worker()
    monitor_env.watcher()
    return monitor_env


@dataclass(frozen=True)
class FlowerServer:
    """A Flower process of one test module and how to reach it."""

    url: str
    #: User and password of Flower's basic auth, as httpx takes them.
    auth: tuple[str, str]


#: Seconds Flower may take to respond to ``/healthcheck`` after it starts.
FLOWER_START_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def flower(monitor_env: Monitor) -> FlowerServer:
    """Flower for this module's Redis database, with basic auth, once healthy.

    It shows the workers and tasks of this module only. The process stops
    with the module's other processes.
    """
    port = free_port()
    auth = ("test", secrets.token_urlsafe(12))
    process = monitor_env.flower(port, f"{auth[0]}:{auth[1]}")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + FLOWER_START_TIMEOUT
    while True:
        try:
            if httpx.get(f"{url}/healthcheck", timeout=2).text == "OK":
                return FlowerServer(url=url, auth=auth)
        except httpx.TransportError:
            pass
        if not process.running or time.monotonic() > deadline:
            pytest.fail(
                f"Flower did not answer {url}/healthcheck within "
                f"{FLOWER_START_TIMEOUT:g} s\n{monitor_env.diagnostics()}"
            )
        time.sleep(0.3)
