"""`python -m bot serve` with its secrets only as files (SECRETS_DIR, as the chart mounts them):
the bot works, and neither the token nor the webhook secret is in its process environment."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import REDIS_URL, TEST_SECRET, TEST_TOKEN
from tests.support.bot_process import BotProcess
from tests.support.fake_telegram import FakeTelegram
from tests.support.updates import message_update, next_update_id, user


@pytest.fixture
async def bot(
    fake_telegram: FakeTelegram,
    pg_migrated_url: str,
    project_name: str,
    redis_cleanup: None,
    tmp_path: Path,
) -> AsyncIterator[BotProcess]:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "bot_token").write_text(TEST_TOKEN + "\n")
    (secrets / "webhook_secret").write_text(TEST_SECRET + "\n")
    (secrets / "redis_url").write_text(REDIS_URL)
    process = BotProcess(
        {
            "SECRETS_DIR": str(secrets),
            "TELEGRAM_API_URL": fake_telegram.url,
            "DATABASE_URL": pg_migrated_url,
            "PROJECT_NAME": project_name,
            "LOG_FORMAT": "json",
        },
        cwd=tmp_path,
    )
    assert not {"BOT_TOKEN", "WEBHOOK_SECRET", "REDIS_URL"} & process.env.keys()
    await process.start()
    yield process
    await process.stop()


async def test_the_bot_runs_on_secret_files_alone(
    bot: BotProcess, fake_telegram: FakeTelegram
) -> None:
    body = message_update(user(next_update_id(), "Kim"), "/start")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{bot.url}/webhook",
            json=body,
            headers={"X-Telegram-Bot-Api-Secret-Token": TEST_SECRET},
        ) as response,
    ):
        assert response.status == 200
    # The reply went out with the token from the file.
    assert {call.token for call in fake_telegram.calls_to("sendMessage")} == {TEST_TOKEN}
    assert bot.process is not None
    environment = Path(f"/proc/{bot.process.pid}/environ").read_bytes()
    assert TEST_TOKEN.encode() not in environment
    assert TEST_SECRET.encode() not in environment
    assert os.fsencode(f"SECRETS_DIR={bot.env['SECRETS_DIR']}") in environment.split(b"\0")
