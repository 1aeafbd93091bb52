"""Where a TelegramBot runs (`spec.runtime`), and moving it without losing an update.

Telegram redelivers every update that was not answered 2xx, so a move keeps one order: the new
target serves the bot and is ready -> Telegram is told the new URL -> the old target lets go.
The old URL stays routed (Ingress) until the webhook points elsewhere, so nothing sent there in
between is refused. Moves: Dedicated <-> Shared, and a Shared bot's new image (another host).

A move between runtimes also moves the bot's rows (`row_moves`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import kopf

from hello_operator import (
    bot_manifests,
    conditions,
    host_manifests,
    host_membership,
    pickup,
    policy,
    references,
)
from hello_operator.kube import object_path
from hello_operator.reconcile import (
    DATABASE_ERRORS,
    Blocked,
    Clients,
    Outcome,
    Waiting,
    adopt,
    check_references,
    database_blocked,
    ensure_generated_secret,
    host_ready_condition,
    invalid_reference,
    job_state,
    migrated_for,
    migration_failed,
    read_token,
    reconcile_dedicated,
)
from hello_operator.row_moves import follow_rows, unfinished
from hello_operator.telegram import TelegramError


async def reconcile(
    clients: Clients,
    owner: kopf.Body,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    retry: int,
) -> Outcome:
    try:
        # First: whatever else is wrong, no request may follow a name that is not one.
        references.check(spec, status)
    except references.InvalidReference as exc:
        raise invalid_reference(exc) from None
    problems = bot_manifests.validate_spec(spec)
    if problems:
        raise Blocked("InvalidSpec", "; ".join(problems), retry_after=None)
    refused = clients.config.policy.problems(spec)
    if refused:
        raise Blocked(policy.REASON, "; ".join(refused), retry_after=None)
    previous_host = str(status.get("host") or "")
    if bot_manifests.runtime(spec) == "Shared":
        return await reconcile_shared(
            clients, owner, spec, status, previous_host=previous_host, retry=retry
        )
    # A move to a host that was called off may have got as far as the webhook: undo it in order.
    previous_host = previous_host or str(status.get("joining") or "")
    if not previous_host:
        return await reconcile_dedicated(clients, owner, spec, status, retry)
    # Leaving a host: it keeps its route until the bot's own Deployment has taken over.
    token = await required_token(clients, owner, spec)
    old_route = {
        f"{host_manifests.HOST_WEBHOOK_PATH}/{host_manifests.bot_id(token)}": previous_host
    }

    async def copy_in() -> None:
        await follow_rows(
            clients, owner, spec, status, move=("Shared", "Dedicated"), stage="Initial", retry=retry
        )

    outcome = await reconcile_dedicated(
        clients, owner, spec, status, retry, extra_routes=old_route, before_rollout=copy_in
    )
    if not outcome.ready.status:
        raise Waiting(
            outcome.ready.reason,
            f"{outcome.ready.message}; {previous_host} serves the bot until then",
            delay=clients.config.migration_poll_seconds,
            condition=conditions.READY,
            phase="Deploying",
            fields=migrated_fields(outcome.migrated_image, "Dedicated"),
        )
    if bot_manifests.webhook_host(spec):
        secret = await ensure_generated_secret(clients, owner, spec)
        url = f"https://{bot_manifests.webhook_host(spec)}{bot_manifests.webhook_path(spec)}"
        await point_webhook(clients, token, url, secret["WEBHOOK_SECRET"])
    await host_membership.leave(
        clients.kube,
        owner,
        previous_host,
        telegram_api_url=clients.config.telegram_api_url,
        pod=clients.config.bot_pod,
    )
    await follow_rows(
        clients, owner, spec, status, move=("Shared", "Dedicated"), stage="Final", retry=retry
    )
    if bot_manifests.webhook_host(spec):
        await apply_ingress(
            clients, owner, spec, {bot_manifests.webhook_path(spec): owner["metadata"]["name"]}
        )
    return outcome


def migrated_fields(image: str, runtime: str) -> dict[str, Any]:
    return {"migratedImage": image, "migratedRuntime": runtime}


async def required_token(clients: Clients, owner: kopf.Body, spec: Mapping[str, Any]) -> str:
    token = await read_token(clients.kube, owner["metadata"]["namespace"], spec)
    if token is None:
        await check_references(clients, owner["metadata"]["namespace"], spec)  # raises Blocked
        msg = "token Secret vanished"
        raise Blocked("TokenSecretNotFound", msg, retry_after=clients.config.blocked_retry_seconds)
    return token


async def point_webhook(clients: Clients, token: str, url: str, secret: str) -> None:
    """setWebhook unless Telegram already delivers to `url`; a failure is retried, never lost."""
    try:
        if (await clients.telegram.get_webhook_info(token)).url == url:
            return
        await clients.telegram.set_webhook(token, url=url, secret_token=secret)
    except TelegramError as exc:
        raise Blocked(
            "SetWebhookFailed", str(exc), retry_after=clients.config.blocked_retry_seconds
        ) from None


async def migrate_tenant(clients: Clients, owner: kopf.Body, image: str, host: str) -> None:
    """The bot's schema in the hosts' database at `image`'s head (a Job per bot and image)."""
    config = clients.config
    name = owner["metadata"]["name"]
    manifest = host_manifests.render_job(name, image, host, config.telegram_api_url, config.bot_pod)
    job = manifest["metadata"]["name"]
    state = job_state(await clients.kube.ensure(adopt(manifest, owner)))
    if state == "failed":
        raise migration_failed(job, image)
    if state != "succeeded":
        raise Waiting(
            "MigrationRunning",
            f"Job {job} is migrating the bot's schema for image {image}",
            delay=config.migration_poll_seconds,
        )


