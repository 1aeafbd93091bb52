"""What the webhook timer reports: Telegram's view of delivery, and the Deployment's readiness."""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hello_operator import bot_manifests, conditions, host_manifests, references
from hello_operator.kube import object_path
from hello_operator.reconcile import Clients, host_ready_condition, read_token, ready_condition
from hello_operator.telegram import TelegramError, WebhookInfo

# Telegram keeps the last delivery error after delivery recovers; older errors are history.
ERROR_WINDOW_SECONDS = 900
# Ready reasons that mean "deployed, now it is only a matter of pods"; others come from reconcile.
DEPLOYED_REASONS = frozenset({"DeploymentAvailable", "DeploymentNotReady"})
# The same for a Shared bot served by status.host.
HOSTED_REASONS = frozenset({"HostAvailable", "HostNotReady", "HostMissing"})


def expected_url(spec: Mapping[str, Any], token: str) -> str:
    if bot_manifests.runtime(spec) == "Shared":
        return host_manifests.webhook_url(spec, token)
    return f"https://{bot_manifests.webhook_host(spec)}{bot_manifests.webhook_path(spec)}"


@dataclass
class HealthReport:
    webhook: dict[str, Any] | None = None
    conditions: list[conditions.Condition] = field(default_factory=list)
    phase: str | None = None


def webhook_condition(
    spec: Mapping[str, Any], info: WebhookInfo, now: float, token: str = ""
) -> conditions.Condition:
    host = bot_manifests.webhook_host(spec)
    pending = f"{info.pending_update_count} updates pending"
    kind = conditions.WEBHOOK_HEALTHY
    if not host:
        if info.url:
            msg = f"a webhook ({info.url}) is set, so polling receives nothing"
            return conditions.Condition(kind, False, "WebhookSetWhilePolling", msg)
        return conditions.Condition(kind, True, "PollingMode", pending)
    expected = expected_url(spec, token)
    if info.url != expected:
        msg = f"Telegram delivers to {info.url or 'no webhook'}, expected {expected}"
        return conditions.Condition(kind, False, "WebhookNotSet", msg)
    if info.last_error_message and now - info.last_error_date < ERROR_WINDOW_SECONDS:
        msg = f"{info.last_error_message} ({pending})"
        return conditions.Condition(kind, False, "DeliveryFailing", msg)
    return conditions.Condition(kind, True, "WebhookOK", pending)


def webhook_status(info: WebhookInfo) -> dict[str, Any]:
    error_date = (
        datetime.datetime.fromtimestamp(info.last_error_date, tz=datetime.UTC).isoformat()
        if info.last_error_date
        else None
    )
    return {
        "url": info.url,
        "pendingUpdateCount": info.pending_update_count,
        "lastErrorMessage": info.last_error_message or None,
        "lastErrorDate": error_date,
        "checkedAt": conditions.now_iso(),
    }


async def check(
    clients: Clients, namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any]
) -> HealthReport:
    report = HealthReport()
    try:
        token = await read_token(clients.kube, namespace, spec)
    except references.InvalidReference as exc:
        report.conditions.append(
            conditions.Condition(conditions.WEBHOOK_HEALTHY, False, references.REASON, str(exc))
        )
    else:
        report.conditions.append(await _webhook_condition(clients, report, spec, token))
    try:
        ready = await _readiness(clients, namespace, name, status)
    except references.InvalidReference as exc:
        report.conditions.append(
            conditions.Condition(conditions.READY, False, references.REASON, str(exc))
        )
        return report
    if ready is not None:
        report.conditions.append(ready)
        if status.get("phase") in {"Running", "Deploying"}:
            report.phase = "Running" if ready.status else "Deploying"
    return report


async def _webhook_condition(
    clients: Clients, report: HealthReport, spec: Mapping[str, Any], token: str | None
) -> conditions.Condition:
    """Telegram's view of the webhook (and the raw figures into `report.webhook`)."""
    if token is None:
        msg = "the token Secret or key is missing"
        return conditions.Condition(conditions.WEBHOOK_HEALTHY, None, "TokenSecretNotFound", msg)
    try:
        info = await clients.telegram.get_webhook_info(token)
    except TelegramError as exc:
        return conditions.Condition(conditions.WEBHOOK_HEALTHY, None, "BotApiUnreachable", str(exc))
    report.webhook = webhook_status(info)
    return webhook_condition(spec, info, time.time(), token=token)


async def _readiness(
    clients: Clients, namespace: str, name: str, status: Mapping[str, Any]
) -> conditions.Condition | None:
    """Ready from the Deployment serving the bot, once reconcile has deployed it (else None)."""
    current = conditions.find(status.get("conditions"), conditions.READY)
    reason = (current or {}).get("reason")
    host = references.status_name(status, "host")
    if host and reason in HOSTED_REASONS:
        deployment = await clients.kube.get(object_path("apps/v1", "Deployment", namespace, host))
        return host_ready_condition(host, deployment)
    if reason in DEPLOYED_REASONS:
        deployment = await clients.kube.get(object_path("apps/v1", "Deployment", namespace, name))
        return ready_condition(deployment)
    return None
