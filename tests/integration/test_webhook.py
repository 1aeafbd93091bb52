"""The webhook app over real HTTP: every status code the contract names, exactly-once delivery,
Bot API retries, and PostgreSQL/Redis going away."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from structlog.testing import capture_logs

from bot.db.ledger import UpdateLedger
from bot.db.migrations import upgrade_to_head
from bot.db.schema import SCHEMA_REVISION
from bot.lifecycle import ServerState
from bot.serving.probes import start_http
from bot.serving.webhook import create_app
from tests.conftest import TEST_SECRET, TEST_TOKEN
from tests.integration.conftest import Harness
from tests.support.fake_telegram import Scripted
from tests.support.servers import ThrowawayPostgres, ThrowawayRedis, free_port
from tests.support.updates import message_update, start_update, user

MakeHarness = Callable[..., Awaitable[Harness]]


@dataclass
class Webhook:
    harness: Harness
    state: ServerState
    base: str
    http: aiohttp.ClientSession

    async def post(
        self, body: Any, *, secret: str | None = TEST_SECRET, raw: bytes | None = None, **kw: Any
    ) -> aiohttp.ClientResponse:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        data = io.BytesIO(raw if raw is not None else json.dumps(body).encode())
        async with self.http.post(f"{self.base}/webhook", data=data, headers=headers, **kw) as r:
            await r.read()
            return r

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(f"{self.base}{path}") as response:
            text = await response.text()
            is_json = response.content_type == "application/json"
            return response.status, json.loads(text) if is_json else text


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Harness], Awaitable[Webhook]]]:
    servers: list[TestServer] = []
    async with aiohttp.ClientSession() as http:

        async def start(h: Harness) -> Webhook:
            state = ServerState()
            app = create_app(h.app, state=state)
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            servers.append(server)
            return Webhook(h, state, str(server.make_url("")).rstrip("/"), http)

        yield start
        for server in servers:
            await server.close()


@pytest.fixture
def make_webhook(
    serve: Callable[[Harness], Awaitable[Webhook]], make_harness: MakeHarness, database_url: str
) -> Callable[..., Awaitable[Webhook]]:
    """A served webhook app on the parametrized database, the memory cache, settings overrides."""

    async def make(**overrides: Any) -> Webhook:
        return await serve(
            await make_harness(
                database_url=database_url, redis_url="", webhook_secret=TEST_SECRET, **overrides
            )
        )

    return make


@pytest.fixture
async def webhook(make_webhook: Callable[..., Awaitable[Webhook]]) -> Webhook:
    return await make_webhook()


def uid() -> int:
    return random.randint(10**9, 2 * 10**9)


async def answer(response: aiohttp.ClientResponse) -> tuple[int, Any, str | None]:
    """Status, JSON body and Retry-After: the whole answer docs/reference.md promises."""
    return response.status, await response.json(), response.headers.get("Retry-After")


UNAVAILABLE = (503, {"error": "temporarily unavailable"}, "1")


async def test_processed_update_is_answered_200_after_the_reply(webhook: Webhook) -> None:
    response = await webhook.post(start_update(user(uid(), "Wen")))
    assert await answer(response) == (200, {"ok": True}, None)
    # The reply was sent before the answer: nothing is left in the background.
    assert webhook.harness.telegram.sent_texts()[0].startswith("Hello, Wen!")


@pytest.mark.parametrize(
    "secret",
    [None, "", "wrong", TEST_SECRET + "x", TEST_SECRET.upper(), "s\u00e9cret-\u2603"],
)
async def test_wrong_or_missing_secret_is_401_and_nothing_is_processed(
    webhook: Webhook, secret: str | None
) -> None:
    who = uid()
    response = await webhook.post(start_update(user(who)), secret=secret)
    assert await answer(response) == (401, {"error": "wrong or missing secret token"}, None)
    assert webhook.harness.telegram.calls == []
    assert await webhook.harness.count_users(who) == 0


async def test_a_secret_header_of_non_utf8_bytes_is_401_not_a_crash(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone can send any bytes: aiohttp decodes a header with surrogateescape, and the secret
    check must refuse those like any other wrong secret. aiohttp's client only sends str headers
    (as UTF-8), so the request is written by hand."""
    who = uid()
    body = json.dumps(start_update(user(who))).encode()
    host, port = webhook.base.removeprefix("http://").split(":")
    request = (
        b"POST /webhook HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n"
        b"X-Telegram-Bot-Api-Secret-Token: s\xe9cret-\xff\xfe\r\n\r\n%s"
    ) % (host.encode(), len(body), body)
    with capture_logs() as logs:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        reply = await reader.read()  # the whole answer: the server closes the connection
        writer.close()
        await writer.wait_closed()
    assert reply.split(b"\r\n", 1)[0] == b"HTTP/1.1 401 Unauthorized"
    assert [e for e in logs if e["log_level"] in {"error", "critical"}] == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert webhook.harness.telegram.calls == []
    assert await webhook.harness.count_users(who) == 0


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"{not json", id="malformed"),
        pytest.param(b'{"update_id": 1, "message": {', id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[1, 2, 3]", id="array"),
        pytest.param(b'{"message": {}}', id="no-update-id"),
        pytest.param(b'{"update_id": "x"}', id="bad-update-id"),
        pytest.param(b'{"update_id": 5, "message": "\xff\xfe"}', id="invalid-utf8"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
    ],
)
async def test_bodies_that_are_not_updates_are_400(webhook: Webhook, raw: bytes) -> None:
    response = await webhook.post(None, raw=raw)
    assert await answer(response) == (400, {"error": "body is not a Telegram Update"}, None)
    assert webhook.harness.telegram.calls == []


