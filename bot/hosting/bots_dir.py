"""BOTS_DIR: the bots of the host, one `<name>.env` file each, read as a snapshot.

The shape a Kubernetes Secret volume gives (one key per bot, a symlink through `..data` into a
folder beside them): names starting with `.` are skipped, and a symlink is followed only while
it stays inside the directory. Whoever may write one file there is not trusted with more: only
regular files are opened (never a FIFO, socket or device, which could block the read or never
end), without blocking, and only up to MAX_BOT_FILE_BYTES. A file that cannot define a bot is
reported with the reason, never with its contents, and the other bots are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import stat
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiogram.utils.token import extract_bot_id
from dotenv import dotenv_values  # python-dotenv: what pydantic-settings reads .env with
from pydantic import SecretStr

from bot.config import check_token, check_webhook_secret

NAME_RE = re.compile(r"[a-z0-9-]{1,40}")
PER_BOT_KEYS = frozenset({"BOT_TOKEN", "WEBHOOK_SECRET"})
# Two values of at most 46 and 256 characters: 16 KiB leaves room for any comments.
MAX_BOT_FILE_BYTES = 16 * 1024
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


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


class _NotAFile(Exception):
    """A folder (or a link to one): not a bot file, and not a problem either."""


def read_bots_dir(directory: Path, owners: Mapping[int, str] | None = None) -> BotsSnapshot:
    """Every bot of `directory`; a missing or unreadable directory is one problem, not a crash.

    `owners` (bot id -> name) are the bots being served: a token another file claims too stays
    with its owner; with no owner among the claimants, none of them gets it (nothing tells the
    owner from a copy).
    """
    snapshot = BotsSnapshot()
    try:
        root = os.path.realpath(directory, strict=True)
        names = sorted(entry.name for entry in os.scandir(directory))
    except OSError as exc:
        snapshot.problems[str(directory)] = f"cannot list the directory: {type(exc).__name__}"
        return snapshot
    claims: defaultdict[int, list[str]] = defaultdict(list)
    entries: list[BotEntry] = []
    for name in names:
        if name.startswith("."):
            continue
        try:
            entry = read_bot_file(directory / name, root=root)
        except _NotAFile:
            continue
        except BotFileError as exc:
            snapshot.problems[name] = str(exc)
            continue
        claims[entry.bot_id].append(entry.name)
        entries.append(entry)
    owners = owners or {}
    for entry in entries:
        claimants = claims[entry.bot_id]
        if len(claimants) == 1 or owners.get(entry.bot_id) == entry.name:
            snapshot.bots[entry.name] = entry
            continue
        owner = owners.get(entry.bot_id)
        others = [owner] if owner in claimants else [n for n in claimants if n != entry.name]
        listed = ", ".join(f"{other}.env" for other in others)
        snapshot.problems[f"{entry.name}.env"] = f"the same bot (token) as {listed}"
    return snapshot


def read_bot_file(path: Path, *, root: str | None = None) -> BotEntry:
    """The bot of one file; `root`: the directory's real path, which the file must stay in."""
    name = path.name.removesuffix(".env")
    if not path.name.endswith(".env") or not NAME_RE.fullmatch(name):
        msg = "not <name>.env with a name of lowercase letters, digits and -, at most 40"
        raise BotFileError(msg)
    values = dotenv_values(stream=io.StringIO(_read_text(path, root)), interpolate=False)
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


def _read_text(path: Path, root: str | None) -> str:
    try:
        return _read_real_file(path, root)
    except FileNotFoundError:
        pass  # a Secret volume being updated: read once more, below
    # The kubelet swaps `..data` to a new folder, then removes the old one, which the path may
    # have resolved to just before: the second time it resolves to the new one.
    try:
        return _read_real_file(path, root)
    except FileNotFoundError as exc:
        msg = f"cannot read it: {type(exc).__name__}"
        raise BotFileError(msg) from None


def _read_real_file(path: Path, root: str | None) -> str:
    try:
        real = os.path.realpath(path, strict=True)
        if root is not None and os.path.commonpath((root, real)) != root:
            msg = "a symlink that leaves the directory"
            raise BotFileError(msg)
        _check_kind(os.lstat(real))  # refused before any open: a FIFO's open could block
        fd = os.open(real, _OPEN_FLAGS)  # a swap to a FIFO or link since: no wait, or refused
        try:
            _check_kind(os.fstat(fd))
            data = _read_at_most(fd, MAX_BOT_FILE_BYTES)
        finally:
            os.close(fd)
        return data.decode("utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read it: {type(exc).__name__}"
        raise BotFileError(msg) from None


def _check_kind(status: os.stat_result) -> None:
    if stat.S_ISDIR(status.st_mode):
        raise _NotAFile
    if not stat.S_ISREG(status.st_mode):
        msg = "not a regular file"
        raise BotFileError(msg)
    if status.st_size > MAX_BOT_FILE_BYTES:
        msg = f"over {MAX_BOT_FILE_BYTES} bytes"
        raise BotFileError(msg)


def _read_at_most(fd: int, limit: int) -> bytes:
    """The file, or BotFileError if it grew past `limit` since its size was checked."""
    chunks: list[bytes] = []
    size = 0
    while chunk := os.read(fd, limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            msg = f"over {limit} bytes"
            raise BotFileError(msg)
    return b"".join(chunks)


class DirScanner:
    """`read_bots_dir` off the event loop, one scan at a time, waited for a bounded time.

    The scan runs in a daemon thread of its own, not asyncio's executor: a read stuck in the
    kernel (a hung network mount) would keep an executor thread, and with it the process's
    exit after SIGTERM, waiting for good.
    """

    def __init__(self, directory: Path, read: Callable[..., BotsSnapshot] = read_bots_dir) -> None:
        self.directory = directory
        self._read = read
        self._running: asyncio.Future[BotsSnapshot] | None = None
        self._started_at = 0.0

    def running_for(self) -> float:
        """Seconds the scan in progress has taken so far; 0 when none is."""
        if self._running is None or self._running.done():
            return 0.0
        return time.monotonic() - self._started_at

    async def scan(self, owners: Mapping[int, str], *, wait: float) -> BotsSnapshot | None:
        """The directory's bots; None when the scan takes longer than `wait` s: it goes on,
        and the next call waits for that same scan instead of starting another."""
        if self._running is None:
            self._running = self._start(dict(owners))
        running = self._running
        done, _ = await asyncio.wait((running,), timeout=wait)
        if not done:
            return None
        self._running = None
        return running.result()

    def _start(self, owners: dict[int, str]) -> asyncio.Future[BotsSnapshot]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BotsSnapshot] = loop.create_future()

        def run() -> None:
            try:
                outcome: tuple[Callable[[Any], None], Any] = (
                    future.set_result,
                    self._read(self.directory, owners),
                )
            except Exception as exc:  # handed to the awaiting task
                outcome = (future.set_exception, exc)
            with contextlib.suppress(RuntimeError):  # the loop closed while this scan hung
                loop.call_soon_threadsafe(_settle, future, *outcome)

        self._started_at = time.monotonic()
        threading.Thread(target=run, name="bots-dir-scan", daemon=True).start()
        return future


def _settle(
    future: asyncio.Future[BotsSnapshot], setter: Callable[[Any], None], value: Any
) -> None:
    if not future.done():
        setter(value)
