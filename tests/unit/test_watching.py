"""Unit tests of the list-then-watch ladder, on scripted API responses and fake time."""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field

import pytest

from tasks.settings import PodSelection
from watcher.checkpoint import Checkpoint, Checkpointer
from watcher.errors import ApiError
from watcher.health import Health
from watcher.metrics import WatcherMetrics
from watcher.scope import Scope
from watcher.testing import (
    LABEL_SELECTOR,
    Advance,
    Break,
    FakeCheckpointStore,
    FakeClock,
    FakePodApi,
    RecordingEnqueue,
    Script,
    Stall,
    bookmark,
    error_event,
    event,
    pod,
    pod_list,
)
from watcher.watching import ScopeWatcher, WatchOptions

SCOPE = Scope("jobs")

POD_A = pod("a", "10")
POD_B = pod("b", "11")
LIST_AB = pod_list("100", [POD_A, POD_B])
LIST_EMPTY = pod_list("100", [])

#: One pod starts running, then the server closes the watch (its timeout).
STREAM_A_RUNNING: Script = [
    event("MODIFIED", pod("a", "101", phase="Running")),
    Advance(300),
]
STREAM_WITH_ERROR_410: Script = [
    event("MODIFIED", pod("a", "101", phase="Running")),
    error_event(410, "Expired", "too old resource version: 100 (150)"),
]
STREAM_WITH_ERROR_500: Script = [
    event("MODIFIED", pod("a", "101", phase="Running")),
    error_event(500, "InternalError", "etcd leader changed"),
]
STREAM_WITH_BOOKMARK: Script = [
    event("MODIFIED", pod("a", "101", phase="Running")),
    bookmark("150"),
    Advance(300),
]
STREAM_WITH_NON_JSON: Script = [
    b"<html>proxy error</html>",
    b'{"no": "type"}',
    b"",
    event("MODIFIED", pod("a", "101", phase="Running")),
    Advance(300),
]
STREAM_WITH_STALL: Script = [
    event("MODIFIED", pod("a", "101", phase="Running")),
    Stall(),
]
STREAM_WITH_BREAK: Script = [
    event("MODIFIED", pod("a", "101", phase="Running")),
    Break(),
]
STREAM_UNCHANGED: Script = [
    # A resourceVersion bump alone changes no event, so no task.
    event("MODIFIED", pod("a", "101")),
    event("MODIFIED", pod("a", "102", phase="Running")),
    Advance(300),
]
STREAM_WITH_DELETE: Script = [event("DELETED", pod("a", "101")), Advance(300)]
STREAM_WITHOUT_EXECUTION_ID: Script = [
    event("ADDED", pod("x", "101", execution_id=None)),
    event("ADDED", pod("y", "102", execution_id=None)),
    event("ADDED", pod("c", "103")),
    Advance(300),
]
STREAM_EMPTY_AT_ONCE: Script = []


@dataclass
class Harness:
    clock: FakeClock = field(default_factory=FakeClock)
    stop: threading.Event = field(default_factory=threading.Event)
    store: FakeCheckpointStore = field(default_factory=FakeCheckpointStore)
    enqueue: RecordingEnqueue = field(default_factory=RecordingEnqueue)
    metrics: WatcherMetrics = field(default_factory=WatcherMetrics)
    api: FakePodApi = field(init=False)
    health: Health = field(init=False)

    def __post_init__(self) -> None:
        self.api = FakePodApi(self.clock, self.stop)
        self.health = Health(
            self.clock, liveness_window=60, staleness=1200, enqueue_failure_limit=60
        )

    def watcher(self, *, checkpoint_interval: float = 1.0) -> ScopeWatcher:
        return ScopeWatcher(
            SCOPE,
            api=self.api,
            selection=PodSelection(label_selector=LABEL_SELECTOR),
            enqueue=self.enqueue,
            checkpointer=Checkpointer(
                self.store,
                SCOPE,
                label_selector=LABEL_SELECTOR,
                interval=checkpoint_interval,
                clock=self.clock,
                metrics=self.metrics,
            ),
            metrics=self.metrics,
            health=self.health,
            clock=self.clock,
            stop=self.stop,
            options=WatchOptions(timeout_min_seconds=300, timeout_max_seconds=600),
            rng=random.Random(7),
        )

    def run(self) -> ScopeWatcher:
        watcher = self.watcher()
        watcher.run()
        return watcher

    def value(self, name: str, **labels: str) -> float:
        sample = self.metrics.registry.get_sample_value(
            f"pod_monitor_watcher_{name}", {"scope": SCOPE.name, **labels}
        )
        return sample or 0.0


