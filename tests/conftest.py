"""Shared pytest wiring: the local stack of real components and its clients.

Tests under tests/integration/ are marked `stack` automatically; elsewhere a
test opts in with `@pytest.mark.stack`. Only such tests may use the stack
fixtures, so a run of the unit tests alone never starts a server.

The stack starts once per session. When `python -m local_stack status`
would report every component up, as after `make test` ran `up`, the session
reuses the stack and stops nothing. Otherwise it runs `up` and at the end
stops only the components that this session started, unless another pytest
session still uses the same stack folder (see local_stack.leases).
"""

from __future__ import annotations

import re
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.pytest import celery_worker
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in __all__
    AdminClient,
    NewTopic,
)
from kubernetes import client as kube_client

from local_stack.config import StackConfig
from tests.kube_clients import new_kube_api_client
from tests.stack_settings import claim_redis_database

# pytest-celery 1.3 replaces celery.contrib.pytest's `celery_worker` with a
# fixture that runs the worker in a Docker container, which fails without a
# Docker engine. Re-exporting the original restores the in-process worker.
__all__ = ["celery_worker"]

INTEGRATION_DIR = Path(__file__).parent / "integration"

#: Partitions of each test topic. More than one, so ordering by key matters.
TEST_TOPIC_PARTITIONS = 3

#: Redis databases handed to tests in turn. Database 0 is left to the demo.

#: Seconds to wait for Kafka admin operations on the local node.
_KAFKA_ADMIN_TIMEOUT = 30.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration/ as needing the stack."""
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def _stack_session() -> Iterator[StackConfig]:
    """Start the stack unless it already runs, and stop what was started."""
    from local_stack.leases import SessionLease
    from local_stack.stack import Stack

    config = StackConfig.from_environ()
    stack = Stack(config)
    lease = SessionLease(config.stack_dir)
    try:
        if all(entry.state in {"up", "skipped"} for entry in stack.status()):
            started: list[str] = []
        else:
            started = stack.up()
        yield config
    finally:
        is_last_session = lease.release()
    # Another session still using the stack keeps it running; the stack is
    # then left up, as after `python -m local_stack up`.
    if started and is_last_session:
        stack.stop(started)


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> StackConfig:
    """Settings of the running stack: kubeconfig path, Kafka and Redis addresses.

    Fails a test that is neither marked `stack` nor under tests/integration/.
    """
    if request.node.get_closest_marker("stack") is None:
        pytest.fail(
            f"{request.node.nodeid} uses the local stack but is not marked: add "
            "@pytest.mark.stack or move it under tests/integration/"
        )
    config: StackConfig = request.getfixturevalue("_stack_session")
    return config


@pytest.fixture
def kube_api_client(stack: StackConfig) -> Iterator[kube_client.ApiClient]:
    """A kubernetes.client.ApiClient authenticated as cluster admin."""
    api_client = new_kube_api_client(stack)
    yield api_client
    api_client.close()  # type: ignore[no-untyped-call]


def _unique_name(request: pytest.FixtureRequest, prefix: str, max_length: int) -> str:
    """Return a DNS-1123 label made of `prefix`, the test name and a random tail."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    tail = uuid.uuid4().hex[:8]
    stem = stem[: max_length - len(prefix) - len(tail) - 2].strip("-")
    return f"{prefix}-{stem}-{tail}"


@pytest.fixture
def kube_namespace(
    request: pytest.FixtureRequest, kube_api_client: kube_client.ApiClient
) -> Iterator[str]:
    """Name of a new namespace that exists for this test only.

    Teardown deletes its pods with grace period 0 and then the namespace.
    No namespace controller runs, so teardown also clears the namespace's
    finalizers. Objects of other kinds left in it stay in etcd until
    `python -m local_stack down --wipe`.
    """
    core = kube_client.CoreV1Api(kube_api_client)
    name = _unique_name(request, "t", 63)
    core.create_namespace(
        kube_client.V1Namespace(
            metadata=kube_client.V1ObjectMeta(
                name=name, labels={"pod-monitor/test": "true"}
            )
        )
    )
    yield name
    try:
        core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
        core.delete_namespace(name)
        namespace = core.read_namespace(name)
        if namespace.spec is not None and namespace.spec.finalizers:
            namespace.spec.finalizers = []
            core.replace_namespace_finalize(name, namespace)
    except kube_client.ApiException as error:
        if error.status != 404:
            warnings.warn(f"deleting namespace {name} failed: {error}", stacklevel=1)


@pytest.fixture
def kafka_bootstrap_servers(stack: StackConfig) -> str:
    """Bootstrap address of the local Kafka node, "127.0.0.1:PORT"."""
    return stack.kafka_bootstrap_servers


@pytest.fixture
def kafka_topic(
    request: pytest.FixtureRequest, kafka_bootstrap_servers: str
) -> Iterator[str]:
    """Name of a new topic with TEST_TOPIC_PARTITIONS partitions, deleted after."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap_servers})
    name = _unique_name(request, "test", 120)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=TEST_TOPIC_PARTITIONS, replication_factor=1)],
        operation_timeout=_KAFKA_ADMIN_TIMEOUT,
    )
    futures[name].result(timeout=_KAFKA_ADMIN_TIMEOUT)
    yield name
    admin.delete_topics([name], operation_timeout=_KAFKA_ADMIN_TIMEOUT)[name].result(
        timeout=_KAFKA_ADMIN_TIMEOUT
    )


@pytest.fixture
def kafka_consumer(kafka_bootstrap_servers: str, kafka_topic: str) -> Iterator[Any]:
    """A confluent_kafka.Consumer assigned every partition of `kafka_topic`.

    Every partition starts at its first offset, so records produced before
    the first poll are read too. The consumer is assigned partitions
    directly rather than joining by subscription, so no rebalance delays
    the first poll. Offsets are not committed.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.assign(
        [
            TopicPartition(kafka_topic, partition, OFFSET_BEGINNING)
            for partition in range(TEST_TOPIC_PARTITIONS)
        ]
    )
    yield consumer
    consumer.close()


@pytest.fixture
def redis_url(stack: StackConfig) -> str:
    """URL of a flushed Redis database for this test, one of databases 1 to 14.

    Databases are handed out in turn and flushed before the test, so a test
    finds no keys from earlier tests. Database 0 is never used, which leaves
    it to the demo on the same server.
    """
    database = claim_redis_database(stack.redis_port)
    url = f"redis://127.0.0.1:{stack.redis_port}/{database}"
    connection = redis.Redis.from_url(url)
    try:
        connection.flushdb()
    finally:
        connection.close()
    return url
