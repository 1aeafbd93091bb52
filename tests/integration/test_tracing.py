"""Traces an SRE can read: one trace per update, with DB, Redis and Bot API children, token-free."""

from __future__ import annotations

import io
import json
import random
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestServer
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bot.cache import Cache, create_redis
from bot.lifecycle import ServerState
from bot.observability.logging import configure_logging
from bot.observability.tracing import RedisSpans
from bot.serving.webhook import create_app
from tests.conftest import REDIS_URL, TEST_SECRET, TEST_TOKEN
from tests.integration.conftest import Harness
from tests.support.failing import add_failing_handler
from tests.support.fake_telegram import Scripted
from tests.support.updates import message_update, start_update, user

MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(
    make_harness: MakeHarness,
    exporter: InMemorySpanExporter,
    pg_migrated_url: str,
    redis_cleanup: None,
) -> Harness:
    return await make_harness(
        span_exporter=exporter,
        database_url=pg_migrated_url,
        redis_url=REDIS_URL,
        webhook_secret=TEST_SECRET,
    )


def uid() -> int:
    return random.randint(10**9, 2 * 10**9)


def update_spans(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [s for s in spans if s.name == "telegram.update"]


def descendants(root: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    by_parent: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        if span.parent is not None:
            by_parent.setdefault(span.parent.span_id, []).append(span)
    found, todo = [], [root.context.span_id]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            found.append(child)
            todo.append(child.context.span_id)
    return found


def db_statements(spans: list[ReadableSpan]) -> list[str]:
    return [
        str(s.attributes.get("db.statement") or s.attributes.get("db.query.text") or s.name)
        for s in spans
        if (s.attributes and s.attributes.get("db.system") in ("postgresql", "sqlite"))
        or (s.attributes and s.attributes.get("db.system.name") in ("postgresql", "sqlite"))
    ]


def redis_commands(spans: list[ReadableSpan]) -> list[str]:
    return [
        s.name
        for s in spans
        if s.attributes
        and "redis" in (str(s.attributes.get("db.system")), str(s.attributes.get("db.system.name")))
    ]


def bot_api_calls(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [
        s
        for s in spans
        if s.kind == SpanKind.CLIENT and (s.attributes or {}).get("rpc.system") == "telegram"
    ]


async def test_new_user_start_is_one_trace_with_db_cache_and_bot_api_children(
    traced: Harness, exporter: InMemorySpanExporter
) -> None:
    await traced.feed(start_update(user(uid(), "Tracy")))
    spans = exporter.get_finished_spans()
    [root] = update_spans(spans)
    assert root.parent is None
    attributes = dict(root.attributes or {})
    assert attributes["telegram.update_type"] == "message"
    assert attributes["telegram.bot"] == traced.settings.project_name
    assert attributes["telegram.handler"] == "start_handler"
    assert attributes["telegram.outcome"] == "handled"
    assert isinstance(attributes["telegram.update_id"], int)
    assert root.status.status_code != StatusCode.ERROR
    resource = dict(root.resource.attributes)
    assert resource["service.name"] == traced.settings.project_name
    assert resource["deployment.environment"] == "development"
    assert resource["service.version"]

    children = descendants(root, spans)
    assert {s.context.trace_id for s in children} == {root.context.trace_id}
    statements = db_statements(children)
    assert any("INSERT INTO users" in s for s in statements), statements
    commands = redis_commands(children)
    assert "GET" in commands and "SET" in commands, commands
    [get] = [s for s in children if s.name == "GET"]
    assert get.kind == SpanKind.CLIENT
    # The key is not recorded: it carries the user's Telegram id.
    assert dict(get.attributes or {}) == {
        "db.system.name": "redis",
        "db.operation.name": "GET",
        "server.address": "127.0.0.1",
    }
    [send] = bot_api_calls(children)
    assert send.name == "sendMessage"
    assert dict(send.attributes or {}) == {
        "rpc.system": "telegram",
        "rpc.method": "sendMessage",
        "server.address": "127.0.0.1",
        "telegram.bot": traced.settings.project_name,
    }
    assert send.status.status_code != StatusCode.ERROR


async def test_each_bot_api_attempt_is_a_span_and_a_failed_one_says_why(
    traced: Harness, exporter: InMemorySpanExporter
) -> None:
    """RetryMiddleware sits above the span: a 5xx then a success are two sendMessage spans."""
    traced.telegram.script(
        "sendMessage",
        Scripted(status=502, body={"ok": False, "error_code": 502, "description": "Bad Gateway"}),
    )
    await traced.feed(start_update(user(uid(), "Retry")))
    spans = exporter.get_finished_spans()
    [root] = update_spans(spans)
    failed, sent = sorted(bot_api_calls(descendants(root, spans)), key=lambda s: s.start_time)
    assert failed.name == sent.name == "sendMessage"
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == "TelegramServerError"  # type: ignore[index]
    assert not failed.events  # no exception text: only its type
    assert sent.status.status_code != StatusCode.ERROR
    assert "error.type" not in (sent.attributes or {})
    assert root.attributes["telegram.outcome"] == "handled"  # type: ignore[index]


async def test_no_trace_context_is_sent_to_telegram(traced: Harness) -> None:
    """A trace is ours: Telegram gets no traceparent/tracestate (it would only leak ids)."""
    await traced.feed(start_update(user(uid(), "Private")))
    [call] = traced.telegram.calls_to("sendMessage")
    assert call.headers, "the fake records headers"
    sent = {name.lower() for name in call.headers}
    assert not sent & {"traceparent", "tracestate", "baggage"}, sent


@pytest.mark.usefixtures("redis_cleanup")
@pytest.mark.parametrize("sampled", [False, True])
async def test_an_unsampled_update_starts_no_db_cache_or_bot_api_span(
    make_harness: MakeHarness,
    exporter: InMemorySpanExporter,
    pg_migrated_url: str,
    monkeypatch: pytest.MonkeyPatch,
    sampled: bool,
) -> None:
    """Nine updates in ten at ratio 0.1: their calls build no span at all, recorded or not.

    Counted where every tracer starts its spans (the SDK's `Tracer.start_span`), since an
    unrecorded span never reaches an exporter; the sampled case shows the count sees them.
    """
    sampler = "parentbased_always_on" if sampled else "parentbased_always_off"
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    started: list[str] = []
    start_span = SdkTracer.start_span

    def counting(self: SdkTracer, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        started.append(name)
        return start_span(self, name, *args, **kwargs)

    monkeypatch.setattr(SdkTracer, "start_span", counting)
    traced = await make_harness(
        span_exporter=exporter, database_url=pg_migrated_url, redis_url=REDIS_URL
    )
    started.clear()  # the start-up's own schema check
    exporter.clear()
    await traced.feed(start_update(user(uid(), "Quiet")))
    assert traced.telegram.sent_texts(), "the update was answered"
    if sampled:
        assert len(started) > 3 and started[0] == "telegram.update", started
        assert len(exporter.get_finished_spans()) == len(started)
    else:
        assert started == ["telegram.update"]
        assert not exporter.get_finished_spans()


async def test_warm_start_is_a_cache_hit_without_db_writes(
    traced: Harness, exporter: InMemorySpanExporter
) -> None:
    who = uid()
    await traced.feed(start_update(user(who, "Warm")))
    exporter.clear()
    await traced.feed(start_update(user(who, "Warm")))
    spans = exporter.get_finished_spans()
    [root] = update_spans(spans)
    children = descendants(root, spans)
    # The ledger's claim and done mark are the only writes (tests/integration/test_users.py
    # counts them); the user's row is not touched.
    writes = [s for s in db_statements(children) if s.split()[0] in ("INSERT", "UPDATE", "DELETE")]
    assert writes and all("update_claims" in s for s in writes), writes
    assert "GET" in redis_commands(children)
    assert len(bot_api_calls(children)) == 1


async def test_failing_handler_marks_the_update_span_as_error(
    traced: Harness, exporter: InMemorySpanExporter
) -> None:
    command = add_failing_handler(traced.dp)
    await traced.feed(message_update(user(uid()), command))
    [root] = update_spans(exporter.get_finished_spans())
    assert root.status.status_code == StatusCode.ERROR
    assert [e.name for e in root.events] == ["exception"]
    assert root.events[0].attributes["exception.type"] == "ZeroDivisionError"  # type: ignore[index]
    assert root.attributes["telegram.outcome"] == "error"  # type: ignore[index]
    assert root.attributes["telegram.handler"] == "exploding_handler"  # type: ignore[index]


async def test_a_webhook_delivery_is_one_trace_rooted_at_the_update_and_probes_are_untraced(
    traced: Harness, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()  # the start-up's own schema check
    state = ServerState()
    app = create_app(traced.app, state=state)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/readyz", "/metrics"):
                async with http.get(server.make_url(path)) as response:
                    assert response.status == 200
            headers = {"X-Telegram-Bot-Api-Secret-Token": TEST_SECRET}
            body = start_update(user(uid(), "Hook"))
            async with http.post(server.make_url("/webhook"), json=body, headers=headers) as r:
                assert r.status == 200
    finally:
        await server.close()
    spans = exporter.get_finished_spans()
    ours = list(spans)
    [root] = [s for s in ours if s.parent is None]  # probes and scrapes made no trace
    assert root.name == "telegram.update"
    assert root.kind == SpanKind.CONSUMER
    assert {s.context.trace_id for s in ours} == {root.context.trace_id}
    assert bot_api_calls(descendants(root, spans))


async def test_no_span_or_attribute_contains_the_token(
    traced: Harness, exporter: InMemorySpanExporter
) -> None:
    who = uid()
    await traced.feed(start_update(user(who, "Sec")))
    await traced.feed(start_update(user(who, "Sec")))
    spans = exporter.get_finished_spans()
    assert len(spans) > 5
    dump = json.dumps([json.loads(s.to_json()) for s in spans])
    assert "sendMessage" in dump  # the dump is not vacuous
    assert TEST_TOKEN not in dump
    assert TEST_TOKEN.split(":")[1] not in dump
    assert str(who) not in dump  # no raw user ids either


# One stream for every test: configure_logging caches each logger on first use, bound to the
# stream of that time, so a fresh stream per test would miss the lines of loggers used before.
_LOG_STREAM = io.StringIO()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    _LOG_STREAM.seek(0)
    _LOG_STREAM.truncate()
    configure_logging(level="INFO", fmt="json", stream=_LOG_STREAM)
    yield _LOG_STREAM
    structlog.reset_defaults()


async def test_log_lines_carry_the_trace_and_span_ids(
    traced: Harness, exporter: InMemorySpanExporter, log_stream: io.StringIO
) -> None:
    await traced.feed(start_update(user(uid(), "Log")))
    [root] = update_spans(exporter.get_finished_spans())
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    [handled] = [line for line in lines if line["event"] == "update_handled"]
    assert handled["trace_id"] == format(root.context.trace_id, "032x")
    assert handled["span_id"] == format(root.context.span_id, "016x")


async def test_an_unsampled_update_logs_no_trace_ids(
    make_harness: MakeHarness,
    exporter: InMemorySpanExporter,
    pg_migrated_url: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its ids would lead to a trace that was never recorded."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_off")
    quiet = await make_harness(span_exporter=exporter, database_url=pg_migrated_url)
    log_stream: io.StringIO = request.getfixturevalue("log_stream")  # after the harness's own
    await quiet.feed(start_update(user(uid(), "Quiet")))
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    [handled] = [line for line in lines if line["event"] == "update_handled"]
    assert "trace_id" not in handled and "span_id" not in handled, handled


async def test_pool_checkouts_are_not_spans_statements_are(
    traced: Harness, exporter: InMemorySpanExporter
) -> None:
    """The instrumentor's "connect" span per checkout is taken off (tracing.py says why)."""
    await traced.feed(start_update(user(uid(), "Pool")))
    spans = exporter.get_finished_spans()
    [root] = update_spans(spans)
    children = descendants(root, spans)
    assert db_statements(children), "statement spans stay"
    assert not [s for s in spans if s.name == "connect"], [s.name for s in spans]


async def test_a_failed_redis_command_is_a_span_that_says_why() -> None:
    """Redis gone: the cache falls back to memory, and the trace shows the command failing."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    redis = create_redis(f"redis://127.0.0.1:{port}/0")
    cache = Cache(redis=redis, spans=RedisSpans(provider.get_tracer("test"), "127.0.0.1"))
    try:
        assert await cache.get("hb:nothing") is None
    finally:
        await redis.aclose()
    [span] = exporter.get_finished_spans()
    assert span.name == "GET"
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "ConnectionError"  # type: ignore[index]
    assert not span.events  # no exception text: only its type