def test_list_then_watch_from_list_version() -> None:
    harness = Harness()
    harness.api.lists = [LIST_AB]
    harness.api.watches = [STREAM_A_RUNNING]

    harness.run()

    assert harness.enqueue.names() == ["a", "b", "a"]
    assert harness.api.watch_calls[0].resource_version == "100"
    assert harness.api.watch_calls[1].resource_version == "101"
    assert harness.store.saved[SCOPE.name].resource_version == "101"


def test_watch_requests_bounded_timeouts() -> None:
    harness = Harness()
    harness.api.lists = [LIST_EMPTY]
    harness.api.watches = [[Advance(300)] for _ in range(20)]

    harness.run()

    for call in harness.api.watch_calls:
        assert 300 <= call.timeout_seconds <= 600
        assert call.read_timeout == call.timeout_seconds + 30.0
    assert len({call.timeout_seconds for call in harness.api.watch_calls}) > 1


def test_routine_close_reconnects_without_backoff() -> None:
    harness = Harness()
    harness.api.lists = [LIST_AB]
    harness.api.watches = [STREAM_A_RUNNING, [Advance(300)]]

    harness.run()

    assert harness.clock.sleeps[:-1] == []  # only the final stop
    assert harness.value("reconnects_total", cause="closed") == 2
    assert [call.resource_version for call in harness.api.watch_calls] == [
        "100",
        "101",
        "101",
    ]


def test_pages_follow_continue_token() -> None:
    harness = Harness()
    harness.api.lists = [
        pod_list("100", [POD_A], continue_token="page-2"),
        pod_list("100", [POD_B]),
    ]

    harness.run()

    assert [call.continue_token for call in harness.api.list_calls[:2]] == [
        None,
        "page-2",
    ]
    assert harness.enqueue.names() == ["a", "b"]
    assert harness.api.watch_calls[0].resource_version == "100"


def test_expired_continue_token_restarts_list() -> None:
    harness = Harness()
    harness.api.lists = [
        pod_list("100", [POD_A], continue_token="page-2"),
        ApiError(410, "Gone", "continue token expired"),
        pod_list("120", [pod("a", "10")], continue_token="page-2b"),
        pod_list("120", [POD_B]),
    ]

    harness.run()

    assert [call.continue_token for call in harness.api.list_calls[:4]] == [
        None,
        "page-2",
        None,
        "page-2b",
    ]
    # Pod a is unchanged in the second attempt, so it is sent once.
    assert harness.enqueue.names() == ["a", "b"]
    assert harness.api.watch_calls[0].resource_version == "120"


def test_error_410_relists(caplog: pytest.LogCaptureFixture) -> None:
    harness = Harness()
    harness.api.lists = [
        LIST_AB,
        pod_list("200", [pod("a", "190", phase="Running"), POD_B]),
    ]
    harness.api.watches = [STREAM_WITH_ERROR_410]
    caplog.set_level(logging.DEBUG, logger="watcher")

    watcher = harness.run()

    assert harness.value("relists_total", cause="expired") == 1
    assert harness.value("resource_version_expired_total", source="watch") == 1
    assert harness.api.watch_calls[1].resource_version == "200"
    assert watcher.resource_version == "200"
    # The relisted state of a equals the one already sent: no new task.
    assert harness.enqueue.names() == ["a", "b", "a"]
    expired = [r for r in caplog.records if "expired" in r.getMessage()]
    assert expired
    assert all(record.levelno == logging.DEBUG for record in expired)


def test_http_410_on_watch_relists() -> None:
    harness = Harness()
    harness.api.lists = [LIST_AB, LIST_AB]
    harness.api.watches = [ApiError(410, "Gone", "")]

    harness.run()

    assert harness.value("relists_total", cause="expired") == 1
    assert len(harness.api.list_calls) >= 2


