"""Validation of the settings shared by the watcher and the workers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from tasks import settings
from tasks.settings import (
    BrokerSettings,
    InvalidSettingsError,
    KafkaSettings,
    PodSelection,
    Policy,
    check_all,
)


def test_namespaces_accept_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_MONITOR_NAMESPACES", "runs, batch ,")

    assert PodSelection().namespaces == ["runs", "batch"]


def test_empty_selector_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_MONITOR_LABEL_SELECTOR", "  ")

    with pytest.raises(ValidationError, match="empty label selector"):
        PodSelection()


def test_invalid_label_key_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_MONITOR_EXECUTION_ID_LABEL", "not a key!")

    with pytest.raises(ValidationError, match="execution_id_label"):
        PodSelection()


def test_invalid_topic_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_MONITOR_KAFKA_TOPIC", "bad topic")

    with pytest.raises(ValidationError, match="not a valid Kafka topic name"):
        KafkaSettings()


def test_non_redis_url_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_MONITOR_REDIS_URL", "http://localhost:6379")

    with pytest.raises(ValidationError, match="not a Redis URL"):
        BrokerSettings()


def test_short_visibility_timeout_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_MONITOR_VISIBILITY_TIMEOUT_SECONDS", "5")

    with pytest.raises(ValidationError, match="visibility_timeout_seconds"):
        BrokerSettings()


def test_negative_grace_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_MONITOR_PENDING_GRACE_SECONDS", "-1")

    with pytest.raises(ValidationError, match="pending_grace_seconds"):
        Policy()


def test_fatal_reasons_accept_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_MONITOR_FATAL_WAITING_REASONS", "ErrImagePull,Foo")

    assert Policy().fatal_waiting_reasons == ["ErrImagePull", "Foo"]


def test_kafka_extra_config_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_MONITOR_KAFKA_EXTRA_CONFIG", '{"security.protocol": "SSL"}')

    assert KafkaSettings().extra_config == {"security.protocol": "SSL"}


def test_check_all_names_each_invalid_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_MONITOR_KAFKA_TOPIC", "bad topic")
    monkeypatch.setenv("POD_MONITOR_PENDING_GRACE_SECONDS", "soon")
    _clear_caches()

    with pytest.raises(InvalidSettingsError) as raised:
        check_all()
    _clear_caches()

    assert "POD_MONITOR_KAFKA_TOPIC='bad topic' is invalid" in str(raised.value)
    assert "POD_MONITOR_PENDING_GRACE_SECONDS='soon' is invalid" in str(raised.value)


def test_worker_exits_on_invalid_setting() -> None:
    env = {**os.environ, "POD_MONITOR_KAFKA_TOPIC": "bad topic"}

    result = subprocess.run(
        [sys.executable, "-c", "import tasks.app"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 2
    assert "POD_MONITOR_KAFKA_TOPIC='bad topic' is invalid" in result.stderr


def _clear_caches() -> None:
    for accessor in (
        settings.pod_selection,
        settings.policy,
        settings.broker,
        settings.kafka,
        settings.logs,
        settings.worker,
    ):
        accessor.cache_clear()


def test_invalid_namespace_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_MONITOR_NAMESPACES", "runs,Bad_NS!")

    with pytest.raises(ValidationError, match="not a valid namespace name"):
        PodSelection()


@pytest.mark.parametrize(
    "selector",
    [
        "app.kubernetes.io/managed-by=pod-monitor-executions",
        "team=a,tier!=batch",
        "!legacy",
        "env in (prod, staging),tier notin (x)",
        "priority>3",
    ],
)
def test_valid_selectors_accepted(selector: str) -> None:
    assert PodSelection(label_selector=selector).label_selector == selector


@pytest.mark.parametrize("selector", ["a=b=c", "=x", "a in b", "bad key=1", "a,,b"])
def test_invalid_selector_rejected(selector: str) -> None:
    with pytest.raises(ValidationError, match="not a label selector requirement"):
        PodSelection(label_selector=selector)
