"""Retry and flood-control request middlewares, driven with a fake clock (no real sleeping)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest
from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import (
    CopyMessage,
    ForwardMessage,
    GetChat,
    GetMe,
    Response,
    SendMessage,
)
from aiogram.types import Update
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from bot.delivery.deadline import DeadlineMiddleware, pause_allowance
from bot.delivery.outbound import (
    FloodControlMiddleware,
    RetryMiddleware,
    TokenBucket,
    pin_response_models,
)
from bot.errors import PacingBacklogError
from bot.retry_policy import is_retryable
from bot.tenant import working_for

BOT = Bot("42:TEST-token-for-unit-tests")
SEND = SendMessage(chat_id=1, text="hi")


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing(*errors: Exception) -> Any:
    """A make_request that raises the given errors in turn, then succeeds."""
    queue = list(errors)
    calls: list[object] = []
    bots: list[Bot] = []

    async def make_request(bot: Bot, method: object) -> str:
        calls.append(method)
        bots.append(bot)
        if queue:
            raise queue.pop(0)
        return "ok"

    make_request.calls = calls  # type: ignore[attr-defined]
    make_request.bots = bots  # type: ignore[attr-defined]
    return make_request


async def test_retry_after_is_honoured() -> None:
    time = FakeTime()
    request = failing(TelegramRetryAfter(SEND, "flood", retry_after=3))
    assert await RetryMiddleware(sleep=time.sleep)(request, BOT, SEND) == "ok"
    assert time.slept == [3.0]


async def test_server_and_network_errors_back_off_and_recover() -> None:
    time = FakeTime()
    request = failing(TelegramServerError(SEND, "502"), TelegramNetworkError(SEND, "reset"))
    assert await RetryMiddleware(sleep=time.sleep, base_delay=0.2)(request, BOT, SEND) == "ok"
    assert len(time.slept) == 2
    assert 0.1 <= time.slept[0] <= 0.3
    assert 0.2 <= time.slept[1] <= 0.6  # doubled, with jitter


async def test_backoff_doubles_per_attempt_times_a_jitter_of_half_to_one_and_a_half(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The jitter spreads retries of many updates over [0.5, 1.5) of the doubled delay."""
    draws = iter([0.0, 0.5, 1.0])  # random.random(): the jitter's low end, middle, high end
    monkeypatch.setattr("bot.delivery.outbound.random.random", lambda: next(draws))
    time = FakeTime()
    request = failing(*[TelegramServerError(SEND, "502")] * 3)
    assert await RetryMiddleware(sleep=time.sleep, base_delay=0.2)(request, BOT, SEND) == "ok"
    assert time.slept == pytest.approx([0.2 * 0.5, 0.4 * 1.0, 0.8 * 1.5])


@pytest.mark.parametrize(
    "error", [TelegramForbiddenError(SEND, "blocked"), TelegramBadRequest(SEND, "chat not found")]
)
async def test_refusals_are_never_retried(error: Exception) -> None:
    time = FakeTime()
    request = failing(error)
    with pytest.raises(type(error)):
        await RetryMiddleware(sleep=time.sleep)(request, BOT, SEND)
    assert len(request.calls) == 1
    assert time.slept == []


def calls_of(bot: str, metric: str, **labels: str) -> float:
    name = f"hello_bot_bot_api_{metric}_total"
    return REGISTRY.get_sample_value(name, {"bot": bot, "method": "SendMessage", **labels}) or 0


async def test_each_call_is_counted_and_logged_by_bot_method_and_outcome() -> None:
    """What docs/observability.md promises per Bot API call: requests by outcome, retries by
    reason, and the retry / gave-up / refused lines with the method and the reason."""
    time = FakeTime()
    bot = "outbound-metrics"
    counted = [("requests", "outcome", o) for o in ("ok", "retried", "error")]
    counted += [("retries", "reason", r) for r in ("server_error", "network")]
    before = {c: calls_of(bot, c[0], **{c[1]: c[2]}) for c in counted}
    token = working_for.set(bot)
    try:
        with capture_logs() as logs:
            ok = failing()
            await RetryMiddleware(sleep=time.sleep)(ok, BOT, SEND)
            await RetryMiddleware(sleep=time.sleep)(ok, BOT, SEND)
            retried = failing(TelegramServerError(SEND, "502"))
            await RetryMiddleware(sleep=time.sleep)(retried, BOT, SEND)
            gave_up = failing(*[TelegramNetworkError(SEND, "reset")] * 3)
            with pytest.raises(TelegramNetworkError):
                await RetryMiddleware(sleep=time.sleep, max_attempts=2)(gave_up, BOT, SEND)
            refused = failing(TelegramForbiddenError(SEND, "blocked"))
            with pytest.raises(TelegramForbiddenError):
                await RetryMiddleware(sleep=time.sleep)(refused, BOT, SEND)
    finally:
        working_for.reset(token)
    # The request reaches Telegram as it was made, for the bot that made it.
    for request in (ok, retried, gave_up, refused):
        assert all(call is SEND for call in request.calls)
        assert all(bot is BOT for bot in request.bots)
    grew = {c: calls_of(bot, c[0], **{c[1]: c[2]}) - before[c] for c in counted}
    assert list(grew.values()) == [2, 1, 2, 1, 1]  # ok, retried, error (gave up, refused)
    lines = [(e["event"], {k: v for k, v in e.items() if k not in ("event", "log_level")})
             for e in logs]  # fmt: skip
    assert lines == [
        ("bot_api_retry", {"method": "SendMessage", "reason": "server_error", "attempt": 1,
                           "delay": time.slept[0]}),
        ("bot_api_retry", {"method": "SendMessage", "reason": "network", "attempt": 1,
                           "delay": time.slept[1]}),
        ("bot_api_gave_up", {"method": "SendMessage", "reason": "network", "attempts": 2}),
        ("bot_api_refused", {"method": "SendMessage", "error": "TelegramForbiddenError"}),
    ]  # fmt: skip


