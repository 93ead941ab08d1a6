"""The operator's command line: ``pod-monitor``.

- ``pod-monitor events``: print the events on the topic in readable form,
  from the beginning or from now, following new ones.
- ``pod-monitor reconcile``: send a reconciliation, optionally wait for it
  and print its summary.
- ``pod-monitor schema``: print the JSON Schema of the events.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeoutError
from confluent_kafka import Consumer, KafkaError

from tasks import names, settings
from tasks.app import app, reconcile_expires_seconds
from tasks.events import json_schema

_EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pod-monitor",
        description="Tail the execution events, reconcile, print the schema.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    events = commands.add_parser(
        "events", help="print the execution events on the topic"
    )
    events.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest event"
    )
    events.add_argument(
        "--no-follow",
        action="store_true",
        help="stop once no event came for --idle seconds",
    )
    events.add_argument(
        "--idle", type=float, default=5.0, help="seconds (with --no-follow)"
    )
    events.add_argument(
        "--json", action="store_true", help="print each event as one JSON line"
    )
    events.add_argument(
        "--execution", help="print only the events of this execution id"
    )
    events.add_argument(
        "--max-output", type=int, default=200, help="characters of output shown"
    )

    reconcile = commands.add_parser("reconcile", help="send a reconciliation now")
    reconcile.add_argument(
        "--wait",
        action="store_true",
        help="wait and print the summary; exit 1 unless its status is completed",
    )
    reconcile.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait"
    )

    commands.add_parser("schema", help="print the JSON Schema of the events")

    args = parser.parse_args(argv)
    if args.command == "events":
        return _events(args)
    if args.command == "reconcile":
        return _reconcile(args)
    json.dump(json_schema(), sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


def _events(args: argparse.Namespace) -> int:
    kafka = settings.kafka()
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            # A group of its own, so tailing never takes events from anyone.
            "group.id": f"pod-monitor-tail-{uuid.uuid4()}",
            "auto.offset.reset": "earliest" if args.from_beginning else "latest",
            "enable.auto.commit": False,
            **kafka.extra_config,
        }
    )
    consumer.subscribe([kafka.topic])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for value in _values(consumer, idle=args.idle if args.no_follow else None):
            event = json.loads(value)
            if args.execution and event.get("execution_id") != args.execution:
                continue
            print(
                json.dumps(event) if args.json else describe(event, args.max_output),
                flush=True,
            )
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # The reader went away (`pod-monitor events | head`): stop quietly,
        # and keep Python from reporting the closed pipe at exit.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115, PTH123
    finally:
        consumer.close()
    return 0


def _values(consumer: Consumer, *, idle: float | None) -> Iterator[bytes]:
    quiet = 0.0
    while idle is None or quiet < idle:
        message = consumer.poll(0.5)
        if message is None:
            quiet += 0.5
            continue
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                print(f"error: {error}", file=sys.stderr)
            continue
        quiet = 0.0
        value = message.value()
        if value is not None:
            yield value


def describe(event: dict[str, Any], max_output: int = 200) -> str:
    """Return one readable line (two with output) for an event."""
    pod = event.get("pod", {})
    head = (
        f"{event.get('occurred_at', '')[:23]:23}  {event.get('event_type', '?'):22} "
        f"{event.get('execution_id')}  pod={pod.get('namespace')}/{pod.get('name')}"
    )
    if "reason" not in event:
        return head
    parts = [f"reason={event['reason']}", f"exit_code={event.get('exit_code')}"]
    resources = event.get("resources") or {}
    if resources.get("wall_seconds") is not None:
        parts.append(f"wall={resources['wall_seconds']:.2f}s")
    if resources.get("peak_memory_bytes") is not None:
        parts.append(f"peak_memory={resources['peak_memory_bytes'] // 1024}KiB")
    if not event.get("report_found"):
        parts.append(f"report_found=false ({event.get('report_problem')})")
    if event.get("log_status") != "read":
        parts.append(f"log={event.get('log_status')}")
    lines = [head + "  " + " ".join(parts)]
    for stream in ("stdout", "stderr"):
        output = event.get(stream) or {}
        if output.get("size_bytes"):
            lines.append(f"    {stream}: {_preview(output, max_output)}")
    return "\n".join(lines)


def _preview(output: dict[str, Any], max_chars: int) -> str:
    data = output.get("data", "")
    text = repr(data[:max_chars]) if output.get("encoding") == "utf-8" else "<binary>"
    notes = [f"{output.get('size_bytes')} bytes"]
    if output.get("encoding") == "base64":
        notes.append("base64")
    if output.get("truncated"):
        notes.append(f"truncated from {output.get('original_size_bytes')}")
    return f"{text} ({', '.join(notes)})"


def _reconcile(args: argparse.Namespace) -> int:
    # The CLI does not load the task module, so it sets the expiry that the
    # task's own options give every other trigger.
    result = app.send_task(
        names.RECONCILE_TASK,
        kwargs={"trigger": "cli"},
        expires=reconcile_expires_seconds(settings.worker()),
    )
    print(f"sent reconciliation {result.id}")
    if not args.wait:
        return 0
    try:
        summary = result.get(timeout=args.timeout, propagate=False)
    except CeleryTimeoutError:
        print(
            f"error: reconciliation {result.id} returned no result within "
            f"{args.timeout:g} s; is a worker serving the queue "
            f"{names.RECONCILE_QUEUE!r}?",
            file=sys.stderr,
        )
        return 1
    if not result.successful():
        print(
            f"error: reconciliation {result.id} ended in state {result.state}: "
            f"{summary}",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0 if summary.get("status") == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
