"""The `dev` image (skaffold dev): run with the chart's bot.hotReload command, it restarts the bot
when a file under /app/bot changes, and the restarted bot runs the changed code."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable

from tests.conftest import TEST_TOKEN
from tests.support.fake_telegram import FakeTelegram

from .conftest import ROOT, ContainerProcess

DEPLOYMENT = ROOT / "charts" / "hello-bot" / "templates" / "deployment.yaml"
MARKER = "hello-bot dev image reloaded"


def hot_reload_command(mode: str = "poll") -> list[str]:
    """The bot container's command under bot.hotReload, as the chart's template writes it."""
    [line] = [x for x in DEPLOYMENT.read_text().splitlines() if '"watchfiles"' in x]
    rendered = re.sub(r"\{\{ include \"hello-bot\.botCommand\" \. \}\}", mode, line)
    return json.loads(rendered.split("command:", 1)[1])


async def test_dev_image_restarts_the_bot_when_a_file_under_app_bot_changes(
    image: Callable[[str], str],
    make_container: Callable[..., ContainerProcess],
    fake_telegram: FakeTelegram,
    pg_migrated_url: str,
) -> None:
    command = hot_reload_command()
    assert command[0] == "watchfiles"
    assert command[-1] == "/app/bot"
    env = {
        "BOT_TOKEN": TEST_TOKEN,
        "TELEGRAM_API_URL": fake_telegram.url,
        "DATABASE_URL": pg_migrated_url,
        "LOG_FORMAT": "json",
    }
    # bot.hotReload makes the root file system writable (file sync replaces files in /app/bot).
    dev = make_container(image("dev"), command[1:], env=env, read_only=False, entrypoint=command[0])
    await dev.start(timeout=90)
    await fake_telegram.wait_for("deleteWebhook")  # poll's start
    assert MARKER not in dev.text

    # What `skaffold dev` file sync does: the app user replaces a file under /app/bot.
    line = f"print({MARKER!r}, flush=True)"
    dev.exec("sh", "-c", 'printf "%s\\n" "$1" >> /app/bot/__init__.py', "sh", line)
    await fake_telegram.wait_for("deleteWebhook", count=2, timeout=60)  # started again
    async with asyncio.timeout(30):
        while MARKER not in dev.text:  # bounded polling: the new code's output
            await asyncio.sleep(0.1)
    await dev.wait_for_status("/readyz", 200, timeout=60)
    await dev.stop()