async def test_body_over_one_mebibyte_is_413(webhook: Webhook) -> None:
    update = message_update(user(uid()), "x" * (2 * 1024 * 1024))
    response = await webhook.post(update)
    assert await answer(response) == (413, {"error": "body over 1048576 bytes"}, None)
    assert webhook.harness.telegram.calls == []


async def test_body_just_under_the_limit_is_processed(webhook: Webhook) -> None:
    update = message_update(user(uid()), "y" * (1024 * 1024 - 400))
    assert (await webhook.post(update)).status == 200


async def test_unknown_update_type_is_acknowledged(webhook: Webhook) -> None:
    response = await webhook.post({"update_id": 77, "brand_new_kind": {"x": 1}})
    assert response.status == 200
    assert webhook.harness.telegram.calls == []


async def test_redelivered_update_id_is_answered_without_processing_again(webhook: Webhook) -> None:
    update = start_update(user(uid(), "Rex"))
    assert [(await webhook.post(update)).status for _ in range(3)] == [200, 200, 200]
    assert len(webhook.harness.telegram.calls_to("sendMessage")) == 1


async def test_concurrent_redeliveries_are_processed_once(webhook: Webhook) -> None:
    webhook.harness.telegram.script("sendMessage", Scripted(delay=0.3, body=None))
    update = message_update(user(uid()), "hi")
    statuses = await asyncio.gather(*(webhook.post(update) for _ in range(8)))
    assert [r.status for r in statuses] == [200] * 8
    assert len(webhook.harness.telegram.calls_to("sendMessage")) == 1


async def test_telegram_429_is_retried_after_retry_after(webhook: Webhook) -> None:
    flood = {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
             "parameters": {"retry_after": 1}}  # fmt: skip
    webhook.harness.telegram.script("sendMessage", Scripted(429, flood))
    with capture_logs() as logs:
        response = await webhook.post(message_update(user(uid()), "hi"))
    assert response.status == 200
    assert len(webhook.harness.telegram.calls_to("sendMessage")) == 2
    # Waited as told before the one retry, not hammering Telegram.
    retries = [entry for entry in logs if entry["event"] == "bot_api_retry"]
    assert [(r["reason"], r["delay"]) for r in retries] == [("flood_wait", 1.0)]


async def test_telegram_5xx_bursts_are_retried_with_backoff(webhook: Webhook) -> None:
    down = {"ok": False, "error_code": 502, "description": "Bad Gateway"}
    webhook.harness.telegram.script("sendMessage", Scripted(502, down), Scripted(502, down))
    response = await webhook.post(message_update(user(uid()), "hi"))
    assert response.status == 200
    assert len(webhook.harness.telegram.calls_to("sendMessage")) == 3


async def test_telegram_down_for_good_is_503_so_the_update_comes_back(webhook: Webhook) -> None:
    down = {"ok": False, "error_code": 500, "description": "Internal Server Error"}
    webhook.harness.telegram.script("sendMessage", *[Scripted(500, down)] * 4)
    update = message_update(user(uid()), "hi")
    assert await answer(await webhook.post(update)) == UNAVAILABLE
    # Redelivery: the claim was released, so it is processed (once) now that Telegram is back.
    assert (await webhook.post(update)).status == 200
    assert (await webhook.post(update)).status == 200
    assert len(webhook.harness.telegram.calls_to("sendMessage")) == 5


