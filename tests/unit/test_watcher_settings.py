"""Unit tests of the watcher's settings: environment, flags, validation, exit code."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.logfmt import LogFormat
from watcher.__main__ import EXIT_INVALID_SETTING, main
from watcher.settings import SettingsError, load_config


def test_settings_defaults() -> None:
    config = load_config([])

    assert config.watcher.watch_timeout_min_seconds == 300
    assert config.watcher.watch_timeout_max_seconds == 600
    assert config.watcher.ready_staleness == 1200
    assert config.watcher.leader_election is False
    assert config.watcher.log_format is LogFormat.TEXT
    assert config.namespaces == []


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_MONITOR_WATCH_TIMEOUT_MIN_SECONDS", "5")
    monkeypatch.setenv("POD_MONITOR_WATCH_TIMEOUT_MAX_SECONDS", "10")
    monkeypatch.setenv("POD_MONITOR_NAMESPACES", "a,b,a")
    monkeypatch.setenv("POD_MONITOR_LEADER_ELECTION", "true")

    config = load_config([])

    assert config.watcher.watch_timeout_max_seconds == 10
    assert config.namespaces == ["a", "b"]
    assert config.watcher.leader_election is True


def test_flag_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_MONITOR_LIST_PAGE_SIZE", "100")
    monkeypatch.setenv("POD_MONITOR_REDIS_URL", "redis://127.0.0.1:1/0")

    config = load_config(
        [
            "--list-page-size",
            "200",
            "--redis-url",
            "redis://127.0.0.1:2/3",
            "--log-format",
            "json",
        ]
    )

    assert config.watcher.list_page_size == 200
    assert config.broker.redis_url == "redis://127.0.0.1:2/3"
    assert config.shared_environment == {
        "POD_MONITOR_REDIS_URL": "redis://127.0.0.1:2/3"
    }
    assert config.watcher.log_format is LogFormat.JSON


def test_kubeconfig_from_kubeconfig_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_MONITOR_KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBECONFIG", "/tmp/a.yaml")

    assert load_config([]).watcher.kubeconfig == "/tmp/a.yaml"
    assert (
        load_config(["--kubeconfig", "/tmp/b.yaml"]).watcher.kubeconfig == "/tmp/b.yaml"
    )


@pytest.mark.parametrize(
    ("argv", "names_in_message"),
    [
        (
            ["--watch-timeout-min-seconds", "abc"],
            ["POD_MONITOR_WATCH_TIMEOUT_MIN_SECONDS", "'abc'"],
        ),
        (["--list-page-size", "0"], ["POD_MONITOR_LIST_PAGE_SIZE", "'0'"]),
        (["--health-port", "70000"], ["POD_MONITOR_HEALTH_PORT", "'70000'"]),
        (["--log-format", "xml"], ["POD_MONITOR_LOG_FORMAT", "'xml'"]),
        (["--log-level", "loud"], ["POD_MONITOR_LOG_LEVEL", "'loud'"]),
        (["--redis-url", "http://x"], ["POD_MONITOR_REDIS_URL", "http://x"]),
        (["--label-selector", " "], ["POD_MONITOR_LABEL_SELECTOR", "' '"]),
        (
            ["--watch-timeout-min-seconds", "60", "--watch-timeout-max-seconds", "30"],
            [
                "POD_MONITOR_WATCH_TIMEOUT_MAX_SECONDS=30",
                "POD_MONITOR_WATCH_TIMEOUT_MIN_SECONDS=60",
            ],
        ),
        (
            ["--lease-duration-seconds", "10", "--lease-renew-deadline-seconds", "10"],
            ["POD_MONITOR_LEASE_RENEW_DEADLINE_SECONDS=10.0"],
        ),
    ],
)
def test_invalid_setting_named(argv: list[str], names_in_message: list[str]) -> None:
    with pytest.raises(SettingsError) as raised:
        load_config(argv)

    message = str(raised.value)
    assert "\n" not in message
    for name in names_in_message:
        assert name in message


def test_invalid_environment_value_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_MONITOR_CHECKPOINT_INTERVAL_SECONDS", "-1")

    with pytest.raises(SettingsError, match="POD_MONITOR_CHECKPOINT_INTERVAL_SECONDS"):
        load_config([])


def test_main_exits_2_on_invalid_setting(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--watch-timeout-max-seconds", "soon"])

    assert code == EXIT_INVALID_SETTING
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "POD_MONITOR_WATCH_TIMEOUT_MAX_SECONDS" in error
    assert "'soon'" in error


def test_unknown_flag_exits_2() -> None:
    with pytest.raises(SystemExit) as raised:
        load_config(["--no-such-flag"])

    assert raised.value.code == 2


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_main_exits_2_without_kubeconfig(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.yaml"

    code = main(["--kubeconfig", str(missing)])

    assert code == EXIT_INVALID_SETTING
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert str(missing) in error
