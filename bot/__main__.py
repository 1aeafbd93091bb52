"""Command line: python -m bot [serve | poll | chat | host | migrate | check-config]."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import sys
from collections.abc import Coroutine, Sequence
from contextlib import AsyncExitStack
from typing import Any

import structlog

from bot.config import Settings, load_settings
from bot.errors import ConfigError, HelloBotError

log = structlog.get_logger("bot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="webhook server on HOST:PORT")
    commands.add_parser("poll", help="long polling (deletes any webhook first)")
    chat = commands.add_parser("chat", help="console chat: no token, no network")
    chat.add_argument("--user-id", type=int, default=1, help="your pretend Telegram id")
    chat.add_argument("--first-name", default=None, help="your first name (default: $USER)")
    chat.add_argument("--username", default=None)
    chat.add_argument("--bot", default=None, help="play one bot of BOTS_DIR, with its own data")
    chat.add_argument(
        "--lang",
        default=None,
        metavar="CODE",
        help="your Telegram app's language_code, e.g. de or pt-br (default: none)",
    )
    commands.add_parser("host", help="every bot of BOTS_DIR in one webhook server")
    commands.add_parser(
        "migrate", help="upgrade the database schema to head (every bot's, with BOTS_DIR)"
    )
    commands.add_parser("check-config", help="validate settings and print them, secrets masked")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        command = args.command or ("serve" if settings.webhook_url else "poll")
        if command == "check-config":
            return _check_config(settings)
        _configure_logging(settings, command)
        _run(_command(command, settings, args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except HelloBotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _command(
    command: str, settings: Settings, args: argparse.Namespace
) -> Coroutine[Any, Any, None]:
    if command in {"serve", "poll", "chat", "host"}:
        # Start-up creates ~1M objects that live as long as the process (aiogram's models above
        # all); collecting while they were built cost ~0.5 s of start-up and freed nothing.
        # bot.lifecycle.settle_heap() turns the collector back on once the bot is up.
        gc.disable()
    if command == "serve":
        from bot.serving.webhook import run_server  # noqa: PLC0415 - only serve needs aiohttp.web

        return run_server(settings)
    if command == "poll":
        from bot.serving.polling import run_polling  # noqa: PLC0415

        return run_polling(settings)
    if command == "chat":
        return _chat(settings, args)
    if command == "host":
        from bot.hosting.host import run_host  # noqa: PLC0415

        return run_host(settings)
    return _migrate(settings)


def _check_config(settings: Settings) -> int:
    for name, value in settings.masked().items():
        print(f"{name}={value}")
    return 0


def _configure_logging(settings: Settings, command: str) -> None:
    from bot.observability.logging import configure_logging  # noqa: PLC0415

    secrets = [
        s.get_secret_value() for s in (settings.bot_token, settings.webhook_secret) if s is not None
    ]
    for url in (settings.database_url, settings.redis_url):
        if password := _url_password(url.get_secret_value()):
            secrets.append(password)
    level = settings.log_level
    if command == "chat" and "log_level" not in settings.model_fields_set:
        level = "WARNING"  # the transcript is the output; info lines would drown it
    configure_logging(level=level, fmt=settings.effective_log_format, secrets=secrets)


def _url_password(url: str) -> str | None:
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    if not url or url.startswith("unix://"):
        return None
    return make_url(url).password  # type: ignore[return-value]


async def _chat(settings: Settings, args: argparse.Namespace) -> None:
    from aiogram.types import User  # noqa: PLC0415

    from bot.serving.console import run_console  # noqa: PLC0415

    first_name = args.first_name or getpass.getuser().capitalize() or "Developer"
    user = User(
        id=args.user_id,
        is_bot=False,
        first_name=first_name,
        username=args.username,
        language_code=args.lang,
    )
    if args.bot is not None:
        from bot.hosting.bots_dir import read_bots_dir  # noqa: PLC0415

        if args.bot not in read_bots_dir(settings.require_bots_dir()).bots:
            msg = f"--bot {args.bot}: no valid {args.bot}.env in BOTS_DIR"
            raise ConfigError(msg)
    await run_console(settings, user=user, bot_name=args.bot)


async def _migrate(settings: Settings) -> None:
    if settings.bots_dir is not None:
        from bot.hosting.host import migrate_bots  # noqa: PLC0415

        await migrate_bots(settings)
        return
    from bot.db.engine import create_engine  # noqa: PLC0415
    from bot.db.migrations import log_migrated, upgrade_to_head  # noqa: PLC0415

    async with AsyncExitStack() as stack:
        engine = create_engine(settings)
        stack.push_async_callback(engine.dispose)
        before, after = await upgrade_to_head(engine)
        # Ahead of the code (a rollback): exit 0, or the chart's pre-upgrade Job fails the release.
        log_migrated(before, after)


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # Windows: uvloop does not exist there
        asyncio.run(coroutine)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coroutine)


if __name__ == "__main__":
    sys.exit(main())