async def reconcile_shared(
    clients: Clients,
    owner: kopf.Body,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    *,
    previous_host: str,
    retry: int,
) -> Outcome:
    """Join the image's host, migrate the bot's schema, then move Telegram over to the host."""
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    config, kube = clients.config, clients.kube
    await check_references(clients, namespace, spec)
    token = await required_token(clients, owner, spec)
    secret = (await ensure_generated_secret(clients, owner, spec))["WEBHOOK_SECRET"]
    try:
        await host_membership.ensure_hosts_database(
            kube,
            config.shared_postgres_admin_url,
            config.shared_postgres_host,
            config.shared_postgres_port,
            owner,
        )
    except DATABASE_ERRORS as exc:
        raise database_blocked(exc, retry, retry_after=config.blocked_retry_seconds) from exc
    image = str(spec["image"])
    member = await host_membership.join(
        kube,
        owner,
        image,
        host_manifests.bot_file(token, secret),
        telegram_api_url=config.telegram_api_url,
        pod=config.bot_pod,
    )
    host = member.host
    # Until the move is done, status.host names whoever serves the bot now.
    # `joining`: a host holding the bot's key that does not serve it yet (left if called off).
    # Back to the host that serves it: a host it was joining meanwhile stays named until left.
    joining = host if host != previous_host else status.get("joining")
    serving = {"host": previous_host or None, "joining": joining or None}
    try:
        if migrated_for(status, "Shared") != image:
            await migrate_tenant(clients, owner, image, host)
    except Waiting as waiting:
        waiting.fields |= serving
        raise

    url = host_manifests.webhook_url(spec, token)
    new_path = url.removeprefix(f"https://{bot_manifests.webhook_host(spec)}")
    dedicated = await own_deployment(clients, owner)
    # Also once the Deployment is gone, until the final sync is done (status.rows).
    from_dedicated = dedicated is not None or unfinished(status, ("Dedicated", "Shared"))
    old_routes: dict[str, str] = {}
    if dedicated is not None:
        old_routes[bot_manifests.webhook_path(spec)] = name
    # A new image's host gets the bot's path (the same URL) only once it is ready.
    await apply_ingress(clients, owner, spec, {**old_routes, new_path: previous_host or host})

    ready = host_ready_condition(host, member.deployment)
    if not ready.status:
        raise Waiting(
            ready.reason,
            ready.message,
            delay=config.migration_poll_seconds,
            condition=conditions.READY,
            phase="Deploying",
            fields=serving | migrated_fields(image, "Shared"),
        )
    if host != previous_host:
        # Moving onto this host: Telegram goes there only once the host serves the bot.
        fallback = await host_pickup(
            clients, owner, member, token, fields=serving | migrated_fields(image, "Shared")
        )
        if fallback:
            # Said twice: Ready's message lasts until the host's next change, the Event longer.
            kopf.event(owner, type="Warning", reason="HostPickupUnconfirmed", message=fallback)
            ready = replace(ready, message=f"{ready.message}; {fallback}")
    if from_dedicated:
        await follow_rows(
            clients, owner, spec, status, move=("Dedicated", "Shared"), stage="Initial", retry=retry
        )
    await point_webhook(clients, token, url, secret)
    await apply_ingress(clients, owner, spec, {**old_routes, new_path: host})

    # Telegram now delivers to the host: the old target lets go.
    if dedicated is not None:
        await kube.delete(object_path("apps/v1", "Deployment", namespace, name))
        await kube.delete(object_path("v1", "Service", namespace, name))
    if from_dedicated:
        await follow_rows(
            clients, owner, spec, status, move=("Dedicated", "Shared"), stage="Final", retry=retry
        )
    members = await host_membership.hosts_of(kube, owner)
    for old in sorted((members | {previous_host, str(status.get("joining") or "")}) - {"", host}):
        await host_membership.leave(
            kube, owner, old, telegram_api_url=config.telegram_api_url, pod=config.bot_pod
        )
    await apply_ingress(clients, owner, spec, {new_path: host})
    return Outcome(migrated_image=image, ready=ready, host=host, runtime="Shared")


