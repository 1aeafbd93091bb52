"""The bot speaks its user's language: every shipped language through the real Dispatcher and the
fake Bot API, /language round trips, and which language wins when."""

# Cyrillic that looks like Latin letters is the point here, not a typo.
# ruff: noqa: RUF001

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from bot.handlers.common import HELP_TEXT
from bot.i18n import load_i18n
from bot.services.users import CACHE_NAMESPACE
from tests.integration.conftest import Harness
from tests.support.failing import add_failing_handler
from tests.support.updates import STICKER, callback_update, message_update, start_update, user

# The greetings as a speaker of each language should read them; {name} is the user's name.
GREETINGS = {
    "en": ("Hello, {name}! Nice to meet you. Send me anything, or /help.", "Welcome back, {name}!"),
    "ru": (
        "Привет, {name}! Рад знакомству. Напиши мне что-нибудь или отправь /help.",
        "С возвращением, {name}!",
    ),
    "uk": (
        "Привіт, {name}! Радий знайомству. Напиши мені що завгодно або надішли /help.",
        "З поверненням, {name}!",
    ),
    "de": (
        "Hallo, {name}! Schön, dich kennenzulernen. Schreib mir einfach etwas oder schick /help.",
        "Schön, dass du wieder da bist, {name}!",
    ),
    "es": (
        "¡Hola, {name}! Encantado de conocerte. Escríbeme lo que quieras o envía /help.",
        "¡Hola de nuevo, {name}!",
    ),
}
HELP_FIRST_LINES = {
    "en": "I am hello-bot. I know these commands:",
    "ru": "Я hello-bot. Вот какие команды я знаю:",
    "uk": "Я hello-bot. Ось які команди я знаю:",
    "de": "Ich bin hello-bot. Diese Befehle kenne ich:",
    "es": "Soy hello-bot. Estos son los comandos que conozco:",
}
# Markup characters, an emoji outside the BMP and a right-to-left mark: all must arrive as typed.
TRICKY_NAME = '<b>Zoë</b> & "co" 🎉\u200f'


def new_user_id() -> int:
    return random.randint(10**9, 2 * 10**9)


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2  # Telegram measures entities in UTF-16 units


def help_text(language: str) -> str:
    return load_i18n().gettext(HELP_TEXT, locale=language)


@pytest.fixture
async def quick_harness(make_harness: Callable[..., Awaitable[Harness]], tmp_path: Path) -> Harness:
    """For what does not depend on the backends: SQLite and the memory cache."""
    return await make_harness(database_url=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}", redis_url="")


def test_every_shipped_language_is_tested_here() -> None:
    assert set(GREETINGS) == set(HELP_FIRST_LINES) == set(load_i18n().available_locales)


@pytest.mark.parametrize("language", sorted(GREETINGS))
async def test_every_language_greets_helps_and_falls_back(harness: Harness, language: str) -> None:
    sender = user(new_user_id(), TRICKY_NAME, language_code=language)
    await harness.feed(start_update(sender))
    await harness.feed(start_update(sender))
    await harness.feed(message_update(sender, "/help"))
    await harness.feed(message_update(sender, None, sticker=STICKER))

    calls = harness.telegram.calls_to("sendMessage")
    assert len(calls) == 4
    for call, template in zip(calls[:2], GREETINGS[language], strict=True):
        assert call.params["text"] == template.format(name=TRICKY_NAME)
        # The name is a bold entity where this language puts it, never parsed as markup.
        before = template.split("{name}", 1)[0]
        bold = {"type": "bold", "offset": utf16(before), "length": utf16(TRICKY_NAME)}
        assert call.params["entities"] == [bold]
        assert "parse_mode" not in call.params
    for call in calls[2:]:
        assert call.params["text"] == help_text(language)
        assert call.params["text"].splitlines()[0] == HELP_FIRST_LINES[language]
        assert "entities" not in call.params


@pytest.mark.parametrize(
    ("language_code", "expected"),
    [("de-at", "de"), ("pt-br", "en"), ("es_419", "es"), ("UK", "uk"), ("xx", "en"), (None, "en")],
)
async def test_telegrams_primary_subtag_picks_the_language_else_english(
    quick_harness: Harness, language_code: str | None, expected: str
) -> None:
    extra = {} if language_code is None else {"language_code": language_code}
    await quick_harness.feed(start_update(user(new_user_id(), "Kim", **extra)))
    assert quick_harness.telegram.sent_texts() == [GREETINGS[expected][0].format(name="Kim")]


def keyboard_of(call: Any) -> list[tuple[str, str]]:
    rows = call.params["reply_markup"]["inline_keyboard"]
    return [(b["text"], b["callback_data"]) for row in rows for b in row]


