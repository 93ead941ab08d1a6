"""Measure one reconciliation over many execution pods of the local stack.

Run from the repository root with the stack up::

    eval "$(.venv/bin/python -m local_stack env)"
    .venv/bin/python -m benchmarks.bench_reconcile

The script creates a namespace of ``--pods`` execution pods through the
real API server, a Kafka topic and the state in a Redis database, then runs
``tasks.reconciling.Reconciler`` in this process:

- most pods are bound to a node that no kubelet serves, so they stay
  Pending and cost the API server nothing after their creation. The state
  records all three events of each, as for executions that finished.
- ``--missing`` pods are scripted pods on the stand-in's node that succeed
  with a short log. The state knows nothing of them, so the run emits
  their scheduled, running and completed events, log read included.
- ``--vanished`` executions are tracked as running in the state but have
  no pod, so the run fails them with ``pod_disappeared``.

It times three runs: the repair run, a steady run that finds nothing to do,
and the repair run again under tracemalloc for its traced peak, after the
state of the repaired executions is rewound. Peak RSS is read from
``VmHWM``, reset before each run through ``/proc/self/clear_refs``, and
``ru_maxrss`` is the process's lifetime peak. Everything the script made is
deleted at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in __all__
    AdminClient,
    NewTopic,
)
from kubernetes import client as kube_client
from kubernetes import config as kube_config

from local_stack.config import NODE_NAME, StackConfig
from local_stack.executions import execution_pod
from local_stack.kubelet.script import ANNOTATION, Script, Step
from tasks import handling
from tasks.events import EventType, PodRef
from tasks.publishing import Publisher
from tasks.reconciling import Reconciler
from tasks.settings import (
    KafkaSettings,
    LogSettings,
    PodSelection,
    Policy,
    WorkerSettings,
)
from tasks.state import StateStore

#: Node that no kubelet serves: pods bound to it stay Pending.
IDLE_NODE = "bench-idle-node"
#: Parallel requests while creating pods.
CREATE_THREADS = 16
#: State retention of the run, the default of POD_MONITOR_STATE_RETENTION_DAYS.
RETENTION = timedelta(days=7)
MIB = 1024 * 1024


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=10_000, help="pods in total")
    parser.add_argument(
        "--missing",
        type=int,
        default=500,
        help="scripted pods, among --pods, whose events are all missing",
    )
    parser.add_argument(
        "--vanished",
        type=int,
        default=100,
        help="tracked executions without a pod, on top of --pods",
    )
    parser.add_argument(
        "--redis-db",
        type=int,
        default=15,
        help="Redis database of the stack for the state; it must be empty",
    )
    parser.add_argument("--page-size", type=int, default=500, help="pods per list page")
    parser.add_argument(
        "--keep", action="store_true", help="keep the namespace, topic and state"
    )
    arguments = parser.parse_args(argv)
    if not 0 <= arguments.missing <= arguments.pods:
        parser.error("--missing must be between 0 and --pods")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    stack = StackConfig.from_environ()
    run_id = uuid.uuid4().hex[:8]
    namespace = f"bench-reconcile-{run_id}"
    topic = f"bench-reconcile-{run_id}"
    redis_url = f"redis://127.0.0.1:{stack.redis_port}/{arguments.redis_db}"
    state_client = redis.Redis.from_url(redis_url)
    if state_client.dbsize():
        print(
            f"error: Redis database {arguments.redis_db} is not empty; pick an "
            "empty one with --redis-db",
            file=sys.stderr,
        )
        return 2

    core = kube_client.CoreV1Api(new_api_client(stack))
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[
        topic
    ].result(timeout=30)
    namespace_body: Any = {"metadata": {"name": namespace}}
    core.create_namespace(namespace_body)
    try:
        context = handling.Context(
            store=StateStore(
                state_client,
                retention_seconds=RETENTION.total_seconds(),
                lock_seconds=WorkerSettings().execution_lock_seconds,
            ),
            publisher=Publisher(
                KafkaSettings(
                    bootstrap_servers=stack.kafka_bootstrap_servers, topic=topic
                )
            ),
            core_v1=core,
            policy=Policy(),
            kafka=KafkaSettings(topic=topic),
            logs=LogSettings(),
        )
        selection = PodSelection(namespaces=[namespace])
        bench(arguments, context, selection, state_client)
    finally:
        if not arguments.keep:
            clean_up(core, admin, namespace, topic, state_client)
    return 0


def bench(
    arguments: argparse.Namespace,
    context: handling.Context,
    selection: PodSelection,
    state_client: redis.Redis,
) -> None:
    core = context.core_v1
    namespace = selection.namespaces[0]
    print(
        f"pods {arguments.pods} (missing events: {arguments.missing}), "
        f"vanished {arguments.vanished}, page size {arguments.page_size}"
    )
    idle = arguments.pods - arguments.missing
    manifests = [idle_pod(f"idle-{n:06d}") for n in range(idle)]
    manifests += [scripted_pod(f"missing-{n:06d}") for n in range(arguments.missing)]
    seconds = timed(lambda: create_pods(core, namespace, manifests))
    print(f"created {len(manifests)} pods in {seconds:.1f} s")
    seconds = timed(lambda: wait_succeeded(core, namespace, arguments.missing))
    print(f"scripted pods succeeded after {seconds:.1f} s more")

    store = context.store
    finished = [(f"idle-{n:06d}", f"uid-idle-{n}") for n in range(idle)]
    vanished = [
        (f"vanished-{n:06d}", f"uid-vanished-{n}") for n in range(arguments.vanished)
    ]

    def seed_finished() -> None:
        for execution_id, uid in finished:
            pod = PodRef(namespace=namespace, name=f"exec-{execution_id}", uid=uid)
            for event_type in (
                EventType.SCHEDULED,
                EventType.RUNNING,
                EventType.COMPLETED,
            ):
                store.record(execution_id, event_type, f"{uid}-{event_type.value}", pod)

    def seed_vanished() -> None:
        for execution_id, uid in vanished:
            pod = PodRef(namespace=namespace, name=f"exec-{execution_id}", uid=uid)
            for event_type in (EventType.SCHEDULED, EventType.RUNNING):
                store.record(execution_id, event_type, f"{uid}-{event_type.value}", pod)

    seconds = timed(seed_finished)
    seed_vanished()
    seeded = len(finished) + len(vanished)
    print(f"seeded the state of {seeded} executions in {seconds:.1f} s")

    reconciler = Reconciler(
        context,
        state_client,
        selection,
        retention=RETENTION,
        lock_seconds=WorkerSettings().reconcile_lock_seconds,
        page_size=arguments.page_size,
    )

    print()
    print(f"{'run':<24}{'seconds':>9}{'pods/s':>10}{'emitted':>9}{'VmHWM MiB':>11}")
    for label in ("repair", "steady (nothing to do)"):
        with peak_rss() as rss:
            clock = time.perf_counter()
            summary = reconciler.run(trigger="bench")
            seconds = time.perf_counter() - clock
        print_row(label, seconds, summary.pods_seen, summary.events_emitted, rss())

    # Rewind the repaired executions, so the traced run repeats the repair.
    for n in range(arguments.missing):
        store.forget(f"missing-{n:06d}")
    for execution_id, _ in vanished:
        store.forget(execution_id)
    seed_vanished()
    tracemalloc.start()
    clock = time.perf_counter()
    summary = reconciler.run(trigger="bench-traced")
    seconds = time.perf_counter() - clock
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print_row(
        "repair under tracemalloc",
        seconds,
        summary.pods_seen,
        summary.events_emitted,
        None,
    )
    print()
    print(f"tracemalloc peak of the repair run: {traced_peak / MIB:.1f} MiB")
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"ru_maxrss of the whole process: {max_rss:.1f} MiB")
    print(f"last summary: {summary.as_dict()}")


def print_row(
    label: str, seconds: float, pods: int, emitted: dict[str, int], rss: float | None
) -> None:
    rss_text = f"{rss:>11.1f}" if rss is not None else f"{'-':>11}"
    print(
        f"{label:<24}{seconds:>9.2f}{pods / seconds:>10.0f}"
        f"{sum(emitted.values()):>9}{rss_text}"
    )


def new_api_client(stack: StackConfig) -> kube_client.ApiClient:
    configuration = kube_client.Configuration()
    kube_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(stack.kubeconfig_path), client_configuration=configuration
    )
    # One connection per creating thread, or urllib3 discards the extras.
    configuration.connection_pool_maxsize = CREATE_THREADS
    return kube_client.ApiClient(configuration)


def idle_pod(execution_id: str) -> dict[str, Any]:
    manifest = execution_pod(execution_id, "pass")
    manifest["spec"]["nodeName"] = IDLE_NODE
    return manifest


def scripted_pod(execution_id: str) -> dict[str, Any]:
    manifest = execution_pod(execution_id, "pass")
    manifest["spec"]["nodeName"] = NODE_NAME
    script = Script(
        [Step.running(delay=0.05), Step.log("main", "done\n"), Step.succeeded()]
    )
    manifest["metadata"]["annotations"] = {ANNOTATION: script.to_json()}
    return manifest


def create_pods(
    core: kube_client.CoreV1Api, namespace: str, manifests: list[dict[str, Any]]
) -> None:
    def create(manifest: dict[str, Any]) -> None:
        body: Any = manifest
        core.create_namespaced_pod(namespace, body, _preload_content=False)

    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        for _ in pool.map(create, manifests):
            pass


def wait_succeeded(core: kube_client.CoreV1Api, namespace: str, count: int) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        pods: Any = core.list_namespaced_pod(
            namespace, field_selector="status.phase=Succeeded", limit=count + 1
        )
        if len(pods.items) >= count:
            return
        time.sleep(1.0)
    raise TimeoutError(f"fewer than {count} scripted pods succeeded within 600 s")


def timed(step: Callable[[], None]) -> float:
    clock = time.perf_counter()
    step()
    return time.perf_counter() - clock


@contextmanager
def peak_rss() -> Iterator[Callable[[], float]]:
    """Reset the peak RSS (Linux) and yield a reader of the new peak in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    peak = 0.0

    def read() -> float:
        return peak

    yield read
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024


def clean_up(
    core: kube_client.CoreV1Api,
    admin: AdminClient,
    namespace: str,
    topic: str,
    state_client: redis.Redis,
) -> None:
    core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
    core.delete_namespace(namespace)
    # No namespace controller runs on the local stack to finish the deletion.
    pending: Any = core.read_namespace(namespace)
    if pending.spec is not None and pending.spec.finalizers:
        pending.spec.finalizers = []
        core.replace_namespace_finalize(namespace, pending)
    admin.delete_topics([topic])[topic].result(timeout=30)
    state_client.flushdb()


if __name__ == "__main__":
    sys.exit(main())