async def host_pickup(
    clients: Clients,
    owner: kopf.Body,
    member: host_membership.Membership,
    token: str,
    *,
    fields: Mapping[str, Any],
) -> str:
    """Wait (raise Waiting) until every ready Pod of the host reports the bot serving.

    Returns "" when the host said so, or a note when no Pod could say anything and
    HOST_PICKUP_SECONDS have passed since the bot's key was written (the timed fallback)."""
    config, host = clients.config, member.host
    report = await pickup.ask_host(
        clients.kube,
        owner["metadata"]["namespace"],
        host,
        name=owner["metadata"]["name"],
        bot_id=host_manifests.bot_id(token),
        default_port=config.bot_pod.port,
    )
    if report.confirmed:
        return ""
    poll = config.host_pickup_poll_seconds
    if report.refused:
        # The host's own word; time changes nothing about it (the kubelet has yet to sync).
        message, delay = report.refusal(host), poll
    else:
        left = member.joined_at + config.host_pickup_seconds - time.time()
        limit = f"HOST_PICKUP_SECONDS ({config.host_pickup_seconds:.0f} s)"
        if left <= 0:
            silence = report.silence()
            return f"not every Pod of the host answered ({silence}): webhook pointed after {limit}"
        message = (
            f"host {host} did not say whether it serves the bot ({report.silence()}); "
            f"the webhook points there {limit} after the bot's key was written, in {left:.0f} s"
        )
        delay = min(poll, left)
    raise Waiting(
        "HostLoadingBot",
        message,
        delay=delay,
        condition=conditions.READY,
        phase="Deploying",
        fields=fields,
    )


async def apply_ingress(
    clients: Clients, owner: kopf.Body, spec: Mapping[str, Any], routes: Mapping[str, str]
) -> None:
    await clients.kube.apply(
        adopt(bot_manifests.render_ingress(owner["metadata"]["name"], spec, routes), owner)
    )


async def own_deployment(clients: Clients, owner: kopf.Body) -> dict[str, Any] | None:
    """The bot's Dedicated Deployment, if one (of this very TelegramBot) still exists."""
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    deployment = await clients.kube.get(object_path("apps/v1", "Deployment", namespace, name))
    refs = ((deployment or {}).get("metadata") or {}).get("ownerReferences") or []
    mine = any(ref.get("uid") == owner["metadata"]["uid"] for ref in refs)
    return deployment if mine else None