async def test_blocked_by_user_is_200_and_not_retried(webhook: Webhook) -> None:
    blocked = {
        "ok": False,
        "error_code": 403,
        "description": "Forbidden: bot was blocked by the user",
    }
    webhook.harness.telegram.script("sendMessage", Scripted(403, blocked))
    update = message_update(user(uid()), "hi")
    assert (await webhook.post(update)).status == 200
    assert (await webhook.post(update)).status == 200
    assert len(webhook.harness.telegram.calls_to("sendMessage")) == 1


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(exposition: str) -> Samples:
    """Every sample of a Prometheus exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= ls)


async def test_probes_and_metrics(webhook: Webhook) -> None:
    before = samples((await webhook.get("/metrics"))[1])
    await webhook.post(start_update(user(uid(), "Met")))
    assert await webhook.get("/healthz") == (200, {"status": "ok"})
    status, body = await webhook.get("/readyz")
    assert status == 200
    assert body["status"] == "ready"
    assert body["checks"]["database"] == {"status": "ok"}
    assert body["checks"]["schema"]["status"] == "ok"
    assert body["checks"]["redis"] == {"status": "disabled"}
    status, text = await webhook.get("/metrics")
    assert status == 200
    after = samples(text)
    # What this one update did shows in the samples (the names alone exist from import on).
    for name, labels, grew_by in (
        ("hello_bot_updates_total", {"handler": "start_handler", "outcome": "handled"}, 1),
        ("hello_bot_update_duration_seconds_count", {"update_type": "message"}, 1),
        (
            "hello_bot_bot_api_requests_total",
            {"bot": webhook.harness.app.tenant.name, "method": "SendMessage", "outcome": "ok"},
            1,
        ),
        ("hello_bot_webhook_requests_total", {"status": "200"}, 1),
    ):
        assert total(after, name, **labels) - total(before, name, **labels) == grew_by, name
    cache = "hello_bot_cache_requests_total"
    assert total(after, cache, backend="memory") > total(before, cache, backend="memory")
    assert ("hello_bot_db_pool_connections_in_use", frozenset()) in after
    assert total(after, "process_resident_memory_bytes") > 0
    assert TEST_TOKEN not in text
    assert TEST_TOKEN.split(":")[1] not in text


async def test_readiness_is_503_while_draining_and_new_updates_are_refused(
    webhook: Webhook,
) -> None:
    webhook.state.draining = True
    status, body = await webhook.get("/readyz")
    assert status == 503
    assert body["checks"]["shutdown"] == {"status": "draining"}
    late = await webhook.post(message_update(user(uid()), "late"))
    assert await answer(late) == (503, {"error": "shutting down"}, "1")
    assert webhook.harness.telegram.calls == []
    assert (await webhook.get("/healthz"))[0] == 200


async def test_below_the_migration_head_nothing_is_processed_until_migrated(
    serve: Callable[[Harness], Awaitable[Webhook]],
    make_harness: MakeHarness,
    make_pg_database: Callable[[], str],
) -> None:
    url = make_pg_database()
    hook = await serve(await make_harness(database_url=url, webhook_secret=TEST_SECRET))
    status, body = await hook.get("/readyz")
    assert status == 503
    assert body["checks"]["schema"] == {
        "status": "behind",
        "current": None,
        "head": SCHEMA_REVISION,
    }
    who = uid()
    update = start_update(user(who, "Early"))
    # Answered 503 without processing, so Telegram redelivers it after the migration.
    early = await hook.post(update)
    assert await answer(early) == (503, {"error": "database schema not migrated"}, "1")
    assert hook.harness.telegram.calls == []
    engine = create_async_engine(url)
    await upgrade_to_head(engine)
    await engine.dispose()
    # Ready again without a restart, and the redelivery is processed once.
    assert (await hook.get("/readyz"))[0] == 200
    assert (await hook.post(update)).status == 200
    assert (await hook.post(update)).status == 200
    assert hook.harness.telegram.sent_texts() == [
        "Hello, Early! Nice to meet you. Send me anything, or /help."
    ]
    assert await hook.harness.count_users(who) == 1


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_ahead_of_the_migration_head_is_served_and_readiness_says_ahead(
    serve: Callable[[Harness], Awaitable[Webhook]],
    make_harness: MakeHarness,
    make_pg_database: Callable[[], str],
    tmp_path: Path,
    backend: str,
) -> None:
    # After `helm rollback` the previous release's code meets the schema a newer release
    # migrated: a revision it does not know. The embedded SQLite path upgrades itself on start,
    # so it is covered too (Alembic alone fails there with "Can't locate revision").
    url = (
        make_pg_database() if backend == "postgres" else f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    )
    engine = create_async_engine(url)
    await upgrade_to_head(engine)
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    await engine.dispose()
    with capture_logs() as logs:
        hook = await serve(await make_harness(database_url=url, webhook_secret=TEST_SECRET))
        status, body = await hook.get("/readyz")
        assert status == 200, body
        assert (await hook.get("/readyz"))[0] == 200
    assert body["status"] == "ready"
    assert body["checks"]["schema"] == {
        "status": "ahead",
        "current": "0099",
        "head": SCHEMA_REVISION,
    }
    # One warning with both revisions, however often the kubelet probes.
    ahead = [e for e in logs if e["event"] == "schema_ahead"]
    assert [(e["log_level"], e["current"], e["head"]) for e in ahead] == [
        ("warning", "0099", SCHEMA_REVISION)
    ]
    who = uid()
    assert (await hook.post(start_update(user(who, "Back")))).status == 200
    assert hook.harness.telegram.sent_texts() == [
        "Hello, Back! Nice to meet you. Send me anything, or /help."
    ]
    assert await hook.harness.count_users(who) == 1


async def test_postgres_down_is_503_then_processed_once_on_redelivery(
    serve: Callable[[Harness], Awaitable[Webhook]],
    make_harness: MakeHarness,
    throwaway_pg: ThrowawayPostgres,
) -> None:
    engine = create_async_engine(throwaway_pg.url())
    await upgrade_to_head(engine)
    await engine.dispose()
    hook = await serve(
        await make_harness(database_url=throwaway_pg.url(), webhook_secret=TEST_SECRET)
    )
    who = uid()
    update = start_update(user(who, "Pat"))
    throwaway_pg.stop()

    assert await answer(await hook.post(update)) == UNAVAILABLE
    status, body = await hook.get("/readyz")
    assert status == 503
    assert body["checks"]["database"]["status"] == "error"
    assert (await hook.get("/healthz"))[0] == 200  # liveness never depends on PostgreSQL

    throwaway_pg.start()
    assert (await hook.post(update)).status == 200
    assert (await hook.post(update)).status == 200
    assert hook.harness.telegram.sent_texts() == [
        "Hello, Pat! Nice to meet you. Send me anything, or /help."
    ]
    assert await hook.harness.count_users(who) == 1
    assert (await hook.get("/readyz"))[0] == 200


async def test_redis_down_is_degraded_but_ready_and_updates_flow(
    serve: Callable[[Harness], Awaitable[Webhook]],
    make_harness: MakeHarness,
    throwaway_redis: ThrowawayRedis,
    tmp_path: Path,
) -> None:
    hook = await serve(
        await make_harness(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'w.db'}",
            redis_url=throwaway_redis.url,
            webhook_secret=TEST_SECRET,
        )
    )
    update = message_update(user(uid()), "one")
    assert (await hook.post(update)).status == 200
    assert (await hook.get("/readyz"))[1]["checks"]["redis"] == {"status": "ok"}
    assert "hello_bot_redis_degraded 0.0" in (await hook.get("/metrics"))[1]
    throwaway_redis.stop()
    assert (await hook.post(message_update(user(uid()), "two"))).status == 200
    status, body = await hook.get("/readyz")
    assert (status, body["checks"]["redis"]) == (200, {"status": "degraded"})
    # The alert's signal comes from the probe itself, no update needed (HelloBotRedisDegraded).
    assert "hello_bot_redis_degraded 1.0" in (await hook.get("/metrics"))[1]
    assert len(hook.harness.telegram.calls_to("sendMessage")) == 2


async def test_redelivery_is_deduplicated_across_replicas_through_the_database(
    serve: Callable[[Harness], Awaitable[Webhook]],
    make_harness: MakeHarness,
    pg_migrated_url: str,
) -> None:
    # No Redis at all: each replica has only its own memory, and the ledger in PostgreSQL.
    replicas = [
        await serve(
            await make_harness(
                database_url=pg_migrated_url, redis_url="", webhook_secret=TEST_SECRET
            )
        )
        for _ in range(2)
    ]
    update = message_update(user(uid()), "hello replicas")
    statuses = await asyncio.gather(*(r.post(update) for r in replicas * 3))
    assert {s.status for s in statuses} == {200}
    assert len(replicas[0].harness.telegram.calls_to("sendMessage")) == 1


async def test_a_claim_freed_late_in_the_wait_still_gets_the_whole_processing_deadline(
    make_webhook: Callable[..., Awaitable[Webhook]],
) -> None:
    # Found by tests/e2e (SIGKILL scenario): the claim wait came out of the update deadline, so
    # an update claimed late was cut off after its reply went out, released, and sent again.
    webhook = await make_webhook(update_timeout_seconds=1.0)
    h = webhook.harness
    update = message_update(user(uid()), "after a crash")
    tenant = h.app.tenant
    # A dead worker's claim, expiring.
    await UpdateLedger(h.resources.engine.dialect.name).claim(
        tenant.data, tenant.bot_id, update["update_id"], ttl=0.9
    )
    h.telegram.script("sendMessage", Scripted(delay=0.6, body=None, delivered=True))

    first = await webhook.post(update)  # claimed at ~0.9 s, then 0.6 s of sending
    again = await webhook.post(update)  # Telegram's redelivery, had the first failed

    assert (first.status, again.status) == (200, 200)
    assert len(h.telegram.calls_to("sendMessage")) == 1


async def test_an_update_over_its_deadline_is_503_and_its_redelivery_is_processed(
    make_webhook: Callable[..., Awaitable[Webhook]],
) -> None:
    webhook = await make_webhook(update_timeout_seconds=0.5)
    h = webhook.harness
    h.telegram.script("sendMessage", Scripted(delay=3.0, body=None))  # hangs past the deadline
    update = message_update(user(uid()), "slow")

    with capture_logs() as logs:
        late = await webhook.post(update)
    assert await answer(late) == (503, {"error": "deadline exceeded"}, "1")  # redelivered
    # The warning docs/observability.md lists, naming the update.
    [line] = [e for e in logs if e["event"] == "update_deadline_exceeded"]
    assert (line["log_level"], line["update_id"]) == ("warning", update["update_id"])
    assert (await webhook.post(update)).status == 200  # the claim was released: processed
    assert len(h.telegram.calls_to("sendMessage")) == 2


async def test_a_bug_past_the_errors_router_is_500_counted_and_logged(
    webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last line of defence: an exception out of the dispatcher itself (aiogram's, not a
    handler's, which the errors router answers) is a 500 with the traceback in update_crashed
    (docs/operations.md), counted like every answer."""

    async def broken(*_: object, **__: object) -> None:
        raise ZeroDivisionError

    monkeypatch.setattr(webhook.harness.app.dp, "feed_update", broken)
    update = message_update(user(uid()), "hi")
    before = samples((await webhook.get("/metrics"))[1])
    with capture_logs() as logs:
        response = await webhook.post(update)
    assert await answer(response) == (500, {"error": "internal error"}, None)
    after = samples((await webhook.get("/metrics"))[1])
    requests = "hello_bot_webhook_requests_total"
    assert total(after, requests, status="500") - total(before, requests, status="500") == 1
    [line] = [e for e in logs if e["event"] == "update_crashed"]
    assert (line["log_level"], line["update_id"]) == ("error", update["update_id"])
    assert line["exc_info"] is True


