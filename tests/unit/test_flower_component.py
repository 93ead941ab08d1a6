"""Unit tests of the local stack's Flower component: port, credentials, exports."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from local_stack.components.flower import (
    BASIC_AUTH_VARIABLE,
    DEFAULT_PORT,
    GENERATED_USER,
    PORT_VARIABLE,
    Flower,
    check_basic_auth,
)
from local_stack.config import StackConfig
from local_stack.errors import ConfigError


def component(tmp_path: Path, **environ: str) -> Flower:
    config = StackConfig(stack_dir=tmp_path, cache_dir=tmp_path / "cache")
    flower = Flower(config, environ=environ)
    flower.directory.mkdir(parents=True, exist_ok=True)
    return flower


def test_port_defaults_to_25555(tmp_path: Path) -> None:
    assert component(tmp_path).ports == (DEFAULT_PORT,)


def test_port_from_environment(tmp_path: Path) -> None:
    assert component(tmp_path, **{PORT_VARIABLE: "35555"}).ports == (35555,)


@pytest.mark.parametrize("value", ["abc", "0", "70000"])
def test_invalid_port_rejected(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=PORT_VARIABLE):
        component(tmp_path, **{PORT_VARIABLE: value})


@pytest.mark.parametrize("value", ["user", "user:", ":password", "a:b,c:d"])
def test_invalid_basic_auth_rejected(value: str) -> None:
    with pytest.raises(ConfigError, match=BASIC_AUTH_VARIABLE):
        check_basic_auth(value, BASIC_AUTH_VARIABLE)


def test_prepare_generates_private_credentials(tmp_path: Path) -> None:
    flower = component(tmp_path)

    flower.prepare()
    generated = flower.basic_auth()

    assert generated is not None
    user, _, password = generated.partition(":")
    assert user == GENERATED_USER
    assert len(password) >= 20
    assert stat.S_IMODE(flower.credentials_path.stat().st_mode) == 0o600


def test_prepare_keeps_generated_credentials(tmp_path: Path) -> None:
    flower = component(tmp_path)
    flower.prepare()
    first = flower.basic_auth()

    flower.prepare()

    assert flower.basic_auth() == first


def test_configured_credentials_win(tmp_path: Path) -> None:
    flower = component(tmp_path, **{BASIC_AUTH_VARIABLE: "ops:secret"})

    flower.prepare()

    assert not flower.credentials_path.exists()
    assert flower.basic_auth() == "ops:secret"
    assert flower.environment()["FLOWER_BASIC_AUTH"] == "ops:secret"
    assert flower.exports()[BASIC_AUTH_VARIABLE] == "ops:secret"


def test_credentials_stay_off_command_line(tmp_path: Path) -> None:
    flower = component(tmp_path, **{BASIC_AUTH_VARIABLE: "ops:secret"})

    command = " ".join(flower.command())

    assert "secret" not in command
    assert "--purge_offline_workers=60" in command
    assert flower.owns_cmdline(command)


def test_environment_uses_redis_database_zero(tmp_path: Path) -> None:
    flower = component(tmp_path, **{BASIC_AUTH_VARIABLE: "ops:secret"})

    redis_url = flower.environment()["POD_MONITOR_REDIS_URL"]

    assert redis_url.endswith("/0")


def test_environment_without_credentials_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Flower credentials"):
        component(tmp_path).environment()