async def test_attempts_are_bounded() -> None:
    time = FakeTime()
    request = failing(*[TelegramServerError(SEND, "500")] * 10)
    with pytest.raises(TelegramServerError):
        await RetryMiddleware(sleep=time.sleep, max_attempts=3)(request, BOT, SEND)
    assert len(request.calls) == 3


async def test_total_wait_is_bounded() -> None:
    time = FakeTime()
    request = failing(TelegramRetryAfter(SEND, "flood", retry_after=30))
    with pytest.raises(TelegramRetryAfter):
        await RetryMiddleware(sleep=time.sleep, max_total_wait=10)(request, BOT, SEND)
    assert time.slept == []  # giving up at once beats sleeping past the update's deadline


async def test_retries_stop_when_their_summed_waits_would_pass_max_total_wait() -> None:
    """Each wait fits on its own; the bound is on their sum, and waits summing to exactly
    max_total_wait are all taken."""
    time = FakeTime()
    request = failing(*[TelegramRetryAfter(SEND, "flood", retry_after=5)] * 3)
    retry = RetryMiddleware(sleep=time.sleep, max_attempts=10, max_total_wait=10)
    with pytest.raises(TelegramRetryAfter):
        await retry(request, BOT, SEND)
    assert time.slept == [5.0, 5.0]  # a third 5 s would make 15 s
    assert len(request.calls) == 3