async def test_a_client_hanging_up_mid_body_is_counted_as_a_400(
    make_harness: MakeHarness, database_url: str
) -> None:
    """The 400 "incomplete body" goes to nobody (the connection is gone), so its body cannot be
    checked from outside; its status shows in hello_bot_webhook_requests_total. Served as in
    production (start_http): TestServer cancels the handler when the client goes away."""
    h = await make_harness(database_url=database_url, redis_url="", webhook_secret=TEST_SECRET)
    port = free_port()  # start_http does not say which port it bound
    requests = "hello_bot_webhook_requests_total"
    async with AsyncExitStack() as stack, aiohttp.ClientSession() as http:

        async def counted_400() -> float:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                return total(samples(await response.text()), requests, status="400")

        app = create_app(h.app, state=ServerState())
        await start_http(app, host="127.0.0.1", port=port, stack=stack)
        before = await counted_400()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\nX-Telegram-Bot-Api-Secret-Token: %s\r\n\r\n"
            b'{"update_id": 1, "mess' % TEST_SECRET.encode()
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        # The handler answers once the hang-up reaches it: wait for the count, however long.
        async with asyncio.timeout(10):
            while (after := await counted_400()) == before:
                await asyncio.sleep(0.05)
    assert after - before == 1
    assert h.telegram.calls == []