def test_relist_sends_deleted_pod_missing_from_list() -> None:
    harness = Harness()
    harness.api.lists = [LIST_AB, pod_list("200", [POD_B])]
    harness.api.watches = [[error_event(410, "Gone")]]

    harness.run()

    deleted = [s for s in harness.enqueue.sent if s.deleted]
    assert [s.name for s in deleted] == ["a"]
    assert deleted[0].execution_id == "exec-1"


def test_other_error_event_backs_off_and_resumes() -> None:
    harness = Harness()
    harness.api.lists = [LIST_AB]
    harness.api.watches = [STREAM_WITH_ERROR_500]

    harness.run()

    assert harness.value("reconnects_total", cause="error") == 1
    assert harness.value("relists_total", cause="start") == 1
    assert 0.8 <= harness.clock.sleeps[0] <= 1.6
    assert harness.api.watch_calls[1].resource_version == "101"


def test_bookmark_advances_and_writes_checkpoint() -> None:
    harness = Harness()
    harness.api.lists = [LIST_AB]
    harness.api.watches = [STREAM_WITH_BOOKMARK]

    harness.run()

    assert harness.value("watch_events_total", type="BOOKMARK") == 1
    assert "150" in harness.store.writes
    assert harness.api.watch_calls[1].resource_version == "150"


def test_non_json_lines_counted_and_skipped() -> None:
    harness = Harness()
    harness.api.lists = [LIST_AB]
    harness.api.watches = [STREAM_WITH_NON_JSON]

    harness.run()

    assert harness.value("invalid_lines_total") == 2
    assert harness.enqueue.names() == ["a", "b", "a"]


@pytest.mark.parametrize(
    ("stream", "cause"),
    [(STREAM_WITH_STALL, "stalled"), (STREAM_WITH_BREAK, "error")],
)
def test_broken_stream_resumes_after_backoff(stream: Script, cause: str) -> None:
    harness = Harness()
    harness.api.lists = [LIST_AB]
    harness.api.watches = [stream]

    harness.run()

    assert harness.value("reconnects_total", cause=cause) == 1
    assert harness.value("relists_total", cause="start") == 1
    assert harness.api.watch_calls[1].resource_version == "101"
    assert harness.clock.sleeps[0] >= 0.8


def test_unchanged_key_is_skipped() -> None:
    harness = Harness()
    harness.api.lists = [LIST_AB]
    harness.api.watches = [STREAM_UNCHANGED]

    watcher = harness.run()

    assert harness.enqueue.names() == ["a", "b", "a"]
    assert harness.enqueue.sent[-1].phase == "Running"
    assert harness.value("changes_skipped_total", reason="unchanged") == 1
    # A skipped change is handled too, so the position moves past it.
    assert watcher.resource_version == "102"


def test_deleted_pod_sent_and_forgotten() -> None:
    harness = Harness()
    harness.api.lists = [LIST_AB]
    harness.api.watches = [STREAM_WITH_DELETE]

    watcher = harness.run()

    assert harness.enqueue.sent[-1].deleted is True
    assert harness.enqueue.sent[-1].name == "a"
    assert watcher.memory.uids() == {"uid-b"}


def test_pod_without_execution_id_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness = Harness()
    harness.api.lists = [LIST_EMPTY]
    harness.api.watches = [STREAM_WITHOUT_EXECUTION_ID]
    caplog.set_level(logging.WARNING, logger="watcher")

    harness.run()

    assert harness.enqueue.names() == ["c"]
    assert harness.value("changes_skipped_total", reason="no_execution_id") == 2
    warnings = [r for r in caplog.records if "no execution id" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].__dict__["pod"] == "x"
    assert warnings[0].__dict__["namespace"] == "jobs"


def test_invalid_object_skipped() -> None:
    harness = Harness()
    harness.api.lists = [LIST_EMPTY]
    broken = pod("z", "101")
    del broken["metadata"]["uid"]
    harness.api.watches = [[event("ADDED", broken), Advance(300)]]

    watcher = harness.run()

    assert harness.enqueue.sent == []
    assert harness.value("changes_skipped_total", reason="invalid_object") == 1
    assert watcher.resource_version == "101"


