"""Settings: the only place that reads the environment (and `.env`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from bot.errors import ConfigError

# Names the directory of secret files (bot.config.secrets_dir): the only setting read before the
# others, since it says where some of them are.
SECRETS_DIR_VARIABLE = "SECRETS_DIR"
SQLITE_DEFAULT_URL = "sqlite+aiosqlite:///./hello-bot.db"
_TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,}$")


class Settings(BaseSettings):
    """Runtime configuration; field names map to the upper-case variables of docs/reference.md."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    bot_token: SecretStr | None = None
    # Declared before database_url, whose validator puts it into the URL.
    database_password: SecretStr | None = None
    database_url: SecretStr = SecretStr(SQLITE_DEFAULT_URL)
    redis_url: SecretStr = SecretStr("")
    webhook_url: str = ""
    webhook_path: str = "/webhook"
    webhook_secret: SecretStr | None = None
    webhook_max_connections: int = Field(default=40, ge=1, le=100)
    # How often serve asks getWebhookInfo for Telegram's view of delivery
    # (bot.observability.webhook_info).
    webhook_info_interval_seconds: float = Field(default=60.0, gt=0, le=3600)
    # How long a webhook request's body may take to arrive: a client that sends it slower is
    # answered 408 and its connection closed, so slow clients cannot pile up connections.
    request_read_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    telegram_api_url: str = "https://api.telegram.org"
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    environment: Literal["development", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] | None = None
    project_name: str = Field(default="hello-bot", pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    db_pool_size: int = Field(default=5, ge=1, le=100)
    db_max_overflow: int = Field(default=10, ge=0, le=100)
    shutdown_grace_seconds: float = Field(default=20.0, gt=0, le=300)
    # Processing deadline, counted from the update's claim. Waits for Telegram's pacing do not
    # count, up to as long again within 50 s in all (bot.delivery.deadline); with the claim wait
    # (5 s) the webhook answers within 56 s: under Telegram's 60 s.
    update_timeout_seconds: float = Field(default=25.0, gt=0, le=50)
    # Polling: updates processed at once (more are not fetched, so none is confirmed unstarted),
    # and how long a retryable failure is retried in-process before the update is given up.
    polling_max_in_flight: int = Field(default=100, ge=1, le=1000)
    polling_retry_seconds: float = Field(default=600.0, gt=0, le=86400)
    # Standard OpenTelemetry variables this code reads itself; the SDK reads the rest.
    otel_exporter_otlp_endpoint: str = ""
    otel_exporter_otlp_traces_endpoint: str = ""
    otel_service_name: str = ""
    # Outbound flood control (0 disables): messages per second overall and per private chat.
    telegram_rate_limit: float = Field(default=30.0, ge=0)
    telegram_chat_rate_limit: float = Field(default=1.0, ge=0)
    # The bot host: one `<name>.env` file per bot (bot.hosting.bots_dir); `migrate` migrates them
    # all.
    bots_dir: Path | None = None
    # Where secret files were read from (load_settings sets it from the environment).
    secrets_dir: Path | None = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "bot_token", "webhook_secret", "database_password", "bots_dir", "secrets_dir", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("bot_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_token(value.get_secret_value())
        return value

    @field_validator("database_url", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        return SQLITE_DEFAULT_URL if value in ("", None) else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        url = value.get_secret_value()
        if url.startswith(("postgres://", "postgresql://")):
            url = "postgresql+asyncpg://" + url.split("://", 1)[1]
        if not url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            msg = "must start with postgresql+asyncpg:// or sqlite+aiosqlite://"
            raise ValueError(msg)
        password: SecretStr | None = info.data.get("database_password")
        if password is not None:
            url = _with_password(url, password.get_secret_value())
        return SecretStr(url)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            msg = "must start with redis://, rediss:// or unix:// (or be empty)"
            raise ValueError(msg)
        return value

    @field_validator("webhook_url", "telegram_api_url")
    @classmethod
    def _check_http_url(cls, value: str) -> str:
        if value and not value.startswith(("https://", "http://")):
            msg = "must be an http(s):// URL"
            raise ValueError(msg)
        return value.rstrip("/")

    @field_validator("webhook_path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9/_.-]*", value):
            msg = "must start with / and contain only letters, digits and /_.-"
            raise ValueError(msg)
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_webhook_secret(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _production_needs_real_services(self) -> Settings:
        if self.environment == "production" and self.is_sqlite:
            msg = "DATABASE_URL: production needs PostgreSQL (postgresql+asyncpg://...)"
            raise ValueError(msg)
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.get_secret_value().startswith("sqlite")

    @property
    def effective_log_format(self) -> Literal["json", "console"]:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.environment == "production" else "console"

    def require_token(self) -> str:
        if self.bot_token is None:
            msg = "BOT_TOKEN is required for this command (get one from @BotFather)"
            raise ConfigError(msg)
        return self.bot_token.get_secret_value()

    def require_bots_dir(self) -> Path:
        if self.bots_dir is None:
            msg = "BOTS_DIR is required by host (a directory of <name>.env files, one per bot)"
            raise ConfigError(msg)
        return self.bots_dir

    def require_webhook_secret(self) -> str:
        if self.webhook_secret is None:
            msg = "WEBHOOK_SECRET is required by serve (1-256 characters of A-Z, a-z, 0-9, _ -)"
            raise ConfigError(msg)
        return self.webhook_secret.get_secret_value()

    def masked(self) -> dict[str, str]:
        """Every setting as its environment variable, secrets masked (for check-config)."""
        shown: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = _mask(name, value.get_secret_value())
            shown[name.upper()] = "" if value is None else str(value)
        return shown


def check_token(token: str) -> None:
    """Raises ValueError for a malformed token, without echoing it: it is a secret even then."""
    if not _TOKEN_RE.match(token):
        msg = "must look like 123456:ABC... (the token @BotFather gave you)"
        raise ValueError(msg)


def check_webhook_secret(secret: str) -> None:
    """Telegram's own rule for secret_token."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
        msg = "must be 1-256 characters of A-Z, a-z, 0-9, _ and -"
        raise ValueError(msg)


def _with_password(url: str, password: str) -> str:
    """DATABASE_PASSWORD replaces the URL's password, so the URL can sit in plain configuration
    and the password in a secret file."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        msg = "DATABASE_PASSWORD is set, but DATABASE_URL is not a PostgreSQL URL"
        raise ValueError(msg)
    return parsed.set(password=password).render_as_string(hide_password=False)


def secrets_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """SECRETS_DIR: a directory of secret files, one per setting (`bot_token`, ...), as a
    Kubernetes Secret volume mounts them; None when unset. A missing directory is an error,
    not a silently empty source."""
    value = (os.environ if environ is None else environ).get(SECRETS_DIR_VARIABLE, "")
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        msg = f"invalid setting {SECRETS_DIR_VARIABLE}: {value} is not a directory"
        raise ConfigError(msg)
    return path


def _mask(name: str, secret: str) -> str:
    if not secret:
        return ""
    if name.endswith("_url"):
        # URLs are useful to see; only their password is secret.
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", secret)
    return "***"


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning validation errors into one ConfigError line naming the variable."""
    overrides.setdefault("_secrets_dir", secrets_dir())
    overrides.setdefault("secrets_dir", overrides["_secrets_dir"])
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        reason = str(error["msg"]).removeprefix("Value error, ")
        # Field errors carry the field; cross-field ones name their variables in the message.
        msg = (
            f"invalid setting {str(error['loc'][0]).upper()}: {reason}" if error["loc"] else reason
        )
        raise ConfigError(msg) from None
