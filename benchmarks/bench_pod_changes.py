"""How fast one worker process turns pod changes into confirmed events.

Three figures, each printed, none asserted:

1. ``build_snapshot`` on a pod as the watch delivers it (JSON bytes in);
2. ``plan``, the pure mapping from a snapshot to events;
3. ``handling.handle`` end to end against the local stack's real Redis and
   Kafka: lock, state read, publish with a wait for Kafka's delivery report,
   state write. Snapshots of running pods need no log read, so this is the
   cost of the delivery path alone.

Run with the local stack up, from the repository root:

    .venv/bin/python -m benchmarks.bench_pod_changes [--executions N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime

import orjson
import redis

from local_stack.config import StackConfig
from tasks import handling
from tasks.outcomes import ExecutionState, plan
from tasks.publishing import Publisher
from tasks.settings import KafkaSettings, LogSettings, PodSelection, Policy
from tasks.snapshots import build_snapshot
from tasks.state import StateStore
from tests.stack_settings import claim_redis_database
from tests.unit.pods import pod, running


def _raw_pods(count: int) -> list[bytes]:
    template = pod(phase="Running", main=running())
    out = []
    for index in range(count):
        raw = copy.deepcopy(template)
        raw["metadata"]["uid"] = f"uid-{index}"
        raw["metadata"]["labels"]["pod-monitor.io/execution-id"] = f"bench-{index}"
        out.append(orjson.dumps({"type": "MODIFIED", "object": raw}))
    return out


def bench_pure(count: int) -> None:
    selection, policy = PodSelection(), Policy()
    lines = _raw_pods(count)

    started = time.perf_counter()
    snapshots = [
        build_snapshot(orjson.loads(line)["object"], selection) for line in lines
    ]
    built = time.perf_counter() - started

    now = datetime.now(UTC)
    started = time.perf_counter()
    for snapshot in snapshots:
        plan(snapshot, ExecutionState(), now=now, policy=policy)
    planned = time.perf_counter() - started

    print(f"build_snapshot   {count / built:>10,.0f} snapshots/s  ({count} pods)")
    print(f"plan             {count / planned:>10,.0f} snapshots/s")


def bench_delivery(executions: int) -> None:
    stack = StackConfig.from_environ()
    database = claim_redis_database(stack.redis_port)
    client = redis.Redis.from_url(f"redis://127.0.0.1:{stack.redis_port}/{database}")
    client.flushdb()
    topic = f"bench-pod-changes-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap_servers, topic=topic)
    context = handling.Context(
        store=StateStore(client, retention_seconds=3600, lock_seconds=60),
        publisher=Publisher(kafka),
        core_v1=None,
        policy=Policy(),
        kafka=kafka,
        logs=LogSettings(),
    )
    selection = PodSelection()
    snapshots = [
        build_snapshot(orjson.loads(line)["object"], selection)
        for line in _raw_pods(executions)
    ]
    # The first publish creates the topic and connects; keep it out.
    handling.handle(snapshots[0], context)

    latencies: list[float] = []
    started = time.perf_counter()
    for snapshot in snapshots[1:]:
        one = time.perf_counter()
        result = handling.handle(snapshot, context)
        latencies.append(time.perf_counter() - one)
        assert len(result.emitted) == 2, result
    elapsed = time.perf_counter() - started
    events = 2 * len(latencies)

    quantiles = statistics.quantiles(latencies, n=100)
    print(
        f"handle (Redis+Kafka) {len(latencies) / elapsed:>6,.0f} snapshots/s, "
        f"{events / elapsed:,.0f} events/s; per snapshot p50 "
        f"{quantiles[49] * 1000:.1f} ms, p99 {quantiles[98] * 1000:.1f} ms "
        f"({len(latencies)} snapshots, 2 events each, one process)"
    )
    client.flushdb()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=2000)
    parser.add_argument("--pure", type=int, default=50_000, help="pods for 1 and 2")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}")
    bench_pure(args.pure)
    bench_delivery(args.executions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
