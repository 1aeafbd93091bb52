"""The token never reaches a log line: not in messages, fields, URLs or tracebacks."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from bot.observability.logging import REDACTED, SecretRedactor, configure_logging

TOKEN = "987654321:AAFakeTokenValueThatIsLongEnough_0123456789"
URL = f"https://api.telegram.org/bot{TOKEN}/sendMessage"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    yield out
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_token_is_redacted_from_every_path(stream: io.StringIO, fmt: str) -> None:
    configure_logging(level="DEBUG", fmt=fmt, secrets=[TOKEN, "db-password-1"], stream=stream)
    structlog.get_logger("t").info("request", url=URL, nested={"list": [URL, ("x", TOKEN)]})
    logging.getLogger("aiohttp.client").warning("GET %s failed", URL)  # stdlib, %-style
    try:
        raise RuntimeError(f"cannot reach {URL} with db-password-1")
    except RuntimeError:
        structlog.get_logger("t").exception("call_failed")
        logging.getLogger("aiogram").exception("stdlib failure")
    output = stream.getvalue()
    assert TOKEN not in output
    assert TOKEN.split(":")[1] not in output
    assert "db-password-1" not in output
    assert output.count(REDACTED) >= 6


def test_json_lines_are_json_with_context(stream: io.StringIO) -> None:
    configure_logging(level="INFO", fmt="json", stream=stream)
    structlog.contextvars.bind_contextvars(update_id=5)
    try:
        structlog.get_logger("t").info("update_handled", outcome="handled")
        structlog.get_logger("t").debug("hidden")
    finally:
        structlog.contextvars.clear_contextvars()
    [line] = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "update_handled"
    assert record["update_id"] == 5
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")


def test_redactor_catches_unknown_tokens_by_shape() -> None:
    redactor = SecretRedactor()
    other = "1234567:BBanotherTokenShapedValue_abcdefghijkl"
    assert redactor.redact(f"x {other} y") == f"x {REDACTED} y"
    assert redactor.redact("update 12345678 at 10:30") == "update 12345678 at 10:30"


def test_a_secret_inside_a_longer_secret_leaves_nothing_of_either() -> None:
    """Longer secrets go first: replacing "passwd" first would leave "a[REDACTED]1", half of
    the longer one, in the line. Six characters is the shortest secret redacted."""
    redactor = SecretRedactor(["passwd", "apasswd1", "short"])
    assert redactor.redact("x apasswd1 y passwd z") == f"x {REDACTED} y {REDACTED} z"
    assert redactor.redact("a short word") == "a short word"  # too common a string to hide


def test_fields_of_every_shape_are_scrubbed_and_keep_the_rest() -> None:
    """Nested dicts, lists, tuples, exceptions and bytes: the token goes, the rest stays."""
    redactor = SecretRedactor()
    event = {
        "event": "bot_api_failed",
        "request": {"url": URL, "attempt": 2},
        "urls": [URL, "https://example.org/"],
        "pair": (URL, 3),
        "error": ValueError(f"refused {URL}"),
        "body": f"token={TOKEN}".encode(),
    }
    api = f"https://api.telegram.org/bot{REDACTED}/sendMessage"
    assert redactor(None, "info", event) == {
        "event": "bot_api_failed",
        "request": {"url": api, "attempt": 2},
        "urls": [api, "https://example.org/"],
        "pair": (api, 3),
        "error": f"refused {api}",
        "body": f"b'token={REDACTED}'",
    }
