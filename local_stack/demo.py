"""The main job end to end on the local stack: ``python -m local_stack.demo``.

It starts the stack (building what is missing), a watcher and a prefork
Celery worker, submits executions of real Python code as pods through the
API server, and prints their events as they arrive on Kafka. The stack
keeps running afterwards; ``python -m local_stack down`` stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in __all__
    AdminClient,
    NewTopic,
)
from kubernetes import client as kube_client
from kubernetes import config as kube_config

from local_stack.config import StackConfig
from local_stack.executions import execution_pod
from local_stack.stack import Stack
from tasks.cli import describe

logger = logging.getLogger("local_stack.demo")

NAMESPACE = "demo"
TOPIC = "execution-events"
TERMINAL = {"execution.completed", "execution.failed", "execution.timed_out"}

#: The executions the demo submits: name, code, pod options.
EXECUTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("hello", "print('hello from a pod')", {}),
    ("exit-3", "import sys; print('giving up'); sys.exit(3)", {}),
    ("stderr", "import sys; print('result: 42'); sys.stderr.write('a warning\\n')", {}),
    ("unicode", "print('héllo ✓ 日本語 😀')", {}),
    ("binary", "import sys; sys.stdout.buffer.write(bytes(range(256)))", {}),
    (
        "out-of-memory",
        "blocks = []\nwhile True: blocks.append(bytearray(8 * 1024 * 1024))",
        {"memory_limit": "128Mi"},
    ),
    (
        "too-slow",
        "import time; print('working...', flush=True); time.sleep(600)",
        {"timeout_seconds": 3},
    ),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local_stack.demo", description=__doc__
    )
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for events"
    )
    parser.add_argument("--down", action="store_true", help="stop the stack afterwards")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    config = StackConfig.from_environ()
    stack = Stack(config)
    logger.info(
        "starting the local stack (the first run builds it, which takes minutes)"
    )
    stack.up()
    env = _environment(config)
    _create_topic(config.kafka_bootstrap_servers)
    core = _kube(config)
    _ensure_namespace(core)

    log_dir = config.stack_dir / "demo"
    log_dir.mkdir(parents=True, exist_ok=True)
    with (
        _process("worker", _worker_argv(), env, log_dir),
        _process(
            "watcher",
            [str(Path(sys.executable).parent / "pod-monitor-watcher")],
            env,
            log_dir,
        ),
    ):
        consumer = _consumer_at_end(config.kafka_bootstrap_servers)
        run = uuid.uuid4().hex[:6]
        wanted = {}
        for name, code, options in EXECUTIONS:
            execution_id = f"{name}-{run}"
            manifest: Any = execution_pod(execution_id, code, **options)
            core.create_namespaced_pod(NAMESPACE, manifest)
            wanted[execution_id] = name
        print(
            f"\nsubmitted {len(wanted)} executions in namespace {NAMESPACE!r}; "
            "their events:\n"
        )
        missing = _print_events(consumer, set(wanted), args.timeout)
        consumer.close()

    print()
    if missing:
        print(f"no terminal event within {args.timeout:.0f} s for: {sorted(missing)}")
        print(f"see the logs in {log_dir}")
    else:
        print(f"every execution got its terminal event; logs in {log_dir}")
    print(
        "tail the topic: POD_MONITOR_KAFKA_BOOTSTRAP_SERVERS="
        f"{config.kafka_bootstrap_servers} .venv/bin/pod-monitor events "
        "--from-beginning"
    )
    if args.down:
        stack.down()
    else:
        print(
            "the stack keeps running; stop it with: "
            ".venv/bin/python -m local_stack down"
        )
    return 1 if missing else 0


def _print_events(consumer: Consumer, wanted: set[str], timeout: float) -> set[str]:
    pending = set(wanted)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error() is not None:
            continue
        event = json.loads(message.value() or b"{}")
        if event.get("execution_id") not in wanted:
            continue
        print(describe(event, max_output=120), flush=True)
        if event.get("event_type") in TERMINAL:
            pending.discard(event["execution_id"])
    return pending


def _environment(config: StackConfig) -> dict[str, str]:
    return {
        **os.environ,
        "KUBECONFIG": str(config.kubeconfig_path),
        "POD_MONITOR_REDIS_URL": f"redis://127.0.0.1:{config.redis_port}/0",
        "POD_MONITOR_KAFKA_BOOTSTRAP_SERVERS": config.kafka_bootstrap_servers,
        "POD_MONITOR_KAFKA_TOPIC": TOPIC,
        "POD_MONITOR_NAMESPACES": NAMESPACE,
        # The watcher's probes, on loopback and on a port the system picks,
        # so the demo never fails on a taken 8080.
        "POD_MONITOR_HEALTH_HOST": "127.0.0.1",
        "POD_MONITOR_HEALTH_PORT": "0",
    }


def _worker_argv() -> list[str]:
    celery = str(Path(sys.executable).parent / "celery")
    return [
        celery,
        "-A",
        "tasks.app",
        "worker",
        "-P",
        "prefork",
        "-c",
        "2",
        "-E",
        "-Q",
        "pod-changes,reconcile",
        "-n",
        "demo@%h",
        "-l",
        "INFO",
    ]


@contextlib.contextmanager
def _process(
    name: str, argv: list[str], env: dict[str, str], log_dir: Path
) -> Iterator[None]:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    logger.info("started the %s (pid %d, log %s)", name, process.pid, log_path)
    try:
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        logger.info("stopped the %s", name)


def _create_topic(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if TOPIC in admin.list_topics(timeout=10).topics:
        return
    admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])[
        TOPIC
    ].result(30)


def _consumer_at_end(bootstrap: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"demo-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    partitions = consumer.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
    consumer.assign([TopicPartition(TOPIC, p, OFFSET_END) for p in partitions])
    return consumer


def _kube(config: StackConfig) -> kube_client.CoreV1Api:
    api_client = kube_config.new_client_from_config(
        config_file=str(config.kubeconfig_path)
    )  # type: ignore[no-untyped-call]
    return kube_client.CoreV1Api(api_client)


def _ensure_namespace(core: kube_client.CoreV1Api) -> None:
    try:
        core.create_namespace(
            kube_client.V1Namespace(metadata=kube_client.V1ObjectMeta(name=NAMESPACE))
        )
    except kube_client.ApiException as error:
        if error.status != 409:  # already exists
            raise


if __name__ == "__main__":
    sys.exit(main())
