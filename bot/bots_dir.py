"""BOTS_DIR: the bots of the host, one `<name>.env` file each, read as a snapshot.

The shape a Kubernetes Secret volume gives (one key per bot, `..data` links beside them): names
starting with `.` are skipped and symlinks are followed. A file that cannot define a bot is
reported with the reason, never with its contents, and the other bots are unaffected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from aiogram.utils.token import extract_bot_id
from dotenv import dotenv_values  # python-dotenv: what pydantic-settings reads .env with
from pydantic import SecretStr

from bot.config import check_token, check_webhook_secret

NAME_RE = re.compile(r"[a-z0-9-]{1,40}")
PER_BOT_KEYS = frozenset({"BOT_TOKEN", "WEBHOOK_SECRET"})


@dataclass(frozen=True, slots=True)
class BotEntry:
    """One bot as its file defines it."""

    name: str
    token: SecretStr
    secret: SecretStr

    @property
    def bot_id(self) -> int:
        return extract_bot_id(self.token.get_secret_value())


@dataclass(frozen=True, slots=True)
class BotsSnapshot:
    bots: dict[str, BotEntry] = field(default_factory=dict)
    """Valid bots by name."""
    problems: dict[str, str] = field(default_factory=dict)
    """File name -> why it defines no bot."""


class BotFileError(ValueError):
    """A bot file that defines no bot; the message never quotes the file's values."""


def read_bots_dir(directory: Path) -> BotsSnapshot:
    """Every bot of `directory`; a missing or unreadable directory is one problem, not a crash."""
    snapshot = BotsSnapshot()
    try:
        paths = sorted(directory.iterdir())
    except OSError as exc:
        snapshot.problems[str(directory)] = f"cannot list the directory: {type(exc).__name__}"
        return snapshot
    owners: dict[int, str] = {}
    for path in paths:
        if path.name.startswith(".") or path.is_dir():
            continue
        try:
            entry = read_bot_file(path)
        except BotFileError as exc:
            snapshot.problems[path.name] = str(exc)
            continue
        if (owner := owners.get(entry.bot_id)) is not None:
            snapshot.problems[path.name] = f"the same bot (token) as {owner}.env"
            continue
        owners[entry.bot_id] = entry.name
        snapshot.bots[entry.name] = entry
    return snapshot


def read_bot_file(path: Path) -> BotEntry:
    name = path.name.removesuffix(".env")
    if not path.name.endswith(".env") or not NAME_RE.fullmatch(name):
        msg = "not <name>.env with a name of lowercase letters, digits and -, at most 40"
        raise BotFileError(msg)
    try:
        values = dotenv_values(path, interpolate=False)
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read it: {type(exc).__name__}"
        raise BotFileError(msg) from None
    if extra := sorted(set(values) - PER_BOT_KEYS):
        msg = f"only BOT_TOKEN and WEBHOOK_SECRET are per bot; {', '.join(extra)} apply to the host"
        raise BotFileError(msg)
    token, secret = values.get("BOT_TOKEN"), values.get("WEBHOOK_SECRET")
    for key, value, check in (
        ("BOT_TOKEN", token, check_token),
        ("WEBHOOK_SECRET", secret, check_webhook_secret),
    ):
        if not value:
            msg = f"{key} is missing"
            raise BotFileError(msg)
        try:
            check(value)
        except ValueError as exc:
            msg = f"{key} {exc}"
            raise BotFileError(msg) from None
    assert token is not None and secret is not None  # checked above
    return BotEntry(name=name, token=SecretStr(token), secret=SecretStr(secret))
