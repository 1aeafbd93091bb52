"""Handlers through the real Dispatcher, replies checked at the fake Bot API's wire."""

from __future__ import annotations

import random

import pytest

from bot.handlers.common import HELP_TEXT
from tests.conftest import TEST_TOKEN
from tests.integration.conftest import Harness
from tests.support.updates import STICKER, message_update, start_update, user


def new_user_id() -> int:
    return random.randint(10**9, 2 * 10**9)


async def test_start_greets_a_new_user_by_name_and_remembers_them(harness: Harness) -> None:
    uid = new_user_id()
    await harness.feed(start_update(user(uid, "Ann", username="ann", language_code="en")))

    [call] = harness.telegram.calls_to("sendMessage")
    assert call.token == TEST_TOKEN
    assert int(call.params["chat_id"]) == uid
    assert call.params["text"] == "Hello, Ann! Nice to meet you. Send me anything, or /help."
    assert call.params["entities"] == [{"type": "bold", "offset": 7, "length": 3}]
    assert "parse_mode" not in call.params
    [row] = await harness.user_rows(uid)
    assert (row.username, row.first_name, row.language_code) == ("ann", "Ann", "en")
    assert row.created_at.tzinfo is not None


async def test_second_start_welcomes_back(harness: Harness) -> None:
    uid = new_user_id()
    await harness.feed(start_update(user(uid, "Bob")))
    await harness.feed(start_update(user(uid, "Bob")))

    assert harness.telegram.sent_texts()[1] == "Welcome back, Bob!"
    assert await harness.count_users(uid) == 1


@pytest.mark.parametrize(
    "name",
    [
        '<b>Ann & "Co"</b>',
        "&lt;script&gt;",
        "Zoë 🎉👩‍👩‍👧",
        "مرحبا بالعالم",  # right-to-left
        "x" * 64,
    ],
)
async def test_names_arrive_intact(harness: Harness, name: str) -> None:
    uid = new_user_id()
    username = ("u" * 63 + "z")[:64]
    await harness.feed(start_update(user(uid, name, last_name=name, username=username)))

    [text] = harness.telegram.sent_texts()
    assert text == f"Hello, {name}! Nice to meet you. Send me anything, or /help."
    [entity] = harness.telegram.calls_to("sendMessage")[0].params["entities"]
    # Telegram measures entities in UTF-16 code units.
    assert entity == {"type": "bold", "offset": 7, "length": len(name.encode("utf-16-le")) // 2}
    [row] = await harness.user_rows(uid)
    assert (row.first_name, row.last_name, row.username) == (name, name, username)


async def test_user_without_optional_fields(harness: Harness) -> None:
    uid = new_user_id()
    await harness.feed(start_update({"id": uid, "is_bot": False, "first_name": "Solo"}))

    assert harness.telegram.sent_texts() == [
        "Hello, Solo! Nice to meet you. Send me anything, or /help."
    ]
    [row] = await harness.user_rows(uid)
    assert (row.username, row.last_name, row.language_code, row.is_premium) == (
        None,
        None,
        None,
        False,
    )


async def test_changed_profile_updates_the_row(harness: Harness) -> None:
    uid = new_user_id()
    await harness.feed(start_update(user(uid, "Old", username="old")))
    [before] = await harness.user_rows(uid)
    await harness.feed(start_update(user(uid, "New", username="new", is_premium=True)))

    [after] = await harness.user_rows(uid)
    assert (after.first_name, after.username, after.is_premium) == ("New", "new", True)
    assert after.created_at == before.created_at
    assert after.updated_at > before.updated_at
    assert harness.telegram.sent_texts()[1] == "Welcome back, New!"


@pytest.mark.parametrize(
    "update",
    [
        pytest.param(lambda u: message_update(u, "what can you do?"), id="text"),
        pytest.param(lambda u: message_update(u, "/unknown"), id="unknown-command"),
        pytest.param(
            lambda u: message_update(
                u,
                None,
                sticker=STICKER,
            ),
            id="sticker",
        ),
        pytest.param(
            lambda u: message_update(
                u, None, photo=[{"file_id": "p", "file_unique_id": "p", "width": 1, "height": 1}]
            ),
            id="photo",
        ),
        pytest.param(lambda u: message_update(u, "fixed typo", kind="edited_message"), id="edit"),
        pytest.param(lambda u: message_update(u, "/help"), id="help"),
    ],
)
async def test_other_messages_get_the_help_text(harness: Harness, update) -> None:  # type: ignore[no-untyped-def]
    uid = new_user_id()
    await harness.feed(update(user(uid)))

    [call] = harness.telegram.calls_to("sendMessage")
    assert call.params["text"] == HELP_TEXT
    assert int(call.params["chat_id"]) == uid
    assert await harness.count_users(uid) == 0  # only /start registers


async def test_channel_post_without_user_is_handled_quietly(harness: Harness) -> None:
    update = message_update(None, "news", kind="channel_post", chat_type="channel")
    await harness.feed(update)
    assert harness.telegram.calls == []


async def test_group_chatter_is_not_answered(harness: Harness) -> None:
    await harness.feed(message_update(user(new_user_id()), "hi all", chat_type="group"))
    assert harness.telegram.calls == []


async def test_start_in_a_group_still_greets(harness: Harness) -> None:
    uid = new_user_id()
    await harness.feed(start_update(user(uid, "Gia"), chat_type="supergroup"))
    [call] = harness.telegram.calls_to("sendMessage")
    assert int(call.params["chat_id"]) == -1001234567890
    assert call.params["text"].startswith("Hello, Gia!")
