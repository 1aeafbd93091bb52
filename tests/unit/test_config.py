from __future__ import annotations

import pytest

from bot.config import SQLITE_DEFAULT_URL, Settings, load_settings
from bot.errors import ConfigError

TOKEN = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZ_abc"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    # A developer's .env or exported variables must not leak into these tests.
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    for name in ("BOT_TOKEN", "DATABASE_URL", "REDIS_URL", "WEBHOOK_URL", "WEBHOOK_SECRET",
                 "ENVIRONMENT", "LOG_FORMAT", "LOG_LEVEL", "PORT", "PROJECT_NAME"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_embedded_development_setup() -> None:
    settings = load_settings()
    assert settings.database_url.get_secret_value() == SQLITE_DEFAULT_URL
    assert settings.redis_url.get_secret_value() == ""
    assert (settings.host, settings.port, settings.webhook_path) == ("0.0.0.0", 8080, "/webhook")
    assert settings.effective_log_format == "console"
    assert settings.bot_token is None


def test_environment_variables_and_dotenv_are_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / ".env").write_text(f"BOT_TOKEN={TOKEN}\nPROJECT_NAME=from-dotenv\n")
    monkeypatch.setenv("PROJECT_NAME", "from-env")
    settings = load_settings()
    assert settings.require_token() == TOKEN
    assert settings.project_name == "from-env"  # the environment wins over .env


def test_production_defaults_to_json_logs() -> None:
    settings = Settings(_env_file=None, environment="production",  # type: ignore[call-arg]
                        database_url="postgresql+asyncpg://u:p@h/db")  # fmt: skip
    assert settings.effective_log_format == "json"


def test_plain_postgres_urls_get_the_asyncpg_driver() -> None:
    settings = load_settings(database_url="postgres://u:p@h:5432/db")
    assert settings.database_url.get_secret_value() == "postgresql+asyncpg://u:p@h:5432/db"


def test_secrets_are_masked_and_never_in_repr() -> None:
    settings = load_settings(
        bot_token=TOKEN,
        webhook_secret="hook-secret",
        database_url="postgresql+asyncpg://app:pw123456@db:5432/app",
    )
    shown = settings.masked()
    assert shown["BOT_TOKEN"] == "***"
    assert shown["WEBHOOK_SECRET"] == "***"
    assert shown["DATABASE_URL"] == "postgresql+asyncpg://app:***@db:5432/app"
    for text in (repr(settings), str(shown)):
        assert TOKEN not in text
        assert "pw123456" not in text
        assert "hook-secret" not in text


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"port": 0}, "PORT"),
        ({"bot_token": "777:leaked"}, "BOT_TOKEN"),
        ({"project_name": "Has Spaces"}, "PROJECT_NAME"),
        ({"webhook_url": "ftp://x"}, "WEBHOOK_URL"),
        ({"webhook_secret": "spaces are not allowed"}, "WEBHOOK_SECRET"),
        ({"environment": "staging"}, "ENVIRONMENT"),
        ({"db_pool_size": 0}, "DB_POOL_SIZE"),
        # + the 5 s claim wait must stay under Telegram's 60 s webhook timeout
        ({"update_timeout_seconds": 55}, "UPDATE_TIMEOUT_SECONDS"),
    ],
)
def test_invalid_settings_raise_one_line_naming_the_variable(
    overrides: dict[str, object], variable: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert variable in message
    assert "\n" not in message
    assert "leaked" not in message


def test_missing_token_and_secret_are_named() -> None:
    settings = load_settings()
    with pytest.raises(ConfigError, match="BOT_TOKEN"):
        settings.require_token()
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET"):
        settings.require_webhook_secret()
