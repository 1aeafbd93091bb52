"""One TelegramBot brought to its desired state, step by step; every step is safe to repeat.

Steps either finish, raise `Waiting` (normal progress, retry soon) or `Blocked` (someone must fix
something: reported as a False condition plus a Kubernetes Event). The handlers translate both
into kopf's exceptions.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import kopf

from hello_operator import adoption, bot_manifests, conditions, database, references
from hello_operator.kube import KubeClient, object_path
from hello_operator.settings import GROUP, VERSION, OperatorConfig
from hello_operator.telegram import TelegramClient


@dataclass(frozen=True)
class Clients:
    """Shared for the operator's lifetime; lives in kopf's `memo`."""

    kube: KubeClient
    telegram: TelegramClient
    config: OperatorConfig
    # Serialises read-merge-write of status.conditions (see write_conditions).
    status_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


StatusChange = Callable[[Mapping[str, Any]], dict[str, Any] | None]


async def change_status(clients: Clients, namespace: str, name: str, change: StatusChange) -> None:
    """Read the TelegramBot, let `change` compute a status patch from it, and write that patch.

    The change handlers, the webhook timer and the watches on the children all write
    `status.conditions`, concurrently, and a merge patch replaces a list whole. Through kopf's
    `patch.status`, each would merge onto the body it was given and the later write would drop
    the other's conditions (a lost `InvalidSpec` is never written again: that handler does not
    retry). So the list is read and written here, under one lock, by the operator's single
    replica. `change` returns None when there is nothing to write.
    """
    path = object_path(f"{GROUP}/{VERSION}", "TelegramBot", namespace, name)
    async with clients.status_lock:
        current = await clients.kube.get(path)
        if current is None:
            return
        patch = change(current)
        if patch:
            await clients.kube.patch(f"{path}/status", {"status": patch})


async def write_conditions(
    clients: Clients,
    namespace: str,
    name: str,
    updates: Iterable[conditions.Condition],
    *,
    generation: int | None,
    fields: Mapping[str, Any] | None = None,
) -> None:
    """Merge `updates` into the stored conditions and write the list back at once.

    `fields`: scalar status fields for the same patch, from a watch on a child, which has no
    kopf `patch` for the TelegramBot (its handlers leave their scalars to `patch.status`).
    """
    updates = tuple(updates)

    def change(bot: Mapping[str, Any]) -> dict[str, Any]:
        stored = (bot.get("status") or {}).get("conditions")
        merged = conditions.merge_conditions(stored, updates, generation=generation)
        return {**(fields or {}), "conditions": merged}

    await change_status(clients, namespace, name, change)


class Blocked(Exception):
    """Progress needs a fix from outside: a bad spec, a missing Secret, a failed migration."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        retry_after: float | None,
        condition: str = conditions.READY,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after = retry_after  # None: only a spec change can help
        self.condition = condition


