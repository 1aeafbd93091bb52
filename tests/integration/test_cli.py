"""The command line as users run it: real processes, real exit codes, real output."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bot.db.schema import SCHEMA_REVISION, schema_revision
from tests.conftest import TEST_TOKEN
from tests.support.bot_process import BotProcess
from tests.support.fake_telegram import FakeTelegram, Scripted
from tests.support.servers import free_port
from tests.support.updates import message_update, start_update, user

ROOT = Path(__file__).resolve().parents[2]


def bot_env(tmp_path: Path, **env: str) -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BOT_", "DATABASE_", "REDIS_", "WEBHOOK_"))
    }
    return {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}", **clean, **env}


def run_bot(
    tmp_path: Path, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**bot_env(tmp_path, **env), "PYTHONPATH": str(ROOT)},
        timeout=120,
        check=False,
    )


def test_console_chat_needs_no_token_and_no_network(tmp_path: Path) -> None:
    result = run_bot(
        tmp_path, "chat", "--first-name", "<i>Eve</i> & co", stdin="/start\nhello\n/start\n"
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("bot> ")]
    assert lines[0] == "bot> Hello, <i>Eve</i> & co! Nice to meet you. Send me anything, or /help."
    assert lines[1] == "bot> I am hello-bot. I know these commands:"
    assert lines[2] == "bot> Welcome back, <i>Eve</i> & co!"
    assert (tmp_path / "cli.db").exists()


def test_console_chat_plays_a_user_with_a_language_and_presses_buttons(tmp_path: Path) -> None:
    talk = "/start\n/language\nEspañol\n/help\n"
    result = run_bot(tmp_path, "chat", "--lang", "pt-br", "--first-name", "*Rui*", stdin=talk)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("bot> ")]
    # pt-br: no Portuguese catalog, so English; then Spanish, picked on the keyboard.
    assert lines[0] == "bot> Hello, *Rui*! Nice to meet you. Send me anything, or /help."
    assert lines[1:5] == [
        "bot> Which language should I speak?",
        "bot> [Deutsch] [✓ English]",
        "bot> [Español] [Русский]",
        "bot> [Українська]",
    ]
    assert lines[5] == "bot> Listo: a partir de ahora te hablo en español."
    assert lines[6] == "bot> Soy hello-bot. Estos son los comandos que conozco:"


def test_console_chat_speaks_telegrams_language(tmp_path: Path) -> None:
    result = run_bot(tmp_path, "chat", "--lang", "de", "--first-name", "Eva", stdin="/start\nhi\n")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("bot> ")]
    assert lines[0] == (
        "bot> Hallo, Eva! Schön, dich kennenzulernen. Schreib mir einfach etwas oder schick /help."
    )
    assert lines[1] == "bot> Ich bin hello-bot. Diese Befehle kenne ich:"


def test_console_chat_remembers_across_runs_with_the_default_database(tmp_path: Path) -> None:
    env = {"DATABASE_URL": ""}  # unset: falls back to ./hello-bot.db in the working directory
    run = lambda: run_bot(tmp_path, "chat", stdin="/start\n", **env)  # noqa: E731
    first, second = run(), run()
    assert "Nice to meet you" in first.stdout, first.stderr
    assert "Welcome back" in second.stdout, second.stderr
    assert (tmp_path / "hello-bot.db").exists()


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    result = run_bot(
        tmp_path,
        "check-config",
        BOT_TOKEN=TEST_TOKEN,
        WEBHOOK_SECRET="s3cr3t-value",
        DATABASE_URL="postgresql+asyncpg://app:hunter22@db:5432/app",
        REDIS_URL="redis://:redispass@cache:6379/0",
    )
    assert result.returncode == 0, result.stderr
    assert "BOT_TOKEN=***" in result.stdout
    assert "DATABASE_URL=postgresql+asyncpg://app:***@db:5432/app" in result.stdout
    assert "REDIS_URL=redis://:***@cache:6379/0" in result.stdout
    for secret in (TEST_TOKEN, "s3cr3t-value", "hunter22", "redispass"):
        assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["poll"], {}, "BOT_TOKEN"),
        (["serve"], {"BOT_TOKEN": TEST_TOKEN}, "WEBHOOK_SECRET"),
        (["check-config"], {"PORT": "eighty"}, "PORT"),
        (["check-config"], {"BOT_TOKEN": "not-a-token"}, "BOT_TOKEN"),
        (["check-config"], {"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        (["check-config"], {"REDIS_URL": "http://x"}, "REDIS_URL"),
        (["check-config"], {"ENVIRONMENT": "production"}, "DATABASE_URL"),
        (["check-config"], {"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        (["check-config"], {"WEBHOOK_PATH": "no-slash"}, "WEBHOOK_PATH"),
    ],
)
def test_bad_configuration_exits_2_with_one_line_naming_the_setting(
    tmp_path: Path, args: list[str], env: dict[str, str], names: str
) -> None:
    result = run_bot(tmp_path, *args, **env)
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert names in line
    assert "Traceback" not in result.stderr
    assert "not-a-token" not in line


def test_chat_refuses_an_unmigrated_postgres_with_a_clear_line(
    tmp_path: Path, make_pg_database: Callable[[], str]
) -> None:
    result = run_bot(tmp_path, "chat", stdin="/start\n", DATABASE_URL=make_pg_database())
    assert result.returncode == 1
    assert "run `python -m bot migrate`" in result.stderr
    assert "Traceback" not in result.stderr
    assert "bot>" not in result.stdout


def test_chat_without_a_reachable_postgres_says_so_in_one_line(tmp_path: Path) -> None:
    dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    result = run_bot(tmp_path, "chat", stdin="/start\n", DATABASE_URL=dead)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: database unreachable: ")


def poll_process(tmp_path: Path, telegram: FakeTelegram, database_url: str) -> BotProcess:
    env = {"BOT_TOKEN": TEST_TOKEN, "TELEGRAM_API_URL": telegram.url, "LOG_FORMAT": "json"}
    return BotProcess({**env, "DATABASE_URL": database_url}, cwd=tmp_path, command="poll")


async def readyz(process: BotProcess) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(process.url + "/readyz") as response:
        return response.status, await response.json()


async def test_polling_waits_for_the_migration_then_serves_without_a_restart(
    tmp_path: Path, fake_telegram: FakeTelegram, make_pg_database: Callable[[], str]
) -> None:
    url = make_pg_database()
    process = poll_process(tmp_path, fake_telegram, url)
    try:
        await process.start(wait_ready=False)
        status, body = await readyz(process)
        assert status == 503
        assert body["checks"]["schema"]["status"] == "behind"
        # Nothing is fetched (so nothing can be lost) before the schema is at head.
        assert fake_telegram.calls_to("getUpdates") == []
        assert fake_telegram.calls_to("deleteWebhook") == []

        assert run_bot(tmp_path, "migrate", DATABASE_URL=url).returncode == 0
        await fake_telegram.wait_for("getUpdates", timeout=30)
        assert (await readyz(process))[0] == 200
        who = 7_100_000_000 + os.getpid()
        await fake_telegram.updates.put(start_update(user(who, "Late")))
        await fake_telegram.wait_for("sendMessage", timeout=30)
    finally:
        code = await process.stop()
    assert code == 0, process.text
    assert fake_telegram.sent_texts()[0].startswith("Hello, Late!")
    assert '"event": "schema_not_ready"' in process.text
    assert '"event": "schema_ready"' in process.text


async def test_polling_stopped_while_waiting_for_the_migration_exits_cleanly(
    tmp_path: Path, fake_telegram: FakeTelegram, make_pg_database: Callable[[], str]
) -> None:
    process = poll_process(tmp_path, fake_telegram, make_pg_database())
    await process.start(wait_ready=False)
    assert (await readyz(process))[0] == 503
    assert await process.stop() == 0, process.text
    assert '"event": "shutdown_drained"' in process.text
    assert fake_telegram.calls_to("getUpdates") == []


def test_migrate_then_poll_ready(tmp_path: Path, make_pg_database: Callable[[], str]) -> None:
    url = make_pg_database()
    result = run_bot(tmp_path, "migrate", DATABASE_URL=url, LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    assert '"event": "migrated"' in result.stderr
    again = run_bot(tmp_path, "migrate", DATABASE_URL=url)
    assert again.returncode == 0, again.stderr


def test_migrate_on_a_database_ahead_of_the_code_exits_0_and_says_so(
    tmp_path: Path, make_pg_database: Callable[[], str]
) -> None:
    # The chart's pre-upgrade Job runs `migrate` with the image being deployed: redeploying the
    # previous release after a newer one migrated must not fail the release on that Job.
    url = make_pg_database()
    assert run_bot(tmp_path, "migrate", DATABASE_URL=url).returncode == 0
    _set_revision(url, "0099")
    result = run_bot(tmp_path, "migrate", DATABASE_URL=url, LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    [ahead] = [e for e in events if e["event"] == "schema_ahead"]
    assert (ahead["level"], ahead["current"], ahead["head"]) == ("warning", "0099", SCHEMA_REVISION)
    assert "nothing to migrate" in ahead["reason"]
    assert "Traceback" not in result.stderr
    assert asyncio.run(_revision(url)) == "0099"


def _set_revision(url: str, revision: str) -> None:
    async def stamp() -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE alembic_version SET version_num = :r"), {"r": revision}
            )
        await engine.dispose()

    asyncio.run(stamp())


async def _revision(url: str) -> str | None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        return await schema_revision(engine)
    finally:
        await engine.dispose()


async def test_polling_serves_updates_and_stops_cleanly_on_sigterm(
    tmp_path: Path, fake_telegram: FakeTelegram, pg_migrated_url: str
) -> None:
    port = free_port()
    env = bot_env(
        tmp_path,
        BOT_TOKEN=TEST_TOKEN,
        TELEGRAM_API_URL=fake_telegram.url,
        DATABASE_URL=pg_migrated_url,
        LOG_FORMAT="json",
        PYTHONPATH=str(ROOT),
        HOST="127.0.0.1",
        PORT=str(port),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "poll",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await fake_telegram.wait_for("getUpdates", timeout=60)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as health:
                assert health.status == 200
            async with http.get(f"http://127.0.0.1:{port}/readyz") as ready:
                assert ready.status == 200
            async with http.get(f"http://127.0.0.1:{port}/metrics") as metrics:
                assert "hello_bot_updates_total" in await metrics.text()
        uid = 7_000_000_000 + os.getpid()
        await fake_telegram.updates.put(start_update(user(uid, "Poll")))
        await fake_telegram.updates.put(message_update(user(uid, "Poll"), "hi"))
        await fake_telegram.wait_for("sendMessage", count=2, timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert b"shutdown_drained" in stderr
    [delete] = fake_telegram.calls_to("deleteWebhook")
    assert delete.params.get("drop_pending_updates") in (None, False, "false", "False")
    texts = sorted(fake_telegram.sent_texts())
    assert texts[0].startswith("Hello, Poll!")
    assert texts[1].startswith("I am hello-bot.")
    allowed = fake_telegram.calls_to("getUpdates")[0].params["allowed_updates"]
    assert set(allowed) == {"message", "edited_message", "callback_query"}
    assert TEST_TOKEN not in stderr.decode()


async def test_polling_processes_an_update_again_after_a_retryable_failure(
    tmp_path: Path, fake_telegram: FakeTelegram, pg_migrated_url: str
) -> None:
    """getUpdates has confirmed the update; the Bot API is down past the outbound retries (4
    attempts), so the update fails for a reason worth retrying: polling processes it again
    in-process, and the user gets the one reply."""
    down = {"ok": False, "error_code": 502, "description": "Bad Gateway"}
    fake_telegram.script("sendMessage", *[Scripted(502, down)] * 4)
    process = poll_process(tmp_path, fake_telegram, pg_migrated_url)
    try:
        await process.start()
        await fake_telegram.updates.put(message_update(user(7_100_000_000 + os.getpid()), "hi"))
        await fake_telegram.wait_for("sendMessage", count=5, timeout=60)
    finally:
        assert await process.stop() == 0
    statuses = [call.status for call in fake_telegram.calls_to("sendMessage")]
    assert statuses == [502, 502, 502, 502, 200]
    assert "update_redelivered_in_process" in process.text
    assert "update_given_up" not in process.text


def test_chat_plays_one_bot_of_the_host_with_that_bots_own_data(tmp_path: Path) -> None:
    bots = tmp_path / "bots"
    bots.mkdir()
    token = "5550001:AAshop_token_0123456789abcdefghijklmn"
    (bots / "shop.env").write_text(f"BOT_TOKEN={token}\nWEBHOOK_SECRET=shop-secret\n")
    env = {"DATABASE_URL": "", "BOTS_DIR": str(bots)}  # the embedded default, a file per bot
    chat = lambda *args: run_bot(tmp_path, "chat", *args, stdin="/start\n", **env)  # noqa: E731
    assert "Nice to meet you" in chat("--bot", "shop").stdout
    assert "Welcome back" in chat("--bot", "shop").stdout
    assert "Nice to meet you" in chat().stdout  # the project's own data is another database
    assert (tmp_path / "hello-bot.shop.db").exists()
    missing = chat("--bot", "nope")
    assert missing.returncode == 2
    [line] = missing.stderr.strip().splitlines()
    assert line == "error: --bot nope: no valid nope.env in BOTS_DIR"
