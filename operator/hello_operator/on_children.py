"""kopf handlers on the children the operator owns: their changes reach the owner's status now.

Without them, the operator learns that a Deployment became ready only from the webhook timer
(every `WEBHOOK_CHECK_SECONDS`) and that a migration Job ended only at the owner's next retry
(`migration_poll_seconds`). Both stay as the fallback for an event missed while the operator was
down or the API answered with an error; these handlers only make the common case fast.

The API server filters the watches by label (set at startup), so only the operator's own
children travel; the handlers' label filters say the same for kopf, which applies them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from hello_operator import bot_manifests, conditions, references
from hello_operator.kube import object_path
from hello_operator.on_telegrambot import TRANSIENT
from hello_operator.reconcile import (
    Clients,
    StatusChange,
    change_status,
    deploy,
    host_ready_condition,
    job_state,
    migrated_condition,
    migration_failed,
    ready_condition,
    write_conditions,
)
from hello_operator.settings import GROUP, VERSION
from hello_operator.webhook_timer import DEPLOYED_REASONS, HOSTED_REASONS

MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "app.kubernetes.io/component"
# The labels `bot_manifests.labels` puts on the bot Deployment, a bot host and the migration Jobs.
MANAGED = {MANAGED_BY: "hello-bot-operator"}
DEPLOYMENT_LABELS = MANAGED | {COMPONENT: "bot"}
HOST_LABELS = MANAGED | {COMPONENT: "host"}
JOB_LABELS = MANAGED | {COMPONENT: "migration"}


def label_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


@kopf.on.startup()
def select_children(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Without server-side selectors, every Deployment and Job in the cluster would stream in."""
    # Bots' and hosts' Deployments alike; the handlers below tell them apart by component.
    settings.watching.label_selectors["apps", "deployments"] = label_selector(MANAGED)
    settings.watching.label_selectors["batch", "jobs"] = label_selector(JOB_LABELS)