HALF_SENT = (
    b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\nX-Telegram-Bot-Api-Secret-Token: %s\r\n\r\n"
    b'{"update_id": 1, "mess'
)


async def test_half_sent_bodies_are_dropped_after_the_read_timeout(
    make_harness: MakeHarness, database_url: str
) -> None:
    """200 clients send the headers and part of the body, then nothing: each gets its answer
    and its connection closed once REQUEST_READ_TIMEOUT_SECONDS has passed (with the secret:
    408; without: 401 at once, closed after the linger), and a real update still goes through.
    Served as in production (start_http)."""
    h = await make_harness(
        database_url=database_url,
        redis_url="",
        webhook_secret=TEST_SECRET,
        request_read_timeout_seconds=1,
    )
    port = free_port()
    async with AsyncExitStack() as stack, aiohttp.ClientSession() as http:
        runner = await start_http(
            create_app(h.app, state=ServerState()), host="127.0.0.1", port=port, stack=stack
        )
        baseline = len(runner.server.connections)

        async def half_send(secret: bytes) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(HALF_SENT % secret)
            await writer.drain()
            try:
                return await reader.read()  # until the server closes the connection
            finally:
                writer.close()

        started = asyncio.get_running_loop().time()
        async with asyncio.timeout(30):  # read timeout 1 s + linger 2 s, on a loaded machine
            replies = await asyncio.gather(
                *(half_send(TEST_SECRET.encode() if i % 2 else b"wrong") for i in range(200))
            )
        seconds = asyncio.get_running_loop().time() - started
        print(f"200 half-sent requests closed within {seconds:.1f} s")  # noqa: T201
        status_lines = [reply.split(b"\r\n", 1)[0] for reply in replies]
        assert status_lines.count(b"HTTP/1.1 408 Request Timeout") == 100
        assert status_lines.count(b"HTTP/1.1 401 Unauthorized") == 100
        assert b'{"error": "body not received in time"}' in replies[1]
        async with asyncio.timeout(10):
            while len(runner.server.connections) > baseline:
                await asyncio.sleep(0.05)
        headers = {"X-Telegram-Bot-Api-Secret-Token": TEST_SECRET}
        update = start_update(user(uid(), "Slow"))
        async with http.post(f"http://127.0.0.1:{port}/webhook", json=update, headers=headers) as r:
            assert r.status == 200
    assert h.telegram.sent_texts()[0].startswith("Hello, Slow!")