class Waiting(Exception):
    """Normal progress that takes time (the migration Job runs); look again after `delay`.

    `fields`: status fields already true while waiting (the host a bot is moving from).
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        delay: float,
        condition: str = conditions.MIGRATED,
        phase: str = "Migrating",
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.delay = delay
        self.condition = condition
        self.phase = phase
        self.fields = dict(fields or {})


@dataclass(frozen=True)
class Outcome:
    migrated_image: str
    ready: conditions.Condition
    # The bot host serving a Shared bot (status.host); "" for a Dedicated one.
    host: str = ""
    runtime: str = "Dedicated"


def adopt(manifest: dict[str, Any], owner: kopf.Body) -> dict[str, Any]:
    nested = "spec.template" if manifest["kind"] in {"Deployment", "Job"} else None
    kopf.adopt(manifest, owner=owner, nested=nested)
    return manifest


async def read_token(kube: KubeClient, namespace: str, spec: Mapping[str, Any]) -> str | None:
    """The bot token, None if its Secret or key is missing; InvalidReference before any request
    if spec.token.secretName is not a name."""
    name = references.spec_name(spec, "token", "secretName")
    if not name:
        return None
    data = await kube.read_secret(namespace, name)
    return (data or {}).get((spec.get("token") or {}).get("key", "BOT_TOKEN")) or None


async def require_secret_key(
    kube: KubeClient,
    namespace: str,
    ref: Mapping[str, Any],
    *,
    field: str,
    default_key: str,
    reason: str,
    retry_after: float,
) -> None:
    """`ref` (spec `field`, without `.secretName`) names a Secret that holds its key."""
    name = references.checked(f"{field}.secretName", ref.get("secretName"))
    key = ref.get("key", default_key)
    data = await kube.read_secret(namespace, name)
    if data is None:
        raise Blocked(reason, f"Secret {namespace}/{name} not found", retry_after=retry_after)
    if not data.get(key):
        raise Blocked(
            reason, f"Secret {namespace}/{name} has no key {key!r}", retry_after=retry_after
        )


def invalid_reference(exc: references.InvalidReference) -> Blocked:
    """Only a change of the field can help; the message names it."""
    return Blocked(references.REASON, str(exc), retry_after=None)


async def check_references(clients: Clients, namespace: str, spec: Mapping[str, Any]) -> None:
    retry = clients.config.blocked_retry_seconds
    kube = clients.kube
    try:
        references.check(spec, {})  # every name before the first request for any of them
    except references.InvalidReference as exc:
        raise invalid_reference(exc) from None
    await require_secret_key(
        kube,
        namespace,
        spec["token"],
        field="spec.token",
        default_key="BOT_TOKEN",
        reason="TokenSecretNotFound",
        retry_after=retry,
    )
    if bot_manifests.database_mode(spec) == "External":
        await require_secret_key(
            kube,
            namespace,
            spec["database"]["external"],
            field="spec.database.external",
            default_key="DATABASE_URL",
            reason="DatabaseSecretNotFound",
            retry_after=retry,
        )
    elif not clients.config.shared_postgres_admin_url:
        raise Blocked(
            "SharedDatabaseNotConfigured",
            "database.mode is Shared but the operator has no SHARED_POSTGRES_ADMIN_URL",
            retry_after=retry,
        )
    redis = spec.get("redis") or {}
    if redis.get("secretName"):
        await require_secret_key(
            kube,
            namespace,
            redis,
            field="spec.redis",
            default_key="REDIS_URL",
            reason="RedisSecretNotFound",
            retry_after=retry,
        )


async def ensure_generated_secret(
    clients: Clients,
    owner: kopf.Body,
    spec: Mapping[str, Any],
    *,
    target: database.DatabaseTarget | None = None,
    retry: int = 0,
) -> dict[str, str]:
    """Webhook secret and database password are generated once and then kept in a Secret.

    `target`: the bot's database, if the caller has it already (`owned_database`)."""
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    existing = (
        await clients.kube.read_secret(namespace, bot_manifests.generated_secret_name(name)) or {}
    )
    values = dict(existing)
    values.setdefault("WEBHOOK_SECRET", secrets.token_urlsafe(32))
    if bot_manifests.database_mode(spec) == "Shared":
        target = target or await owned_database(clients, owner, retry)
        values.setdefault("DATABASE_PASSWORD", secrets.token_urlsafe(24))
        values["DATABASE_URL"] = target.url(
            password=values["DATABASE_PASSWORD"],
            host=clients.config.shared_postgres_host,
            port=clients.config.shared_postgres_port,
        )
    if values != existing:
        await clients.kube.apply(adopt(bot_manifests.render_generated_secret(name, values), owner))
    return values


def database_blocked(exc: Exception, retry: int, *, retry_after: float) -> Blocked:
    """A database step's failure as a condition: someone else's name, or the server."""
    if isinstance(exc, database.Refused):
        return Blocked(exc.reason, exc.message, retry_after=retry_after)
    return Blocked(
        "DatabaseUnavailable",
        f"shared PostgreSQL: {type(exc).__name__}: {exc}",
        retry_after=backoff(retry),
    )


DATABASE_ERRORS = (database.Refused, asyncpg.PostgresError, OSError, TimeoutError)


async def owned_database(clients: Clients, owner: kopf.Body, retry: int) -> database.DatabaseTarget:
    """The bot's own database and role in the shared PostgreSQL (claimed, or adopted from the
    previous operator's name, on first use)."""
    config = clients.config
    try:
        return await adoption.bot_target(clients.kube, config.shared_postgres_admin_url, owner)
    except DATABASE_ERRORS as exc:
        raise database_blocked(exc, retry, retry_after=config.blocked_retry_seconds) from exc


async def provision_database(
    clients: Clients, owner: kopf.Body, target: database.DatabaseTarget, password: str, retry: int
) -> None:
    config = clients.config
    try:
        await database.ensure_database(
            config.shared_postgres_admin_url, target, password, owner=database.Owner.of(owner)
        )
    except DATABASE_ERRORS as exc:
        raise database_blocked(exc, retry, retry_after=config.blocked_retry_seconds) from exc


def backoff(retry: int) -> float:
    return float(min(300, 5 * 2 ** min(retry, 6)))


def job_state(job: Mapping[str, Any]) -> str:
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in {"Complete", "Failed"}:
            return "succeeded" if cond["type"] == "Complete" else "failed"
    return "succeeded" if status.get("succeeded") else "running"


