"""Command line of the kubelet stand-in.

    python -m local_stack.kubelet --kubeconfig PATH --node-name local-node \\
        --port 20250 --state-dir DIR [--bind 127.0.0.1]

Runs until SIGTERM or SIGINT, then kills the container processes it started
and exits with 0. Logs go to stderr, one line per event with key=value fields.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from local_stack.kubelet.api import ApiError, KubeClient
from local_stack.kubelet.log_server import LogServer
from local_stack.kubelet.memory import CgroupV1Memory
from local_stack.kubelet.node import NodeAgent
from local_stack.kubelet.pods import PodManager
from local_stack.kubelet.scheduling import KeyedExecutor, Timers
from local_stack.kubelet.state import StateStore
from local_stack.kubelet.tls import ensure_certificate
from local_stack.kubelet.watch import watch_pods
from local_stack.kubelet.worker import NodeContext

logger = logging.getLogger("local_stack.kubelet")

#: Threads that apply pod changes. Status patches are the slow part, and the
#: API server handles several at once.
WORKERS = 16

#: Seconds to retry the first node registration while the API server starts.
REGISTER_TIMEOUT_SECONDS = 60.0

_STANDARD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class KeyValueFormatter(logging.Formatter):
    """Formats a record as its message followed by its ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [
            f"{key}={value!r}"
            if isinstance(value, str) and " " in value
            else f"{key}={value}"
            for key, value in vars(record).items()
            if key not in _STANDARD_FIELDS
        ]
        if fields:
            head, _, rest = line.partition("\n")
            line = f"{head} {' '.join(fields)}" + (f"\n{rest}" if rest else "")
        return line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local_stack.kubelet",
        description="Kubelet stand-in: runs the pods of one node as local processes.",
    )
    parser.add_argument(
        "--kubeconfig", required=True, help="kubeconfig file with admin access"
    )
    parser.add_argument(
        "--node-name", default="local-node", help="name of the Node to register"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=10250,
        help="TCP port of the HTTPS log and health endpoint",
    )
    parser.add_argument(
        "--bind", default="127.0.0.1", help="address the endpoint listens on"
    )
    parser.add_argument(
        "--state-dir",
        required=True,
        type=Path,
        help="folder for the certificate, pod records and container logs",
    )
    parser.add_argument(
        "--no-scheduling",
        action="store_true",
        help="leave pods without spec.nodeName alone, for a second stand-in "
        "next to one that binds them",
    )
    parser.add_argument("--verbose", action="store_true", help="log at debug level")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler]
    )
    logging.getLogger("urllib3").setLevel(logging.WARNING)

    state_dir: Path = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    store = StateStore(state_dir)
    client = KubeClient(args.kubeconfig, pool_size=WORKERS + 4)
    memory = CgroupV1Memory.detect(args.node_name)
    logger.info(
        "memory limits enforced",
        extra={"method": "cgroup-v1" if memory else "rss-polling"},
    )
    executor = KeyedExecutor(WORKERS)
    timers = Timers(executor)
    context = NodeContext(client, args.node_name, store, executor, timers, memory)

    node = NodeAgent(client, args.node_name, args.port)
    manager = PodManager(context, node.labels(), schedule=not args.no_scheduling)
    cert, key = ensure_certificate(state_dir, args.node_name)
    server = LogServer(args.bind, args.port, cert, key, manager.find_log)
    server.start()
    logger.info(
        "log endpoint listening", extra={"bind": args.bind, "port": server.port}
    )

    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    if not _register(node, stop):
        server.stop()
        return 1
    node.start()
    watcher = threading.Thread(
        target=watch_pods,
        args=(client, manager.resync, manager.on_event, stop),
        name="pod-watch",
        daemon=True,
    )
    watcher.start()
    logger.info("kubelet stand-in running", extra={"node": args.node_name})

    stop.wait()
    manager.shutdown()
    node.stop()
    timers.stop()
    executor.shutdown()
    server.stop()
    if memory is not None:
        memory.release()
    logger.info("kubelet stand-in stopped", extra={"node": args.node_name})
    return 0


def _register(node: NodeAgent, stop: threading.Event) -> bool:
    """Register the node, retrying while the API server is not ready yet."""
    attempt = 0
    deadline_attempts = int(REGISTER_TIMEOUT_SECONDS)
    while not stop.is_set():
        attempt += 1
        try:
            node.register()
            return True
        except ApiError as error:
            if attempt >= deadline_attempts:
                logger.error(
                    "node registration failed, giving up",
                    extra={"attempt": attempt, "error": str(error)},
                )
                return False
            logger.warning(
                "node registration failed, will retry",
                extra={
                    "attempt": attempt,
                    "limit": deadline_attempts,
                    "error": str(error),
                },
            )
            stop.wait(1.0)
    return False


if __name__ == "__main__":
    sys.exit(main())