async def test_language_round_trip(harness: Harness) -> None:
    uid = new_user_id()
    sender = user(uid, "Ivan", language_code="en")
    await harness.feed(message_update(sender, "/language"))
    [offer] = harness.telegram.calls_to("sendMessage")
    assert offer.params["text"] == "Which language should I speak?"
    assert keyboard_of(offer) == [
        ("Deutsch", "language:de"),
        ("✓ English", "language:en"),
        ("Español", "language:es"),
        ("Русский", "language:ru"),
        ("Українська", "language:uk"),
    ]

    keyboard_message = {
        "message_id": 555,
        "date": 0,
        "chat": {"id": uid, "type": "private"},
        "text": offer.params["text"],
    }
    await harness.feed(callback_update(sender, "language:ru", message=keyboard_message))
    # The keyboard turns into the confirmation, in the language just chosen.
    [edit] = harness.telegram.calls_to("editMessageText")
    assert edit.params["text"] == "Готово: теперь я говорю с тобой по-русски."
    assert (int(edit.params["chat_id"]), int(edit.params["message_id"])) == (uid, 555)
    assert "reply_markup" not in edit.params
    [answer] = harness.telegram.calls_to("answerCallbackQuery")
    assert "text" not in answer.params
    [row] = await harness.user_rows(uid)
    assert (row.chosen_language, row.language_code) == ("ru", "en")

    # From now on Russian, though Telegram still says English.
    await harness.feed(message_update(sender, "/help"))
    await harness.feed(start_update(sender))  # the choice registered Ivan
    await harness.feed(message_update(sender, "/language"))
    texts = harness.telegram.sent_texts()[1:]
    assert texts[:3] == [
        help_text("ru"),
        "С возвращением, Ivan!",
        "На каком языке мне с тобой говорить?",
    ]
    assert ("✓ Русский", "language:ru") in keyboard_of(harness.telegram.calls_to("sendMessage")[-1])


async def test_the_stored_choice_wins_over_language_code_also_once_uncached(
    harness: Harness,
) -> None:
    uid = new_user_id()
    sender = user(uid, "Olha", language_code="de")
    await harness.feed(callback_update(sender, "language:uk"))
    key = harness.app.tenant.key(CACHE_NAMESPACE, uid)
    for update in (message_update(sender, "/help"), start_update(sender)):
        await harness.resources.cache.delete(key)  # as when the entry expired
        await harness.feed(update)
    assert harness.telegram.sent_texts() == [help_text("uk"), "З поверненням, Olha!"]


async def test_choosing_keeps_working_for_a_new_profile(harness: Harness) -> None:
    uid = new_user_id()
    await harness.feed(start_update(user(uid, "Ann", language_code="ru")))
    renamed = user(uid, "Anna", language_code="ru")
    await harness.feed(callback_update(renamed, "language:es"))
    await harness.feed(start_update(renamed))
    [row] = await harness.user_rows(uid)
    assert (row.first_name, row.chosen_language) == ("Anna", "es")
    assert harness.telegram.sent_texts()[-1] == "¡Hola de nuevo, Anna!"


async def test_a_language_we_do_not_ship_is_refused(quick_harness: Harness) -> None:
    uid = new_user_id()
    sender = user(uid, "Pat", language_code="de")
    await quick_harness.feed(callback_update(sender, "language:pt"))  # forged, or an old keyboard
    [answer] = quick_harness.telegram.calls_to("answerCallbackQuery")
    assert answer.params["text"] == "Diese Sprache spreche ich nicht mehr."
    assert answer.params["show_alert"] in (True, "true", "True")
    assert quick_harness.telegram.calls_to("editMessageText") == []
    assert await quick_harness.count_users(uid) == 0


async def test_the_apology_speaks_the_users_language(harness: Harness) -> None:
    uid = new_user_id()
    sender = user(uid, "Bo", language_code="ru")
    await harness.feed(callback_update(sender, "language:uk"))
    command = add_failing_handler(harness.dp)
    await harness.feed(message_update(sender, command))
    assert harness.telegram.sent_texts()[-1] == (
        "Вибач, у мене щось пішло не так. Спробуй ще раз трохи згодом."
    )


def inserts(statements: list[str]) -> list[str]:
    """The ledger's claims and done marks (its prune, in the background, runs now and then)."""
    return [s for s in statements if s.lstrip().upper().startswith("INSERT")]


@contextmanager
def count_io(h: Harness) -> Iterator[tuple[list[str], list[str], list[str]]]:
    """(user cache reads, the handlers' database statements, the exactly-once ledger's) while
    the block runs."""
    reads: list[str] = []
    statements: list[str] = []
    ledger: list[str] = []
    cache = h.resources.cache
    real_get = cache.get

    async def get(key: str) -> str | None:
        if CACHE_NAMESPACE in key:
            reads.append(key)
        return await real_get(key)

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        (ledger if "update_claims" in statement else statements).append(statement)

    cache.get = get  # type: ignore[method-assign]
    event.listen(h.resources.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield reads, statements, ledger
    finally:
        event.remove(h.resources.engine.sync_engine, "before_cursor_execute", record)
        cache.get = real_get  # type: ignore[method-assign]


async def test_a_returning_user_costs_one_cache_read_and_no_database(harness: Harness) -> None:
    """The hot path: knowing the language adds no round trip for a user the cache holds."""
    uid = new_user_id()
    sender = user(uid, "Hot", language_code="de")
    await harness.feed(start_update(sender))
    with count_io(harness) as (reads, statements, ledger):
        await harness.feed(start_update(sender))
        await harness.feed(message_update(sender, None, sticker=STICKER))
    assert len(reads) == 2  # one per update: the locale's read serves /start's registration too
    assert statements == []
    assert len(inserts(ledger)) == 4  # each update's claim and done mark
    assert harness.telegram.sent_texts()[1] == "Schön, dass du wieder da bist, Hot!"


async def test_a_new_users_start_costs_one_statement(quick_harness: Harness) -> None:
    """/start resolves the language from its own upsert: no lookup before it."""
    with count_io(quick_harness) as (reads, statements, ledger):
        await quick_harness.feed(start_update(user(new_user_id(), "Neu", language_code="de")))
    assert len(reads) == 1
    assert len(inserts(ledger)) == 2  # the update's claim and its done mark
    assert len(statements) == 1
    assert statements[0].lstrip().upper().startswith("INSERT")