def ready_condition(deployment: Mapping[str, Any] | None) -> conditions.Condition:
    if deployment is None:
        return conditions.Condition(
            conditions.READY, False, "DeploymentMissing", "no Deployment yet"
        )
    want = int((deployment.get("spec") or {}).get("replicas", 1))
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    message = f"{ready}/{want} replicas ready"
    if ready >= want:
        return conditions.Condition(conditions.READY, True, "DeploymentAvailable", message)
    return conditions.Condition(conditions.READY, False, "DeploymentNotReady", message)


def host_ready_condition(host: str, deployment: Mapping[str, Any] | None) -> conditions.Condition:
    """Ready of a Shared bot: its host's Deployment (the operator waits for the host to read the
    bot's file before it points the webhook there)."""
    found = ready_condition(deployment)
    if deployment is None:
        return conditions.Condition(conditions.READY, False, "HostMissing", f"no host {host}")
    reason = "HostAvailable" if found.status else "HostNotReady"
    return conditions.Condition(
        conditions.READY, found.status, reason, f"host {host}: {found.message}"
    )


def migrated_condition(image: str) -> conditions.Condition:
    return conditions.Condition(
        conditions.MIGRATED, True, "MigrationSucceeded", f"schema migrated for {image}"
    )


def migration_failed(job: str, image: str) -> Blocked:
    return Blocked(
        "MigrationFailed",
        f"Job {job} failed for image {image}; fix it and set a new spec.image",
        retry_after=None,
        condition=conditions.MIGRATED,
    )


async def migrate(clients: Clients, owner: kopf.Body, spec: Mapping[str, Any]) -> None:
    """Run (or look at) the migration Job of `spec.image`; return only once it succeeded."""
    name = owner["metadata"]["name"]
    config = clients.config
    manifest = bot_manifests.render_job(name, spec, config.telegram_api_url, config.bot_pod)
    state = job_state(await clients.kube.ensure(adopt(manifest, owner)))
    job = manifest["metadata"]["name"]
    if state == "failed":
        raise migration_failed(job, spec["image"])
    if state != "succeeded":
        raise Waiting(
            "MigrationRunning",
            f"Job {job} is migrating the database for image {spec['image']}",
            delay=clients.config.migration_poll_seconds,
        )


async def deploy(
    clients: Clients, owner: kopf.Body, spec: Mapping[str, Any], image: str
) -> conditions.Condition:
    """Roll the bot Deployment out on `image` (already migrated); say how ready it is now."""
    name = owner["metadata"]["name"]
    config = clients.config
    manifest = bot_manifests.render_deployment(
        name, spec, image, config.telegram_api_url, config.bot_pod
    )
    return ready_condition(await clients.kube.apply(adopt(manifest, owner)))


def migrated_for(status: Mapping[str, Any], runtime: str) -> str:
    """The image whose migration succeeded for `runtime`'s store ("" if none did).

    A Dedicated bot keeps its rows in its own database, a Shared one in its schema of the hosts'
    database: after a switch the other store has not been migrated by the last Job.
    """
    if str(status.get("migratedRuntime") or "Dedicated") != runtime:
        return ""
    return str(status.get("migratedImage") or "")


async def reconcile_dedicated(
    clients: Clients,
    owner: kopf.Body,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    retry: int,
    *,
    extra_routes: Mapping[str, str] | None = None,
    before_rollout: Callable[[], Awaitable[None]] | None = None,
) -> Outcome:
    """The bot's own Deployment. `extra_routes`: Ingress paths kept for a host still serving it.

    `before_rollout`: runs once the database is migrated, before the Deployment is applied (a
    `serve` Pod points the webhook at itself as it starts).
    """
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    await check_references(clients, namespace, spec)
    if bot_manifests.database_mode(spec) == "Shared":
        target = await owned_database(clients, owner, retry)
        values = await ensure_generated_secret(clients, owner, spec, target=target, retry=retry)
        await provision_database(clients, owner, target, values["DATABASE_PASSWORD"], retry)
    else:
        await ensure_generated_secret(clients, owner, spec)

    kube = clients.kube
    await kube.apply(adopt(bot_manifests.render_service(name), owner))
    if bot_manifests.webhook_host(spec):
        routes = {bot_manifests.webhook_path(spec): name, **(extra_routes or {})}
        await kube.apply(adopt(bot_manifests.render_ingress(name, spec, routes), owner))
    else:
        await kube.delete(object_path("networking.k8s.io/v1", "Ingress", namespace, name))

    migrated = migrated_for(status, "Dedicated")
    if migrated != spec["image"]:
        if migrated:
            # Other spec changes roll out now; the image only after its migration succeeded.
            await deploy(clients, owner, spec, migrated)
        await migrate(clients, owner, spec)
        migrated = spec["image"]
    if before_rollout is not None:
        await before_rollout()
    return Outcome(migrated_image=migrated, ready=await deploy(clients, owner, spec, migrated))
