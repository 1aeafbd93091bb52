"""Operator configuration, read from the environment once, in the startup handler."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from hello_operator.pod_shape import BotPod, chart_dir, load_bot_pod
from hello_operator.policy import Policy

GROUP = "hello-bot.dev"
VERSION = "v1alpha1"
PLURAL = "telegrambots"

# The timer's period is fixed at import (kopf needs it in the decorator); everything else is
# configurable at startup.
WEBHOOK_CHECK_SECONDS = 60.0


@dataclass(frozen=True)
class OperatorConfig:
    """What the operator needs to know about its surroundings."""

    telegram_api_url: str = "https://api.telegram.org"
    # libpq-style URL of a role with CREATEDB and CREATEROLE on the shared PostgreSQL;
    # empty disables `database.mode: Shared`.
    shared_postgres_admin_url: str = ""
    # Host and port of the shared PostgreSQL as the bot pods reach it (default: the admin URL's).
    shared_postgres_host: str = ""
    shared_postgres_port: int = 5432
    # How long to wait before looking at a running migration Job again.
    migration_poll_seconds: float = 10.0
    # How long to wait before retrying a resource blocked by a missing Secret or similar.
    blocked_retry_seconds: float = 60.0
    # The Bot API call timeout.
    telegram_timeout_seconds: float = 10.0
    # A bot moving onto a bot host: the operator points its webhook there once every ready Pod
    # of the host reports the bot serving (GET /readyz, hello_operator.pickup), asking again
    # every HOST_PICKUP_POLL_SECONDS (the host rescans its files every 5 s). Only if no Pod can
    # say (the operator cannot reach them) does it wait HOST_PICKUP_SECONDS after the bot's key
    # entered the bots Secret instead (the kubelet refreshes a mounted Secret at its next sync,
    # 1 min by default) and then proceed.
    host_pickup_seconds: float = 90.0
    host_pickup_poll_seconds: float = 5.0
    # The bot's Pod shape, from the Helm chart's files (pod_shape explains where they are).
    bot_pod: BotPod = field(default_factory=load_bot_pod)
    # What a TelegramBot may ask for (ALLOWED_IMAGES, ALLOWED_INGRESS_ANNOTATIONS; policy.py).
    policy: Policy = field(default_factory=Policy)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        admin_url = shared_postgres_admin_url(env)
        parsed = urlsplit(admin_url) if admin_url else None
        host = env.get("SHARED_POSTGRES_HOST") or (parsed.hostname if parsed else "") or ""
        port = env.get("SHARED_POSTGRES_PORT") or (
            str(parsed.port) if parsed and parsed.port else ""
        )
        return cls(
            telegram_api_url=env.get("TELEGRAM_API_URL", cls.telegram_api_url).rstrip("/"),
            shared_postgres_admin_url=admin_url,
            shared_postgres_host=host,
            shared_postgres_port=int(port or 5432),
            migration_poll_seconds=float(
                env.get("MIGRATION_POLL_SECONDS", cls.migration_poll_seconds)
            ),
            blocked_retry_seconds=float(
                env.get("BLOCKED_RETRY_SECONDS", cls.blocked_retry_seconds)
            ),
            telegram_timeout_seconds=float(
                env.get("TELEGRAM_TIMEOUT_SECONDS", cls.telegram_timeout_seconds)
            ),
            host_pickup_seconds=float(env.get("HOST_PICKUP_SECONDS", cls.host_pickup_seconds)),
            host_pickup_poll_seconds=float(
                env.get("HOST_PICKUP_POLL_SECONDS", cls.host_pickup_poll_seconds)
            ),
            bot_pod=load_bot_pod(chart_dir(env)),
            policy=Policy.parse(
                images=env.get("ALLOWED_IMAGES", ""),
                annotations=env.get("ALLOWED_INGRESS_ANNOTATIONS", ""),
            ),
        )


# Secret settings a Secret volume may hold as files in SECRETS_DIR (file name = variable name),
# so that no credential sits in the operator's environment.
SECRET_FILES = ("SHARED_POSTGRES_ADMIN_URL", "SHARED_POSTGRES_PASSWORD")


def secret_values(env: Mapping[str, str]) -> dict[str, str]:
    """SHARED_POSTGRES_ADMIN_URL and SHARED_POSTGRES_PASSWORD: a file in SECRETS_DIR, else the
    variable. A SECRETS_DIR that is not a directory is an error, not a silently empty source."""
    values = {name: env.get(name, "") for name in SECRET_FILES}
    directory = env.get("SECRETS_DIR", "")
    if not directory:
        return values
    root = Path(directory)
    if not root.is_dir():
        msg = f"SECRETS_DIR {directory} is not a directory"
        raise ValueError(msg)
    for name in SECRET_FILES:
        path = root / name
        if path.is_file():
            values[name] = path.read_text(encoding="utf-8").strip()
    return values


def shared_postgres_admin_url(env: Mapping[str, str]) -> str:
    """The admin URL; SHARED_POSTGRES_PASSWORD replaces its password, so the URL can sit in plain
    configuration and the password in a Secret file."""
    values = secret_values(env)
    url, password = values["SHARED_POSTGRES_ADMIN_URL"], values["SHARED_POSTGRES_PASSWORD"]
    if not url or not password:
        return url
    parts = urlsplit(url)
    user_info, _, host = parts.netloc.rpartition("@")
    user = user_info.split(":", 1)[0]
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))
