"""kopf handlers: one small function per cause; the work lives in `reconcile` and `health`."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import asyncpg
import kopf

from hello_operator import children, conditions, database, health
from hello_operator.kube import ApiError, KubeClient
from hello_operator.reconcile import Blocked, Clients, Waiting, backoff, read_token, reconcile
from hello_operator.settings import GROUP, PLURAL, VERSION, WEBHOOK_CHECK_SECONDS, OperatorConfig
from hello_operator.telegram import TelegramClient, TelegramError

RESOURCE = (GROUP, VERSION, PLURAL)
TRANSIENT = (ApiError, aiohttp.ClientError, asyncpg.PostgresError, OSError, TimeoutError)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Tune kopf, log in the way kopf does, and put the shared clients into `memo`."""
    settings.posting.level = logging.WARNING  # Events for problems, not for every step
    settings.persistence.finalizer = f"{GROUP}/operator"
    settings.watching.server_timeout = 300
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
        settings=settings
    )
    if info is None:
        msg = "no Kubernetes credentials: neither a service account nor a kubeconfig"
        raise RuntimeError(msg)
    config = OperatorConfig.from_env()
    timeout = aiohttp.ClientTimeout(total=config.telegram_timeout_seconds)
    memo.clients = Clients(
        kube=KubeClient.from_connection(info),
        telegram=TelegramClient(
            session=aiohttp.ClientSession(timeout=timeout), api_url=config.telegram_api_url
        ),
        config=config,
    )


@kopf.on.cleanup()
async def close_clients(memo: kopf.Memo, **_: Any) -> None:
    clients: Clients = memo.clients
    await clients.kube.close()
    await clients.telegram.close()


def _report(
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    *updates: conditions.Condition,
    observed: bool = True,
) -> None:
    """Write conditions (the whole list: a merge patch replaces lists) via kopf's patch."""
    generation = body.meta.get("generation")
    patch.status["conditions"] = conditions.merge_conditions(
        status.get("conditions"), updates, generation=generation if observed else None
    )
    if observed:
        patch.status["observedGeneration"] = generation


async def _reconcile(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, retry: int
) -> None:
    """Shared by create, update and resume; turns outcomes into status, Events and retries."""
    try:
        outcome = await reconcile(memo.clients, body, body.spec, status, retry)
    except Waiting as waiting:
        patch.status["phase"] = "Migrating"
        _report(
            body,
            status,
            patch,
            conditions.Condition(conditions.MIGRATED, False, waiting.reason, waiting.message),
        )
        raise kopf.TemporaryError(waiting.message, delay=waiting.delay) from None
    except Blocked as blocked:
        patch.status["phase"] = "Failed" if blocked.retry_after is None else "Blocked"
        _report(
            body,
            status,
            patch,
            conditions.Condition(blocked.condition, False, blocked.reason, blocked.message),
        )
        kopf.warn(body, reason=blocked.reason, message=blocked.message)
        if blocked.retry_after is None:
            raise kopf.PermanentError(f"{blocked.reason}: {blocked.message}") from None
        raise kopf.TemporaryError(
            f"{blocked.reason}: {blocked.message}", delay=blocked.retry_after
        ) from None
    except TRANSIENT as exc:
        raise kopf.TemporaryError(f"{type(exc).__name__}: {exc}", delay=backoff(retry)) from exc
    patch.status["migratedImage"] = outcome.migrated_image
    patch.status["phase"] = "Running" if outcome.ready.status else "Deploying"
    migrated = conditions.Condition(
        conditions.MIGRATED,
        True,
        "MigrationSucceeded",
        f"schema migrated for {outcome.migrated_image}",
    )
    _report(body, status, patch, migrated, outcome.ready)


@kopf.on.create(*RESOURCE)
async def create_bot(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, retry: int, **_: Any
) -> None:
    await _reconcile(body, status, patch, memo, retry)


@kopf.on.update(*RESOURCE, field="spec")
async def update_bot(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, retry: int, **_: Any
) -> None:
    """Any spec change: children are patched; a new image re-runs the migration Job first."""
    await _reconcile(body, status, patch, memo, retry)


@kopf.on.resume(*RESOURCE)
async def resume_bot(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, retry: int, **_: Any
) -> None:
    """After an operator restart: converge whatever changed while nobody watched."""
    await _reconcile(body, status, patch, memo, retry)


@kopf.on.delete(*RESOURCE)
async def delete_bot(
    body: kopf.Body, spec: kopf.Spec, memo: kopf.Memo, logger: kopf.Logger, retry: int, **_: Any
) -> None:
    """Remove the webhook, then drop the data only if `deletionPolicy: Delete`.

    Children go with the owner through garbage collection (owner references).
    """
    clients: Clients = memo.clients
    name, namespace = body.meta["name"], body.meta["namespace"]
    if children.webhook_host(spec):
        await _delete_webhook(clients, namespace, spec, logger, retry)
    if spec.get("deletionPolicy", "Retain") != "Delete":
        logger.info("deletionPolicy is Retain: the database is kept")
        return
    if children.database_mode(spec) != "Shared":
        logger.warning("deletionPolicy Delete does not drop an External database; kept")
        return
    target = database.DatabaseTarget.for_bot(namespace, name)
    try:
        await database.drop_database(clients.config.shared_postgres_admin_url, target)
    except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
        raise kopf.TemporaryError(
            f"dropping {target.database}: {exc}", delay=backoff(retry)
        ) from exc
    logger.info("dropped database and role %s", target.database)


async def _delete_webhook(
    clients: Clients, namespace: str, spec: kopf.Spec, logger: kopf.Logger, retry: int
) -> None:
    token = await read_token(clients.kube, namespace, spec)
    if token is None:
        logger.warning("token Secret is gone: cannot call deleteWebhook")
        return
    try:
        await clients.telegram.delete_webhook(token)
    except TelegramError as exc:
        if retry < 3:
            raise kopf.TemporaryError(str(exc), delay=backoff(retry)) from None
        # Do not block the deletion forever on an unreachable Bot API.
        logger.warning("giving up on deleteWebhook: %s", exc)


@kopf.timer(*RESOURCE, interval=WEBHOOK_CHECK_SECONDS, id="check_webhook")
async def check_webhook(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Ask Telegram how webhook delivery goes, and refresh readiness from the Deployment."""
    clients: Clients = memo.clients
    try:
        report = await health.check(
            clients, body.meta["namespace"], body.meta["name"], spec, status
        )
    except TRANSIENT as exc:
        raise kopf.TemporaryError(f"{type(exc).__name__}: {exc}", delay=30) from exc
    if report.webhook is not None:
        patch.status["webhook"] = report.webhook
    _report(body, status, patch, *report.conditions, observed=False)
    if report.phase:
        patch.status["phase"] = report.phase
