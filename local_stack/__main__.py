"""Command line of the local stack: `python -m local_stack {up,down,status,env}`."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence

from local_stack import build
from local_stack.components.flower import Flower
from local_stack.config import StackConfig
from local_stack.errors import StackError
from local_stack.leases import sessions_active
from local_stack.stack import Stack

logger = logging.getLogger("local_stack")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and return the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m local_stack",
        description="Build, start and stop etcd, kube-apiserver, the kubelet "
        "stand-in, Kafka and Redis on 127.0.0.1 for tests and the demo.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log health check attempts too"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="build what is missing and start every component")
    down = commands.add_parser("down", help="stop every component")
    down.add_argument(
        "--wipe",
        action="store_true",
        help="also delete stored data, certificates and the kubeconfig",
    )
    commands.add_parser(
        "status", help="print each component's state; exit 1 if any is not up"
    )
    commands.add_parser("env", help="print shell exports for clients of the stack")
    arguments = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if arguments.verbose else logging.INFO,
        format="local_stack: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = StackConfig.from_environ()
        stack = Stack(config)
        if arguments.command == "up":
            return _up(stack)
        if arguments.command == "down":
            return _down(stack, wipe=arguments.wipe)
        if arguments.command == "status":
            return _status(stack)
        return _env(config)
    except StackError as error:
        logger.error("%s", error)
        return 1
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130


def _up(stack: Stack) -> int:
    started = stack.up()
    if started:
        logger.info("started: %s", ", ".join(started))
    else:
        logger.info("everything was already running")
    logger.info('use it with: eval "$(python -m local_stack env)"')
    return 0


def _down(stack: Stack, *, wipe: bool) -> int:
    if sessions_active(stack.config.stack_dir):
        logger.warning(
            "pytest sessions are still using %s; their stack tests will fail",
            stack.config.stack_dir,
        )
    problems = stack.down(wipe=wipe)
    for problem in problems:
        logger.error("%s", problem)
    return 1 if problems else 0


def _status(stack: Stack) -> int:
    exit_code = 0
    for entry in stack.status():
        ports = ",".join(str(port) for port in entry.ports)
        pid = str(entry.pid) if entry.pid is not None else "-"
        line = (
            f"{entry.name:<15} {entry.state:<9} pid {pid:<8} port {ports:<12} "
            f"log {entry.log_path}"
        )
        if entry.detail:
            line += f"  ({entry.detail})"
        print(line)
        if entry.state not in {"up", "skipped"}:
            exit_code = 1
    return exit_code


def _env(config: StackConfig) -> int:
    kubectl = build.kube_binaries()[1].path(config.cache_dir)
    exports = {
        "KUBECONFIG": str(config.kubeconfig_path),
        "POD_MONITOR_KAFKA_BOOTSTRAP_SERVERS": config.kafka_bootstrap_servers,
        "POD_MONITOR_REDIS_URL": config.redis_url,
        "POD_MONITOR_STACK_DIR": str(config.stack_dir),
        "POD_MONITOR_KUBECTL": str(kubectl),
        **Flower(config).exports(),
    }
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
