"""Prometheus metrics. Labels come only from closed sets: the bot's name (the project's, or one
of the host's bot files), update type, handler name, outcome, Bot API method, HTTP status.
Never a user, chat, token, path or address."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

UPDATES = Counter(
    "hello_bot_updates",
    "Telegram updates processed, by bot, type, handler and outcome",
    ["bot", "update_type", "handler", "outcome"],
)
UPDATE_DURATION = Histogram(
    "hello_bot_update_duration_seconds",
    "Time from receiving an update to finishing it (including Bot API calls)",
    ["bot", "update_type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25),
)
DUPLICATES = Counter(
    "hello_bot_updates_duplicate",
    "Updates skipped because their update_id was already processed",
)
UPDATE_REDELIVERIES = Counter(
    "hello_bot_update_redeliveries",
    "Polling: updates processed again in-process after a retryable failure (retried), or "
    "abandoned after POLLING_RETRY_SECONDS (given_up)",
    ["outcome"],
)
WEBHOOK_REQUESTS = Counter(
    "hello_bot_webhook_requests",
    "Webhook HTTP requests by answer status",
    ["status"],
)
BOT_API_REQUESTS = Counter(
    "hello_bot_bot_api_requests",
    "Bot API calls by bot, method and outcome (ok, retried, error)",
    ["bot", "method", "outcome"],
)
BOT_API_RETRIES = Counter(
    "hello_bot_bot_api_retries",
    "Bot API call retries by bot, method and reason (flood_wait, server_error, network)",
    ["bot", "method", "reason"],
)
BOT_API_THROTTLED = Histogram(
    "hello_bot_bot_api_throttle_seconds",
    "Time outbound calls waited for the flood-control limiter, by bot",
    ["bot"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10),
)
BOT_API_PACING_REFUSED = Counter(
    "hello_bot_bot_api_pacing_refused",
    "Replies refused a flood-control wait longer than their update may wait (update retried)",
    ["bot"],
)
CACHE_REQUESTS = Counter(
    "hello_bot_cache_requests",
    "Cache lookups by result (hit, miss) and backend (redis, memory)",
    ["result", "backend"],
)
DB_POOL_IN_USE = Gauge(
    "hello_bot_db_pool_connections_in_use",
    "Database connections checked out of the pool",
)
READY = Gauge("hello_bot_ready", "1 while /readyz answers 200")
REDIS_DEGRADED = Gauge(
    "hello_bot_redis_degraded",
    "1 while the configured Redis fails the readiness check (the memory fallback serves)",
)
