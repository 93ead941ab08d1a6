"""The watcher process: one watch loop per scope, the health server, the Lease.

``Service.run`` blocks until a stop is requested (SIGTERM, SIGINT) or a
watch loop dies of a bug, and returns the exit code.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from watcher.backoff import RECONNECT_MAX_SECONDS
from watcher.checkpoint import Checkpointer, CheckpointStore
from watcher.clock import Clock
from watcher.enqueue import CeleryEnqueuer
from watcher.health import Health, HealthServer
from watcher.kube import KubeClient
from watcher.leader import LeaseElector, LeaseOptions
from watcher.metrics import WatcherMetrics
from watcher.podapi import KubePodApi
from watcher.scope import scopes_for
from watcher.settings import Config
from watcher.watching import ScopeWatcher, WatchOptions

logger = logging.getLogger(__name__)

#: Seconds a stopping process waits for each watch loop to finish.
STOP_TIMEOUT_SECONDS = 10.0
#: Seconds between two checks that every watch loop thread is alive.
THREAD_CHECK_SECONDS = 1.0

EXIT_OK = 0
EXIT_FAILED = 1


class Service:
    """Everything one watcher process runs, wired from its configuration."""

    def __init__(
        self,
        config: Config,
        *,
        kube: KubeClient,
        celery_app: Any,
        checkpoint_store: CheckpointStore,
        clock: Clock,
        metrics: WatcherMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.stop = threading.Event()
        self.metrics = metrics or WatcherMetrics()
        settings = config.watcher
        self.health = Health(
            clock,
            liveness_window=(
                settings.watch_timeout_max_seconds
                + settings.read_timeout_margin_seconds
                + RECONNECT_MAX_SECONDS
                + 60.0
            ),
            staleness=settings.ready_staleness,
            enqueue_failure_limit=settings.enqueue_failure_ready_seconds,
        )
        self._kube = kube
        self._clock = clock
        self._api = KubePodApi(kube)
        enqueue = CeleryEnqueuer(
            celery_app,
            clock=clock,
            stop=self.stop,
            metrics=self.metrics,
            health=self.health,
            rng=rng,
        )
        options = WatchOptions(
            timeout_min_seconds=settings.watch_timeout_min_seconds,
            timeout_max_seconds=settings.watch_timeout_max_seconds,
            read_timeout_margin_seconds=settings.read_timeout_margin_seconds,
            list_page_size=settings.list_page_size,
        )
        self.watchers = [
            ScopeWatcher(
                scope,
                api=self._api,
                selection=config.selection,
                enqueue=enqueue,
                checkpointer=Checkpointer(
                    checkpoint_store,
                    scope,
                    label_selector=config.selection.label_selector,
                    interval=settings.checkpoint_interval_seconds,
                    clock=clock,
                    metrics=self.metrics,
                ),
                metrics=self.metrics,
                health=self.health,
                clock=clock,
                stop=self.stop,
                options=options,
                skip_warning_interval=settings.skip_warning_interval_seconds,
                rng=rng,
            )
            for scope in scopes_for(config.namespaces)
        ]
        self._threads: list[threading.Thread] = []
        self.health_server: HealthServer | None = None

    def start_health_server(self) -> int:
        """Start the HTTP server of the probes and metrics; return its port."""
        settings = self.config.watcher
        self.health_server = HealthServer(
            self.health,
            self.metrics.registry,
            settings.health_host,
            settings.health_port,
        )
        self.health_server.start()
        return self.health_server.port

    def request_stop(self) -> None:
        """Ask every loop to stop, and unblock the reads of open watches."""
        self.stop.set()
        self._api.interrupt()

    def run(self) -> int:
        """Watch until stopped; return the process exit code."""
        settings = self.config.watcher
        if not settings.leader_election:
            self.metrics.leader.set(1)
            self._start_watchers()
            code = self._wait_for_watchers(lambda: True)
            self._join_watchers()
            return code

        elector = LeaseElector(
            self._kube,
            LeaseOptions(
                namespace=settings.lease_namespace_or_default(),
                name=settings.lease_name,
                identity=settings.lease_identity,
                lease_duration=settings.lease_duration_seconds,
                renew_deadline=settings.lease_renew_deadline_seconds,
                retry_period=settings.lease_retry_period_seconds,
            ),
            self._clock,
        )
        self.health.set_standby(True)
        self.metrics.leader.set(0)
        if not elector.acquire(self.stop):
            return EXIT_OK
        self.health.set_standby(False)
        self.metrics.leader.set(1)
        self._start_watchers()

        # The Lease is renewed in its own thread, so that the main thread
        # keeps watching the loops and the stop event.
        lost = threading.Event()

        def renew() -> None:
            if not elector.hold(self.stop):
                lost.set()
                self.request_stop()

        renewer = threading.Thread(target=renew, name="lease-renewer", daemon=True)
        renewer.start()
        code = self._wait_for_watchers(lambda: not lost.is_set())
        self.request_stop()
        self._join_watchers()
        renewer.join(timeout=STOP_TIMEOUT_SECONDS)
        self.metrics.leader.set(0)
        if lost.is_set():
            # A fresh process starts clean from the checkpoint, which is
            # simpler to trust than resuming in this one.
            logger.error("exiting because the Lease was lost")
            return EXIT_FAILED
        elector.release()
        return code

    def _start_watchers(self) -> None:
        for watcher in self.watchers:
            thread = threading.Thread(
                target=_run_logged,
                args=(watcher,),
                name=f"watch-{watcher.scope.name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _wait_for_watchers(self, healthy: Callable[[], bool]) -> int:
        while not self.stop.wait(THREAD_CHECK_SECONDS):
            dead = [thread.name for thread in self._threads if not thread.is_alive()]
            if dead:
                logger.error(
                    "watch loop died, exiting", extra={"threads": ",".join(dead)}
                )
                return EXIT_FAILED
            if not healthy():
                return EXIT_FAILED
        return EXIT_OK

    def _join_watchers(self) -> None:
        self.request_stop()
        for thread in self._threads:
            thread.join(timeout=STOP_TIMEOUT_SECONDS)
            if thread.is_alive():
                logger.warning(
                    "watch loop did not stop in time", extra={"thread": thread.name}
                )


def _run_logged(watcher: ScopeWatcher) -> None:
    try:
        watcher.run()
    except Exception:
        # A bug: log it as one structured record; the main thread exits.
        logger.exception("watch loop failed", extra={"scope": watcher.scope.name})
        raise
