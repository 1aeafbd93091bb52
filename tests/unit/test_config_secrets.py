"""SECRETS_DIR: settings read from a directory of files, as a Kubernetes Secret volume mounts
them, so no secret needs to be in the process environment. Variables still work, and win."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bot.config import load_settings
from bot.errors import ConfigError

TOKEN = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZ_abc"
SECRET_NAMES = ("BOT_TOKEN", "WEBHOOK_SECRET", "DATABASE_URL", "DATABASE_PASSWORD", "REDIS_URL")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no developer .env
    for name in (*SECRET_NAMES, "SECRETS_DIR", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)


def kubelet_volume(root: Path, files: dict[str, str]) -> Path:
    """A Secret volume as the kubelet writes it: each name a symlink into `..data/`."""
    data = root / "..2026_12_08_00_00_00.000000001"
    data.mkdir(parents=True)
    (root / "..data").symlink_to(data.name)
    for name, content in files.items():
        (data / name).write_text(content)
        (root / name).symlink_to(f"..data/{name}")
    return root


def test_secrets_are_read_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    directory = kubelet_volume(
        tmp_path / "secrets",
        {
            # `kubectl create secret --from-file` keeps a trailing newline: it is not part of it.
            "bot_token": TOKEN + "\n",
            "webhook_secret": "hook-secret_1",
            "database_password": "p@ss:w/rd",
            "redis_url": "redis://:r3dis@cache:6379/0",
        },
    )
    monkeypatch.setenv("SECRETS_DIR", str(directory))
    # The URL without its password is plain configuration (the chart's ConfigMap).
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://hellobot@db:5432/hellobot")
    settings = load_settings()
    assert settings.require_token() == TOKEN
    assert settings.require_webhook_secret() == "hook-secret_1"
    assert settings.redis_url.get_secret_value() == "redis://:r3dis@cache:6379/0"
    url = settings.database_url.get_secret_value()
    assert url == "postgresql+asyncpg://hellobot:p%40ss%3Aw%2Frd@db:5432/hellobot"
    shown = settings.masked()
    assert shown["DATABASE_PASSWORD"] == "***"
    assert "p%40ss" not in shown["DATABASE_URL"] and "r3dis" not in shown["REDIS_URL"]


def test_asyncpg_logs_in_with_the_password_from_the_file(tmp_path: Path) -> None:
    # The escaped URL round-trips to the very password (what asyncpg sends).
    (tmp_path / "database_password").write_text("p@ss:w/rd%")
    settings = load_settings(
        _secrets_dir=tmp_path, database_url="postgresql://hellobot:old@db/hellobot"
    )
    assert make_url(settings.database_url.get_secret_value()).password == "p@ss:w/rd%"


def test_a_variable_wins_over_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "bot_token").write_text("999:from-the-file-not-used-at-all")
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("BOT_TOKEN", TOKEN)
    assert load_settings().require_token() == TOKEN


def test_a_bad_secret_file_is_named_without_its_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "bot_token").write_text("not-a-token-but-still-secret")
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith("invalid setting BOT_TOKEN:")
    assert "still-secret" not in str(caught.value)


def test_a_missing_secrets_dir_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=r"^invalid setting SECRETS_DIR: .*absent is not a dir"):
        load_settings()


def test_a_password_needs_a_postgresql_url(tmp_path: Path) -> None:
    (tmp_path / "database_password").write_text("pw")
    with pytest.raises(ConfigError, match="DATABASE_PASSWORD is set, but DATABASE_URL is not"):
        load_settings(_secrets_dir=tmp_path)


def test_without_secrets_dir_nothing_changes() -> None:
    settings = load_settings()
    assert settings.bot_token is None and settings.database_password is None
