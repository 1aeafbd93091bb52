"""structlog setup: JSON in production, console in development, secrets redacted everywhere."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from bot.observability.tracing import add_trace_context

# A bot token anywhere in a line (aiohttp and aiogram log request URLs that contain it).
TOKEN_PATTERN = re.compile(r"\d{5,20}:[A-Za-z0-9_-]{30,}")
REDACTED = "[REDACTED]"


class SecretRedactor:
    """Replaces known secrets and anything shaped like a bot token in every string value."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return TOKEN_PATTERN.sub(REDACTED, text)

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        return {key: self._scrub(value) for key, value in event_dict.items()}

    def rendered(self, _logger: WrappedLogger, _name: str, line: str) -> str:
        """Last processor: scrubs the rendered line."""
        return self.redact(line)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(v) for v in value)
        if isinstance(value, BaseException | bytes):
            return self.redact(str(value))
        return value


class _NamedWriteLogger(structlog.WriteLogger):
    """structlog's fast native logger, carrying the name `add_logger_name` reports."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


def configure_logging(
    *,
    level: str = "INFO",
    fmt: str = "console",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Render structlog and standard-library records (aiogram, aiohttp, alembic) alike.

    Our own lines take structlog's native path (no LogRecord, no handler: a quarter of a busy
    webhook's CPU went to the stdlib path); other libraries' records go through a stdlib handler
    with the same processors.
    """
    out = stream or sys.stderr
    redactor = SecretRedactor(secrets)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        # Tracebacks become a string field before redaction, so they are scrubbed too.
        tail: list[Processor] = [structlog.processors.format_exc_info, redactor]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream is None and out.isatty())
        tail = [redactor]
    # The rendered line is scrubbed again: the console renderer formats tracebacks itself.
    final: list[Processor] = [*tail, renderer, redactor.rendered]
    structlog.configure(
        processors=[*shared, *final],
        logger_factory=lambda *args: _NamedWriteLogger(out, str(args[0]) if args else ""),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiogram logs every update at INFO; our canonical update_handled line replaces it.
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Alembic narrates its plugin set-up and dialect at INFO; `migrated` says what matters.
    logging.getLogger("alembic").setLevel(logging.WARNING)