def test_per_pod_order_kept() -> None:
    harness = Harness()
    harness.api.lists = [LIST_EMPTY]
    harness.api.watches = [
        [
            event("ADDED", pod("a", "101")),
            event("ADDED", pod("b", "102")),
            event("MODIFIED", pod("a", "103", phase="Running")),
            event("MODIFIED", pod("b", "104", phase="Running")),
            event("MODIFIED", pod("a", "105", phase="Succeeded")),
            Advance(300),
        ]
    ]

    harness.run()

    phases_of_a = [s.phase for s in harness.enqueue.sent if s.name == "a"]
    assert phases_of_a == ["Pending", "Running", "Succeeded"]
    versions = [int(s.resource_version) for s in harness.enqueue.sent]
    assert versions == sorted(versions)


def test_resume_from_checkpoint_skips_list() -> None:
    harness = Harness()
    harness.store.saved[SCOPE.name] = Checkpoint("90", LABEL_SELECTOR, 0.0)
    harness.api.watches = [STREAM_A_RUNNING]

    harness.run()

    assert harness.api.list_calls == []
    assert harness.api.watch_calls[0].resource_version == "90"
    assert harness.enqueue.names() == ["a"]


def test_410_on_resume_relists_once() -> None:
    harness = Harness()
    harness.store.saved[SCOPE.name] = Checkpoint("5", LABEL_SELECTOR, 0.0)
    harness.api.lists = [LIST_AB]
    harness.api.watches = [[error_event(410, "Expired")], STREAM_A_RUNNING]

    harness.run()

    assert harness.value("resource_version_expired_total", source="resume") == 1
    assert harness.value("relists_total", cause="expired") == 1
    assert [call.resource_version for call in harness.api.watch_calls[:2]] == [
        "5",
        "100",
    ]


def test_checkpoint_of_other_selector_ignored() -> None:
    harness = Harness()
    harness.store.saved[SCOPE.name] = Checkpoint("90", "app=other", 0.0)
    harness.api.lists = [LIST_AB]

    harness.run()

    assert len(harness.api.list_calls) == 1
    assert harness.value("relists_total", cause="start") == 1


def test_checkpoint_read_failure_retried() -> None:
    harness = Harness()
    harness.store.failing = True
    harness.api.lists = [LIST_AB]
    watcher = harness.watcher()

    def recover() -> None:
        harness.store.failing = False

    harness.clock.on_sleep = recover
    watcher.run()

    assert harness.value("reconnects_total", cause="error") == 1
    assert harness.enqueue.names() == ["a", "b"]


def test_checkpoint_writes_coalesced() -> None:
    harness = Harness()
    harness.api.lists = [LIST_EMPTY]
    harness.api.watches = [
        [
            event("ADDED", pod("a", "101")),
            event("ADDED", pod("b", "102")),
            event("ADDED", pod("c", "103")),
            Advance(2),
            event("ADDED", pod("d", "104")),
            event("ADDED", pod("e", "105")),
            Advance(300),
        ]
    ]

    harness.run()

    # The list's version, then one write per interval, then the flush at
    # the end of the stream.
    assert harness.store.writes == ["100", "104", "105"]


def test_stop_while_sending_keeps_checkpoint() -> None:
    harness = Harness()
    harness.enqueue = RecordingEnqueue(stop_after=3, stop=harness.stop)
    harness.api.lists = [LIST_AB]
    harness.api.watches = [
        [
            event("MODIFIED", pod("a", "101", phase="Running")),
            event("MODIFIED", pod("b", "102", phase="Running")),
            Advance(300),
        ]
    ]

    watcher = harness.run()

    assert harness.enqueue.names() == ["a", "b", "a"]
    assert watcher.resource_version == "101"
    assert harness.store.saved[SCOPE.name].resource_version == "101"


def test_short_empty_watch_backs_off() -> None:
    harness = Harness()
    harness.api.lists = [LIST_AB]
    harness.api.watches = [STREAM_EMPTY_AT_ONCE, STREAM_EMPTY_AT_ONCE]

    harness.run()

    assert harness.value("reconnects_total", cause="error") == 2
    assert len(harness.clock.sleeps) >= 2
    assert harness.clock.sleeps[1] > harness.clock.sleeps[0] * 0.9