async def test_request_headers_that_never_end_are_dropped(
    make_harness: MakeHarness, database_url: str
) -> None:
    """Slowloris on the headers: aiohttp's keep-alive timer runs from the connection's start,
    so a request whose headers trickle in forever is closed when it expires (IDLE_TIMEOUT_SECONDS
    in production; 1 s here)."""
    h = await make_harness(database_url=database_url, redis_url="", webhook_secret=TEST_SECRET)
    port = free_port()
    async with AsyncExitStack() as stack:
        runner = await start_http(
            create_app(h.app, state=ServerState()),
            host="127.0.0.1",
            port=port,
            stack=stack,
            idle_timeout=1,
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")

        async def trickle() -> None:
            # One header's value, a byte at a time: within aiohttp's limits on the number and
            # size of headers (128, 8190 bytes), which would end it otherwise.
            with contextlib.suppress(ConnectionError):  # the server hung up: done
                for _ in range(600):
                    writer.write(b"a")
                    await writer.drain()
                    await asyncio.sleep(0.1)

        trickling = asyncio.ensure_future(trickle())
        try:
            async with asyncio.timeout(20):
                assert await reader.read() == b""  # closed, no answer
        finally:
            trickling.cancel()
            writer.close()
        async with asyncio.timeout(10):
            while runner.server.connections:
                await asyncio.sleep(0.05)
