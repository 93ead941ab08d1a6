"""Entry point of ``pod-monitor-watcher``: settings, logging, signals, service."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import pydantic
from kubernetes.config.config_exception import ConfigException

from tasks.kube import load_api_client
from tasks.logfmt import configure_logging
from watcher.checkpoint import RedisCheckpointStore, redis_client
from watcher.clock import SystemClock
from watcher.enqueue import configure_sender
from watcher.kube import POOL_SPARE_CONNECTIONS, KubeClient
from watcher.scope import scopes_for
from watcher.service import Service
from watcher.settings import (
    SettingsError,
    describe_error,
    export_shared_settings,
    load_config,
)

logger = logging.getLogger("watcher")

#: Exit code of an invalid setting, the same as argparse's usage errors.
EXIT_INVALID_SETTING = 2
#: Exit code when the process cannot start for another reason.
EXIT_START_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the watcher until SIGTERM or SIGINT; return the exit code."""
    try:
        config = load_config(argv)
    except SettingsError as error:
        print(f"pod-monitor-watcher: {error}", file=sys.stderr)
        return EXIT_INVALID_SETTING

    configure_logging(config.watcher.log_format, config.watcher.log_level)

    # Imported only now: tasks/app.py builds its Celery configuration from
    # the environment at import, which must hold the shared flags and pass
    # validation first.
    export_shared_settings(config)
    try:
        from tasks.app import create_app  # noqa: PLC0415

        celery_app = create_app()
    except pydantic.ValidationError as error:
        # A setting that only tasks/ reads, such as the reconcile interval.
        print(f"pod-monitor-watcher: {describe_error(error)}", file=sys.stderr)
        return EXIT_INVALID_SETTING
    configure_sender(celery_app)

    scopes = scopes_for(config.namespaces)
    try:
        api_client = load_api_client(
            config.watcher.kubeconfig, pool_size=len(scopes) + POOL_SPARE_CONNECTIONS
        )
    except (ConfigException, OSError) as error:
        print(
            f"pod-monitor-watcher: no usable Kubernetes configuration "
            f"(kubeconfig {config.watcher.kubeconfig or 'default'}): {error}; "
            "set KUBECONFIG or --kubeconfig, or run in a pod",
            file=sys.stderr,
        )
        return EXIT_INVALID_SETTING
    service = Service(
        config,
        kube=KubeClient(
            api_client, connect_timeout=config.watcher.connect_timeout_seconds
        ),
        celery_app=celery_app,
        checkpoint_store=RedisCheckpointStore(
            redis_client(
                config.broker.redis_url,
                timeout=config.broker.redis_connect_timeout_seconds,
            ),
            config.watcher.checkpoint_key_prefix,
        ),
        clock=SystemClock(),
    )

    def on_signal(number: int, frame: FrameType | None) -> None:
        logger.info("stop requested", extra={"signal": signal.Signals(number).name})
        service.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        port = service.start_health_server()
    except OSError as error:
        address = f"{config.watcher.health_host}:{config.watcher.health_port}"
        print(
            f"pod-monitor-watcher: the health server cannot listen on {address}: "
            f"{error}; set POD_MONITOR_HEALTH_PORT (--health-port) to a free port",
            file=sys.stderr,
        )
        return EXIT_START_FAILED
    logger.info(
        "watcher started",
        extra={
            "scopes": ",".join(w.scope.name for w in service.watchers),
            "label_selector": config.selection.label_selector,
            "health_port": port,
            "leader_election": config.watcher.leader_election,
        },
    )
    code = service.run()
    logger.info("watcher stopped", extra={"exit_code": code})
    return code


if __name__ == "__main__":
    sys.exit(main())