def bot_refs(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The owner references to TelegramBots. Anyone who may create a Deployment or Job can write
    one, so a name that is not a Kubernetes name is dropped here: it never becomes a path."""
    return [
        ref
        for ref in (body.get("metadata") or {}).get("ownerReferences") or []
        if ref.get("apiVersion") == f"{GROUP}/{VERSION}"
        and ref.get("kind") == "TelegramBot"
        and references.is_name(ref.get("name"))
    ]


def controller_ref(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The TelegramBot that owns this child (the reference `kopf.adopt` set), if any."""
    return next((ref for ref in bot_refs(body) if ref.get("controller")), None)


def readiness_change(ref: Mapping[str, Any], deployment: Mapping[str, Any] | None) -> StatusChange:
    """Ready (and the phase) follow the Deployment once reconcile has deployed it.

    Other Ready reasons (InvalidSpec, TokenSecretNotFound, ...) are reconcile's to clear; a
    Deployment left over from a deleted namesake (another uid) says nothing about this bot, and
    one that the garbage collector removes with its deleted bot needs no report.

    Reconcile also writes Ready, from the Deployment it has just applied. For that reading to
    overwrite a newer one from here, reconcile would have to stall between applying and writing
    for longer than kopf's batch window (0.1 s), which delays every event; the timer's fresh
    look repairs even that.
    """

    def change(bot: Mapping[str, Any]) -> dict[str, Any] | None:
        status, meta = bot.get("status") or {}, bot["metadata"]
        stored = conditions.find(status.get("conditions"), conditions.READY) or {}
        if meta.get("uid") != ref.get("uid") or meta.get("deletionTimestamp"):
            return None
        return _ready_patch(status, stored, ready_condition(deployment), DEPLOYED_REASONS)

    return change


def _ready_patch(
    status: Mapping[str, Any],
    stored: Mapping[str, Any],
    ready: conditions.Condition,
    reasons: frozenset[str],
) -> dict[str, Any] | None:
    """The status patch that makes Ready (and the phase) say `ready`, or None when Ready holds
    a reason that is not the watch's to change (`reasons` are) or already says it."""
    known = (stored.get("status"), stored.get("message")) == (ready.status_text, ready.message)
    if stored.get("reason") not in reasons or known:
        return None
    # The target was rendered for the generation reconcile recorded; keep that claim.
    generation = stored.get("observedGeneration")
    merged = conditions.merge_conditions(status["conditions"], [ready], generation=generation)
    patch: dict[str, Any] = {"conditions": merged}
    if status.get("phase") in {"Running", "Deploying"}:
        patch["phase"] = "Running" if ready.status else "Deploying"
    return patch


def host_readiness_change(host: str, deployment: Mapping[str, Any] | None) -> StatusChange:
    """Ready of a Shared bot follows its host, once the bot has moved there (`status.host`).

    A host that is still being joined is reconcile's to follow (it retries until the host is
    ready, then points the webhook there); so are other Ready reasons, as for Deployments.
    """

    def change(bot: Mapping[str, Any]) -> dict[str, Any] | None:
        status, meta = bot.get("status") or {}, bot["metadata"]
        stored = conditions.find(status.get("conditions"), conditions.READY) or {}
        if status.get("host") != host or meta.get("deletionTimestamp"):
            return None
        return _ready_patch(status, stored, host_ready_condition(host, deployment), HOSTED_REASONS)

    return change


def members(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The TelegramBots a host's owner references name (every one of its bots, as
    `host_membership` keeps them)."""
    return bot_refs(body)


def waits_for(bot: Mapping[str, Any], job: Mapping[str, Any], ref: Mapping[str, Any]) -> bool:
    """True if reconcile, at the bot's current generation, is waiting for exactly this Job.

    Anything else (an older image's Job, a spec changed since, a bot being deleted) is left to
    the owner's own handlers, which see the whole spec.
    """
    meta, spec = bot["metadata"], bot.get("spec") or {}
    status = bot.get("status") or {}
    migrated = conditions.find(status.get("conditions"), conditions.MIGRATED) or {}
    image = str(spec.get("image") or "")
    # A Shared bot's Job is its own handler's to follow.
    return (
        bot_manifests.runtime(spec) == "Dedicated"
        and meta.get("uid") == ref.get("uid")
        and not meta.get("deletionTimestamp")
        and job["metadata"]["name"] == bot_manifests.job_name(meta["name"], image)
        and status.get("migratedImage") != image
        and migrated.get("reason") == "MigrationRunning"
        and migrated.get("observedGeneration") == meta.get("generation")
    )


async def continue_after_migration(
    clients: Clients, job: Mapping[str, Any], ref: Mapping[str, Any]
) -> None:
    """Do what the owner's next retry would do with this Job's outcome: deploy, or say it failed.

    That retry still comes and finds the work done (every step is idempotent); the Event for a
    failed migration is left to it, so it is posted once.
    """
    namespace, name = job["metadata"]["namespace"], str(ref.get("name") or "")
    if not references.is_name(name):
        return
    bot = await clients.kube.get(object_path(f"{GROUP}/{VERSION}", "TelegramBot", namespace, name))
    if bot is None or not waits_for(bot, job, ref):
        return
    spec, generation = bot["spec"], bot["metadata"].get("generation")
    image = str(spec["image"])
    if job_state(job) == "failed":
        failed = migration_failed(job["metadata"]["name"], image)
        cond = conditions.Condition(failed.condition, False, failed.reason, failed.message)
        await write_conditions(
            clients, namespace, name, [cond], generation=generation, fields={"phase": "Failed"}
        )
        return
    ready = await deploy(clients, kopf.Body(bot), spec, image)
    fields = {"migratedImage": image, "phase": "Running" if ready.status else "Deploying"}
    await write_conditions(
        clients,
        namespace,
        name,
        [migrated_condition(image), ready],
        generation=generation,
        fields=fields,
    )


@kopf.on.event("apps", "v1", "deployments", labels=DEPLOYMENT_LABELS)
async def deployment_event(
    event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """A bot Deployment changed: Ready follows its ready replicas within one watch event."""
    ref = controller_ref(body)
    if ref is None:
        return
    clients: Clients = memo.clients
    deployment = None if event["type"] == "DELETED" else body
    change = readiness_change(ref, deployment)
    try:
        await change_status(clients, body.meta["namespace"], str(ref["name"]), change)
    except TRANSIENT as exc:
        logger.warning("readiness not reported, the webhook timer will: %s", exc)


@kopf.on.event("apps", "v1", "deployments", labels=HOST_LABELS)
async def host_event(
    event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """A bot host changed: the Ready of each bot it serves follows within one watch event."""
    clients: Clients = memo.clients
    deployment = None if event["type"] == "DELETED" else body
    host, namespace = body.meta["name"], body.meta["namespace"]
    for ref in members(body):
        try:
            await change_status(
                clients, namespace, str(ref["name"]), host_readiness_change(host, deployment)
            )
        except TRANSIENT as exc:
            logger.warning("readiness not reported, the webhook timer will: %s", exc)


@kopf.on.event("batch", "v1", "jobs", labels=JOB_LABELS)
async def job_event(
    event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """A migration Job ended: the bot waiting for it goes on now, not at its next retry."""
    ref = controller_ref(body)
    if ref is None or event["type"] == "DELETED" or job_state(body) == "running":
        return
    clients: Clients = memo.clients
    try:
        await continue_after_migration(clients, body, ref)
    except TRANSIENT as exc:
        logger.warning("migration outcome not acted on, the next retry will: %s", exc)
