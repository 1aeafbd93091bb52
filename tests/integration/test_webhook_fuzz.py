"""Property: whatever body arrives at the webhook, the answer is one the contract names (200,
400, 401 or 413), never a 5xx, and nothing is logged at error level.

Bodies are Update-shaped JSON, valid and then broken: wrong types anywhere, keys missing, deep
nesting, odd unicode (lone surrogates, control and private-use characters, RTL marks), cut
short, random bytes, over 1 MiB. Derandomized with no example database, so CI runs the same
examples every time.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bot.lifecycle import ServerState
from bot.serving.webhook import create_app
from tests.conftest import TEST_SECRET
from tests.integration.test_webhook import MakeHarness, Webhook
from tests.support.updates import message_update, user

ACCEPTABLE = {200, 400, 401, 413}
MiB = 1024 * 1024
_update_ids = itertools.count(7_000_000)

# Every code point, lone surrogates included (JSON can carry them as \\ud800 escapes).
odd_text = st.text(st.characters(exclude_categories=()), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | odd_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(odd_text, children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def valid_updates(draw: st.DrawFn) -> dict[str, Any]:
    sender = user(
        draw(st.integers(1, 2**40)),
        draw(odd_text.filter(bool)),
        language_code=draw(st.sampled_from(["en", "ru", "xx", "", "zz-Hant"])),
    )
    return message_update(
        sender,
        draw(st.one_of(odd_text, st.sampled_from(["/start", "/help", "/language", "/start x"]))),
        update_id=next(_update_ids),
        kind=draw(st.sampled_from(["message", "edited_message"])),
        chat_type=draw(st.sampled_from(["private", "group", "supergroup", "channel"])),
    )


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def broken_updates(draw: st.DrawFn) -> Any:
    """A valid update with a few of its fields replaced by anything, or removed."""
    update = draw(valid_updates())
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(update)))
        if not path:
            return draw(json_values)
        parent = update
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
        if not _paths(update) or not isinstance(update, dict):
            break
    return update


@st.composite
def nested_updates(draw: st.DrawFn) -> Any:
    """Deep nesting: a long reply chain, or plain arrays and objects past the parser's limit."""
    # Deepest first: Hypothesis favours a list's first elements.
    depth = draw(st.sampled_from([100_000, 5_000, 300, 10]))
    shape = draw(st.sampled_from(["objects", "arrays", "replies"]))
    if shape == "arrays":
        return ("[" * depth + "]" * depth).encode()
    if shape == "objects":
        return ('{"a":' * depth + "1" + "}" * depth).encode()
    update = draw(valid_updates())
    reply = update.get("message") or update["edited_message"]
    for _ in range(min(depth, 1_000)):
        reply["reply_to_message"] = {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "group"}}
        reply = reply["reply_to_message"]
    return update


def _encode(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(body, secret right?): mostly Update-shaped JSON, as sent or cut short."""
    body = _encode(
        draw(
            st.one_of(
                valid_updates(),
                valid_updates(),
                broken_updates(),
                broken_updates(),
                nested_updates(),
                json_values,
                st.binary(max_size=200),
            )
        )
    )
    # Middle values: Hypothesis favours the bounds of a range, which would make these common.
    if draw(st.integers(0, 9)) == 5:
        body = body[: draw(st.integers(0, max(0, len(body) - 1)))]
    elif draw(st.integers(0, 29)) == 15:
        body = body + b" " * (MiB + 1 - len(body))  # valid JSON, too long to read
    return body, draw(st.integers(0, 14)) != 7


@pytest.fixture
async def fuzzed_webhook(make_harness: MakeHarness, tmp_path: Path) -> AsyncIterator[Webhook]:
    # SQLite and the memory cache: the property is about input handling, and they are fast.
    harness = await make_harness(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
        redis_url="",
        webhook_secret=TEST_SECRET,
    )
    state = ServerState()
    server = TestServer(create_app(harness.app, state=state), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield Webhook(harness, state, str(server.make_url("")).rstrip("/"), http)
    await server.close()


@settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    # One webhook serves every example, as one serves every update in production.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=bodies())
# Always tried, whatever the generator draws: a lone surrogate (valid JSON, not encodable as
# UTF-8) in the name the greeting echoes and in the text.
@example(case=(_encode(message_update(user(5, "\ud800"), "/start", update_id=1)), True))
@example(case=(_encode(message_update(user(6, "A"), "\udfff x", update_id=2)), True))
async def test_any_body_gets_a_contract_answer_and_no_error(
    case: tuple[bytes, bool], fuzzed_webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    body, right_secret = case
    caplog.clear()
    with caplog.at_level(logging.ERROR), capture_logs() as logs:
        response = await fuzzed_webhook.post(
            None, raw=body, secret=TEST_SECRET if right_secret else "wrong"
        )
    assert response.status in ACCEPTABLE, body[:300]
    if not right_secret:
        assert response.status == 401
    errors = [e for e in logs if e["log_level"] in {"error", "critical", "exception"}]
    assert errors == [], body[:300]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
