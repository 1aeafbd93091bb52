"""OpenTelemetry tracing: one trace per Telegram update, with its DB, Redis and Bot API spans.

Off unless an OTLP endpoint is configured; then nothing from the SDK is even imported, so a bot
without tracing pays nothing. The SDK reads the standard OTEL_* variables itself (sampler,
batch queue, headers, OTEL_RESOURCE_ATTRIBUTES with the k8s.* attributes the chart sets).
"""

from __future__ import annotations

from collections.abc import Awaitable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy.engine.base
import structlog
from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from opentelemetry.trace import SpanKind, StatusCode, Tracer
from structlog.typing import EventDict, WrappedLogger

from bot import __version__
from bot.config import Settings
from bot.tenant import working_for

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.client.session.middlewares.base import NextRequestMiddlewareType
    from aiogram.methods import Response, TelegramMethod
    from aiogram.methods.base import TelegramType
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.util.types import Attributes
    from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

T = TypeVar("T")


def tracing_enabled(settings: Settings) -> bool:
    return bool(settings.otel_exporter_otlp_endpoint or settings.otel_exporter_otlp_traces_endpoint)


async def start_tracing(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    engine: AsyncEngine,
    exporter: SpanExporter | None = None,
) -> TracerProvider | None:
    """Build the provider and instrument the engine; Bot API calls get their spans from
    `BotApiTracing` on the session (bot.app.create_session), Redis commands from `RedisSpans`
    in the cache (bot.app.open_resources).

    The update's own span is the root (bot.middlewares.observer): no aiohttp server span above
    it. That instrumentation cost more than everything else together at the chart's ratio of
    0.1 (CPU per update +37% against +4% without it, docs/observability.md), and a webhook
    request is one update anyway; webhook answers are counted in metrics.

    `exporter` replaces OTLP (tests pass an in-memory one). Everything is undone by `stack`.
    """
    if exporter is None and not tracing_enabled(settings):
        return None
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor  # noqa: PLC0415 - see docstring
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
        BatchSpanProcessor,
        SimpleSpanProcessor,
    )

    resource = Resource.create(
        {
            "service.name": settings.otel_service_name or settings.project_name,
            "service.version": __version__,
            # Both spellings: semantic conventions renamed the attribute; backends read either.
            "deployment.environment": settings.environment,
            "deployment.environment.name": settings.environment,
        }
    )
    provider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER(_ARG)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        # Batching with the SDK's bounded queue (OTEL_BSP_MAX_QUEUE_SIZE, 2048 by default):
        # a slow collector drops spans, it never slows or grows the bot.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    stack.callback(provider.shutdown)  # flushes what is queued

    # skip_dep_check: the instrumentation declares SQLAlchemy < 2.1 and otherwise declines 2.1
    # with an error line; it hooks engine events that 2.1 kept, and the tracing tests check that
    # its spans are there.
    _instrument(
        stack,
        SQLAlchemyInstrumentor(),
        tracer_provider=provider,
        engine=engine.sync_engine,
        skip_dep_check=True,
    )
    # The instrumentor also wraps every Engine.connect (a pool checkout) in a "connect" span:
    # two per update, each as costly as a statement's span, telling less than the pool metrics
    # (hello_bot_db_pool_*) do. Its own unwrap takes that one wrapper off; statements keep theirs.
    unwrap(sqlalchemy.engine.base.Engine, "connect")
    log.info("tracing_started", service=resource.attributes.get("service.name"))
    return provider


def _instrument(stack: AsyncExitStack, instrumentor: object, **kwargs: object) -> None:
    instrumentor.instrument(**kwargs)  # type: ignore[attr-defined]
    stack.callback(instrumentor.uninstrument)  # type: ignore[attr-defined]


def add_trace_context(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the current trace_id and span_id, so a log line leads to its trace.

    Only for a sampled span: an unsampled update has ids too, but no trace behind them, and
    formatting them on each of its lines was a third of what tracing cost it
    (benchmarks.tracing_cost)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid and context.trace_flags.sampled:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


class BotApiTracing(BaseRequestMiddleware):
    """One CLIENT span per Bot API request, named by its method (`sendMessage`).

    Made here rather than by the aiohttp client instrumentation: the span is built from the
    method, so no URL (which carries the token) is ever read into it; no trace context is sent to
    Telegram; and a sampled call costs a third of what that instrumentation's hooks did
    (docs/observability.md). Innermost on the session: each retry is a span of its own.
    """

    def __init__(self, tracer: Tracer, server: str) -> None:
        self._tracer = tracer
        self._server = server

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        # An unsampled update suppresses instrumentation (bot.middlewares.observer): no span.
        if not is_instrumentation_enabled():
            return await make_request(bot, method)
        api_method = method.__api_method__
        attributes = {
            "rpc.system": "telegram",
            "rpc.method": api_method,
            "server.address": self._server,
            "telegram.bot": working_for.get(),
        }
        return await _leaf_span(self._tracer, api_method, attributes, make_request(bot, method))


class RedisSpans:
    """One CLIENT span per Redis command the cache sends (`GET`, `SET`, `DEL`).

    Made here rather than by the Redis instrumentation, whose span made a traced update cost
    13% more on its own: it formats every command's arguments into a statement, sets seven
    attributes one call at a time and makes the span current, where a leaf needs none of that.
    The key is not recorded: it holds a user's Telegram id.
    """

    def __init__(self, tracer: Tracer, server: str) -> None:
        self._tracer = tracer
        self._server = server

    async def call(self, command: str, call: Awaitable[T]) -> T:
        if not is_instrumentation_enabled():  # an unsampled update (bot.middlewares.observer)
            return await call
        attributes = {
            "db.system.name": "redis",
            "db.operation.name": command,
            "server.address": self._server,
        }
        return await _leaf_span(self._tracer, command, attributes, call)


async def _leaf_span(tracer: Tracer, name: str, attributes: Attributes, call: Awaitable[T]) -> T:
    """`call` inside a CLIENT span that is never made current: nothing below it is traced, and
    attaching it to the context and detaching it again was a sixth of what the span cost
    (callgrind). A failure records its type only: an exception's text is not ours to vouch for."""
    span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
    try:
        return await call
    except Exception as exc:
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(StatusCode.ERROR, type(exc).__name__)
        raise
    finally:
        span.end()
