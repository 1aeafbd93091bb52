"""kopf handlers on TelegramBot causes, one small function each; the work lives in `runtime`,
`reconcile` and `webhook_timer`."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import asyncpg
import kopf

from hello_operator import (
    adoption,
    bot_manifests,
    conditions,
    database,
    host_manifests,
    host_membership,
    references,
    webhook_hosts,
    webhook_timer,
)
from hello_operator.kube import ApiError, KubeClient
from hello_operator.pod_shape import PodShapeError
from hello_operator.reconcile import (
    Blocked,
    Clients,
    Waiting,
    backoff,
    migrated_condition,
    read_token,
    write_conditions,
)
from hello_operator.runtime import reconcile
from hello_operator.settings import GROUP, PLURAL, VERSION, WEBHOOK_CHECK_SECONDS, OperatorConfig
from hello_operator.telegram import TelegramClient, TelegramError

RESOURCE = (GROUP, VERSION, PLURAL)
TRANSIENT = (ApiError, aiohttp.ClientError, asyncpg.PostgresError, OSError, TimeoutError)


def _connection(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """Service account in a pod, else KUBECONFIG; decided at startup, not at import."""
    return kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
        settings=settings
    )


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
    """kopf and our own client log in the same way (kopf's defaults are chosen at import)."""
    return _connection(settings)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Tune kopf, log in the way kopf does, and put the shared clients into `memo`."""
    # Events only where a human must act (explicit, below); kopf would otherwise turn every
    # "migration still running" retry into a Warning Event.
    settings.posting.level = logging.CRITICAL
    settings.persistence.finalizer = f"{GROUP}/operator"
    settings.watching.server_timeout = 300
    try:
        config = OperatorConfig.from_env()
    except PodShapeError as exc:
        # Waiting brings no missing file: stop, so the Pod's restarts show the message.
        raise kopf.PermanentError(str(exc)) from exc
    info = _connection(settings)
    if info is None:
        msg = "no Kubernetes credentials: neither a service account nor a kubeconfig"
        raise RuntimeError(msg)
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


async def _report(clients: Clients, body: kopf.Body, *updates: conditions.Condition) -> None:
    """Write conditions at once, the way `write_conditions` explains; the rest goes via kopf."""
    generation = body.meta.get("generation")
    await write_conditions(
        clients, body.meta["namespace"], body.meta["name"], updates, generation=generation
    )


async def _outcome(
    clients: Clients,
    body: kopf.Body,
    status: kopf.Status,
    retry: int,
    host_claims: kopf.Index[str, webhook_hosts.Claim],
) -> tuple[dict[str, Any], list[conditions.Condition], Exception | None]:
    """Run the reconciliation; return the status fields, conditions and the error to raise."""
    try:
        retry_after = clients.config.blocked_retry_seconds
        webhook_hosts.check(body.meta["namespace"], body.spec, host_claims, retry_after=retry_after)
        outcome = await reconcile(clients, body, body.spec, status, retry)
    except Waiting as waiting:
        cond = conditions.Condition(waiting.condition, False, waiting.reason, waiting.message)
        return (
            {**waiting.fields, "phase": waiting.phase},
            [cond],
            kopf.TemporaryError(waiting.message, delay=waiting.delay),
        )
    except Blocked as blocked:
        cond = conditions.Condition(blocked.condition, False, blocked.reason, blocked.message)
        kopf.event(body, type="Warning", reason=blocked.reason, message=blocked.message)
        text = f"{blocked.reason}: {blocked.message}"
        if blocked.retry_after is None:
            return {"phase": "Failed"}, [cond], kopf.PermanentError(text)
        return {"phase": "Blocked"}, [cond], kopf.TemporaryError(text, delay=blocked.retry_after)
    except TRANSIENT as exc:
        error = kopf.TemporaryError(f"{type(exc).__name__}: {exc}", delay=backoff(retry))
        return {}, [], error
    migrated = migrated_condition(outcome.migrated_image)
    fields = {
        "migratedImage": outcome.migrated_image,
        "migratedRuntime": outcome.runtime,
        # None removes the field: a Dedicated bot has no host; no move is under way.
        "host": outcome.host or None,
        "joining": None,
        "phase": "Running" if outcome.ready.status else "Deploying",
    }
    return fields, [migrated, outcome.ready], None


async def _reconcile(
    body: kopf.Body,
    status: kopf.Status,
    *,
    patch: kopf.Patch,
    memo: kopf.Memo,
    retry: int,
    host_claims: kopf.Index[str, webhook_hosts.Claim],
) -> None:
    """Shared by create, update and resume; turns outcomes into status, Events and retries."""
    clients: Clients = memo.clients
    fields, updates, error = await _outcome(clients, body, status, retry, host_claims)
    if updates:
        try:
            await _report(clients, body, *updates)
        except TRANSIENT as exc:
            error = error or kopf.TemporaryError(f"status: {exc}", delay=backoff(retry))
        for key, value in fields.items():
            patch.status[key] = value
        patch.status["observedGeneration"] = body.meta.get("generation")
    if error is not None:
        raise error


@kopf.on.create(*RESOURCE)
async def create_bot(
    *,
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    retry: int,
    webhook_host_claims: kopf.Index[str, webhook_hosts.Claim],
    **_: Any,
) -> None:
    await _reconcile(
        body, status, patch=patch, memo=memo, retry=retry, host_claims=webhook_host_claims
    )


@kopf.on.update(*RESOURCE, field="spec")
async def update_bot(
    *,
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    retry: int,
    webhook_host_claims: kopf.Index[str, webhook_hosts.Claim],
    **_: Any,
) -> None:
    """Any spec change: children are patched; a new image re-runs the migration Job first."""
    await _reconcile(
        body, status, patch=patch, memo=memo, retry=retry, host_claims=webhook_host_claims
    )


@kopf.on.resume(*RESOURCE)
async def resume_bot(
    *,
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    retry: int,
    webhook_host_claims: kopf.Index[str, webhook_hosts.Claim],
    **_: Any,
) -> None:
    """After an operator restart: converge whatever changed while nobody watched."""
    await _reconcile(
        body, status, patch=patch, memo=memo, retry=retry, host_claims=webhook_host_claims
    )


@kopf.on.delete(*RESOURCE)
async def delete_bot(
    body: kopf.Body,
    spec: kopf.Spec,
    memo: kopf.Memo,
    logger: kopf.Logger,
    retry: int,
    **_: Any,
) -> None:
    """Remove the webhook, leave the bot host, then drop the data only if `deletionPolicy: Delete`.

    Children go with the owner through garbage collection (owner references); a host's objects
    are shared, so the bot's key and claim are taken off them here (`host_membership.leave`).
    """
    clients: Clients = memo.clients
    name, namespace = body.meta["name"], body.meta["namespace"]
    if bot_manifests.webhook_host(spec):
        await _delete_webhook(clients, namespace, spec, logger, retry)
    # The host serving it, and the one it was joining (a bot deleted mid-move has a key in both).
    hosts = _status_hosts(body.status, logger)
    if bot_manifests.runtime(spec) == "Shared" and spec.get("image"):
        hosts.add(host_manifests.host_name(str(spec["image"])))
    config = clients.config
    try:
        hosts |= await host_membership.hosts_of(clients.kube, body)
    except TRANSIENT as exc:
        raise kopf.TemporaryError(f"listing the hosts: {exc}", delay=backoff(retry)) from exc
    for host in sorted(hosts - {""}):
        try:
            await host_membership.leave(
                clients.kube,
                body,
                host,
                telegram_api_url=config.telegram_api_url,
                pod=config.bot_pod,
            )
        except TRANSIENT as exc:
            raise kopf.TemporaryError(f"leaving the host: {exc}", delay=backoff(retry)) from exc
    if spec.get("deletionPolicy", "Retain") != "Delete":
        logger.info("deletionPolicy is Retain: the database is kept")
        return
    if bot_manifests.database_mode(spec) != "Shared":
        logger.warning("deletionPolicy Delete does not drop an External database; kept")
        return
    if not clients.config.shared_postgres_admin_url:
        logger.warning("no SHARED_POSTGRES_ADMIN_URL: cannot drop the database; kept")
        return
    admin_url = clients.config.shared_postgres_admin_url
    owner = database.Owner.of(body)
    try:
        target = await adoption.bot_target(clients.kube, admin_url, body)
        hosts = await adoption.hosts_target(clients.kube, admin_url, namespace)
        # Both stores: a bot that switched runtimes has rows in each.
        await database.drop_database(admin_url, target, owner=owner)
        await database.drop_tenant(admin_url, hosts.database, owner)
    except database.Refused as exc:
        # Never someone else's: kept, said, and the deletion goes on (retrying cannot help).
        kopf.event(body, type="Warning", reason=exc.reason, message=exc.message)
        logger.warning("%s: %s; nothing dropped", exc.reason, exc.message)
        return
    except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
        raise kopf.TemporaryError(f"dropping the database: {exc}", delay=backoff(retry)) from exc
    logger.info("dropped database and role %s and schema of %s", target.database, name)


def _status_hosts(status: kopf.Status, logger: kopf.Logger) -> set[str]:
    """The hosts status.host and status.joining name; one that is no name is skipped (the bot's
    own memberships are still found through `host_membership.hosts_of`)."""
    hosts = set()
    for key in ("host", "joining"):
        try:
            hosts.add(references.status_name(status, key))
        except references.InvalidReference as exc:
            logger.warning("%s: not left", exc)
    return hosts


async def _delete_webhook(
    clients: Clients, namespace: str, spec: kopf.Spec, logger: kopf.Logger, retry: int
) -> None:
    try:
        token = await read_token(clients.kube, namespace, spec)
    except references.InvalidReference as exc:
        logger.warning("%s: cannot call deleteWebhook", exc)
        return
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
        report = await webhook_timer.check(
            clients, body.meta["namespace"], body.meta["name"], spec, status
        )
        await _report(clients, body, *report.conditions)
    except TRANSIENT as exc:
        raise kopf.TemporaryError(f"{type(exc).__name__}: {exc}", delay=30) from exc
    if report.webhook is not None:
        patch.status["webhook"] = report.webhook
    if report.phase:
        patch.status["phase"] = report.phase