async def test_a_server_errors_backoff_counts_against_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unlike a 429's retry_after, a backoff after a 5xx is not Telegram's pacing: an update
    retrying a failing Telegram is cut off at its deadline (0.3 s, here during a 0.4 s backoff)
    and redelivered, although the pause allowance would have room for the wait."""
    monkeypatch.setattr("bot.delivery.outbound.random.random", lambda: 0.5)  # jitter factor 1
    request = failing(TelegramServerError(SEND, "502"))

    async def handler(_event: Any, _data: dict[str, Any]) -> str:
        return await RetryMiddleware(base_delay=0.4)(request, BOT, SEND)

    with pytest.raises(TimeoutError):
        await DeadlineMiddleware(0.3)(handler, Update(update_id=1), {})
    assert len(request.calls) == 1


def test_token_bucket_allows_a_burst_then_paces() -> None:
    time = FakeTime()
    bucket = TokenBucket(rate=1.0, burst=3, clock=time.clock)
    assert [bucket.reserve() for _ in range(5)] == [0.0, 0.0, 0.0, 1.0, 2.0]
    time.now = 10.0
    assert bucket.reserve() == 0.0  # refilled (to the burst, not beyond)


def test_token_bucket_refills_rate_tokens_a_second_and_a_whole_token_goes_at_once() -> None:
    time = FakeTime()
    time.now = 100.0
    bucket = TokenBucket(rate=2.0, burst=2, clock=time.clock)
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]  # the burst, spent
    time.now = 100.75  # 1.5 tokens back at 2/s
    assert bucket.reserve() == 0.0  # a whole token was there; half a token is left
    assert bucket.reserve() == 0.25  # the missing half token takes 0.25 s at 2/s


def test_flood_control_paces_per_chat_and_globally() -> None:
    time = FakeTime()
    flood = FloodControlMiddleware(global_rate=30, chat_rate=1, chat_burst=3, clock=time.clock)
    chat_delays = [flood.delay_for(7) for _ in range(5)]
    assert chat_delays == [0.0, 0.0, 0.0, 1.0, 2.0]
    # 25 more messages to 25 other chats: the global 30/s budget is spent, so they queue.
    delays = [flood.delay_for(1000 + i) for i in range(30)]
    assert delays[:25] == [0.0] * 25
    assert delays[-1] == pytest.approx(5 / 30)


def test_groups_get_twenty_per_minute() -> None:
    time = FakeTime()
    flood = FloodControlMiddleware(global_rate=0, chat_rate=1, chat_burst=1, clock=time.clock)
    assert [flood.delay_for(-100) for _ in range(3)] == [0.0, 3.0, 6.0]


def test_chat_buckets_are_bounded() -> None:
    flood = FloodControlMiddleware(max_chats=100, clock=FakeTime().clock)
    for chat in range(1000):
        flood.delay_for(chat)
    assert len(flood.limiter(0)._chats) == 100


def test_the_least_recently_used_chats_bucket_is_forgotten_first() -> None:
    """Past max_chats, the chat that has waited longest since its last message loses its
    bucket (it has refilled the most); chats still being answered keep their pacing."""
    flood = FloodControlMiddleware(
        global_rate=0, chat_rate=1, chat_burst=1, max_chats=2, clock=FakeTime().clock
    )
    assert [flood.delay_for(chat) for chat in (1, 2, 1)] == [0.0, 0.0, 1.0]
    assert flood.delay_for(3) == 0.0  # a third chat: chat 2, used least recently, is forgotten
    assert flood.delay_for(3) == 1.0  # the newest chat kept its bucket
    assert flood.delay_for(1) == 2.0  # and so did the busy one
    assert flood.delay_for(2) == 0.0  # a fresh bucket


async def test_pacing_off_never_waits() -> None:
    """TELEGRAM_RATE_LIMIT=0 and TELEGRAM_CHAT_RATE_LIMIT=0 turn flood control off."""
    time = FakeTime()
    flood = FloodControlMiddleware(global_rate=0, chat_rate=0, clock=time.clock, sleep=time.sleep)
    request = failing()
    for _ in range(5):
        assert await flood(request, BOT, SEND) == "ok"
    assert time.slept == []


async def test_each_bot_of_a_shared_session_has_its_own_budget() -> None:
    """Telegram limits per token: one bot's burst must not delay another bot's replies."""
    time = FakeTime()
    flood = FloodControlMiddleware(chat_rate=1, chat_burst=1, clock=time.clock, sleep=time.sleep)
    other = Bot(token="654321:TEST-other-token-for-flood-control")
    request = failing()
    for _ in range(3):
        await flood(request, BOT, SEND)
    assert time.slept == [1.0, 1.0]
    await flood(request, other, SEND)  # same chat, another bot: its first message goes at once
    assert time.slept == [1.0, 1.0]


async def test_only_calls_that_post_into_a_chat_are_paced() -> None:
    time = FakeTime()
    flood = FloodControlMiddleware(chat_rate=1, chat_burst=1, clock=time.clock, sleep=time.sleep)
    request = failing()
    for method in (GetMe(), GetChat(chat_id=1)):  # no chat, or a read of one
        for _ in range(3):
            await flood(request, BOT, method)
    assert time.slept == []
    for _ in range(3):
        await flood(request, BOT, SEND)
    assert time.slept == [1.0, 1.0]  # sequential sends: one per second after the burst
    # Each call is passed on as it was made, for the bot that made it.
    assert all(bot is BOT for bot in request.bots)
    assert request.calls[-1] is SEND


@pytest.mark.parametrize(
    "post",
    [
        ForwardMessage(chat_id=1, from_chat_id=2, message_id=3),
        CopyMessage(chat_id=1, from_chat_id=2, message_id=3),
    ],
    ids=lambda method: type(method).__name__,
)
async def test_a_chat_forwarded_or_copied_to_is_paced_like_one_sent_to(post: Any) -> None:
    time = FakeTime()
    flood = FloodControlMiddleware(chat_rate=1, chat_burst=1, clock=time.clock, sleep=time.sleep)
    request = failing()
    for _ in range(3):
        await flood(request, BOT, post)
    assert time.slept == [1.0, 1.0]
    await flood(request, BOT, SEND)  # and shares that chat's budget with its sends
    assert time.slept == [1.0, 1.0, 1.0]


def test_response_models_stay_cached_across_garbage_collections() -> None:
    pin_response_models()
    pinned = weakref.ref(Response[SendMessage.__returning__])
    unpinned = weakref.ref(Response[GetChat.__returning__])  # the failure mode, for contrast
    gc.collect()
    assert pinned() is not None
    assert unpinned() is None


async def test_a_cancelled_wait_gives_its_slot_back() -> None:
    """A reply cut off while it waits (deadline, shutdown) never uses its slot: the chat's next
    reply takes it instead of queueing behind it."""
    time = FakeTime()

    async def cancelled(_seconds: float) -> None:
        raise asyncio.CancelledError

    flood = FloodControlMiddleware(chat_rate=1, chat_burst=1, clock=time.clock, sleep=cancelled)
    request = failing()
    await flood(request, BOT, SEND)  # the burst: no wait
    with pytest.raises(asyncio.CancelledError):
        await flood(request, BOT, SEND)  # would wait 1 s; cancelled meanwhile
    assert len(request.calls) == 1
    assert flood.delay_for(SEND.chat_id, bot_id=BOT.id) == 1.0  # not 2.0: the slot came back


async def _paced_reply(flood: FloodControlMiddleware, deadline: float, work: float = 0) -> str:
    """One reply through `flood` after `work` seconds, inside an update with `deadline`."""

    async def handler(_event: Any, _data: dict[str, Any]) -> str:
        await asyncio.sleep(work)
        return await flood(failing(), BOT, SEND)

    return await DeadlineMiddleware(deadline)(handler, Update(update_id=1), {})


async def test_a_paced_wait_does_not_count_against_the_deadline() -> None:
    """Two updates of one chat, each working 0.3 s then replying, at 1 reply per 0.4 s: the
    second reply goes at 0.7 s, past the 0.5 s deadline, and is sent all the same (its 0.4 s
    were pacing, not a stuck update; without the pause it is cut off at 0.5 s)."""
    flood = FloodControlMiddleware(global_rate=0, chat_rate=2.5, chat_burst=1)
    replies = await asyncio.gather(*(_paced_reply(flood, 0.5, work=0.3) for _ in range(2)))
    assert replies == ["ok"] * 2


async def test_a_wait_past_the_budget_is_refused_up_front() -> None:
    """Work and paced waits together get twice the deadline: a reply that would wait past that
    is refused at once (retryable) and its slot given back, rather than waiting to be cut off."""
    time = FakeTime()
    flood = FloodControlMiddleware(
        global_rate=0, chat_rate=1, chat_burst=1, clock=time.clock, sleep=time.sleep
    )
    for _ in range(4):
        flood.delay_for(SEND.chat_id, bot_id=BOT.id)  # 3 s of replies queued for this chat
    with pytest.raises(PacingBacklogError) as refused:
        await _paced_reply(flood, 1.5)  # budget 3 s < the 4 s this reply would wait
    assert refused.value.retry_after == pytest.approx(1.0, abs=0.1)
    assert is_retryable(refused.value)
    assert time.slept == []
    assert flood.delay_for(SEND.chat_id, bot_id=BOT.id) == 4.0  # the refused slot came back


async def test_paced_waits_and_refusals_are_counted_for_the_bot_that_waits() -> None:
    """docs/observability.md: hello_bot_bot_api_throttle_seconds and
    hello_bot_bot_api_pacing_refused_total, by bot."""
    bot = "outbound-pacing-metrics"

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(f"hello_bot_bot_api_{name}", {"bot": bot}) or 0

    counted = ("throttle_seconds_count", "throttle_seconds_sum", "pacing_refused_total")
    before = [sample(name) for name in counted]
    time = FakeTime()
    flood = FloodControlMiddleware(
        global_rate=0, chat_rate=1, chat_burst=1, clock=time.clock, sleep=time.sleep
    )
    token = working_for.set(bot)
    try:
        await flood(failing(), BOT, SEND)  # the burst: not a wait
        await flood(failing(), BOT, SEND)  # waits 1 s
        for _ in range(3):
            flood.delay_for(SEND.chat_id, bot_id=BOT.id)  # 4 s of replies queued
        with pytest.raises(PacingBacklogError):
            await _paced_reply(flood, 1.5)  # budget 3 s
    finally:
        working_for.reset(token)
    grew = [sample(name) - was for name, was in zip(counted, before, strict=True)]
    assert grew == [1, 1.0, 1]  # one wait, of 1 s; one refusal


def test_the_allowance_keeps_a_webhook_answer_under_telegrams_timeout() -> None:
    assert pause_allowance(25) == 25
    assert pause_allowance(2) == 2
    assert pause_allowance(40) == 10
    assert pause_allowance(50) == 0


async def test_telegrams_retry_after_does_not_count_against_the_deadline() -> None:
    """A 429's retry_after is Telegram's pacing too: the 0.4 s it asks for, inside an update
    with a 0.3 s deadline, does not cut the update off."""
    request = failing(TelegramRetryAfter(SEND, "flood", retry_after=0.4))  # type: ignore[arg-type]

    async def handler(_event: Any, _data: dict[str, Any]) -> str:
        return await RetryMiddleware()(request, BOT, SEND)

    assert await DeadlineMiddleware(0.3)(handler, Update(update_id=1), {}) == "ok"
    assert len(request.calls) == 2


async def test_work_is_still_cut_off_at_the_deadline() -> None:
    async def stuck(_event: Any, _data: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError):
        await DeadlineMiddleware(0.05)(stuck, Update(update_id=1), {})
