"""Membership of bot hosts: a Shared TelegramBot joins or leaves its image's host.

Several TelegramBots write the same host objects, and kopf handles different bots concurrently,
so every read-modify-write of a host's objects (its bots Secret's keys, the owner references,
the size that follows the member count) runs under that host's lock; the operator runs as one
replica, so a lock in memory is enough.

Ownership: each member adds a non-controller owner reference to the host's Deployment, Service
and bots Secret. A member that leaves takes its reference off the Deployment and Service, and
the operator deletes both when the last member left (an idle host would hold ~200 MiB). The bots
Secret keeps every reference and is only emptied: the operator may not delete Secrets (RBAC), and
the garbage collector removes it once none of those TelegramBots exists any more.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hello_operator import adoption, database, host_manifests
from hello_operator.kube import KubeClient, collection_path, object_path
from hello_operator.pod_shape import BotPod

# When each member's key was written: the kubelet takes up to its sync period (1 min by default)
# to update a mounted Secret, and the host rescans every 5 s; the webhook waits for both.
JOINED_ANNOTATION = "hello-bot.dev/joined"
LOCKS: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)


@dataclass(frozen=True)
class Membership:
    host: str
    deployment: Mapping[str, Any]
    joined_at: float


def _lock(namespace: str, host: str) -> asyncio.Lock:
    return LOCKS[namespace, host]


def _encode(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _joined(secret: Mapping[str, Any] | None) -> dict[str, float]:
    raw = ((secret or {}).get("metadata") or {}).get("annotations", {}).get(JOINED_ANNOTATION)
    try:
        joined = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return {str(k): float(v) for k, v in joined.items()} if isinstance(joined, dict) else {}


def _owners(obj: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    return list(((obj or {}).get("metadata") or {}).get("ownerReferences") or [])


async def ensure_hosts_database(
    kube: KubeClient, admin_url: str, host: str, port: int, bot: Mapping[str, Any]
) -> database.DatabaseTarget:
    """The hosts' database and its login role, the Secret with its DATABASE_URL, which the Shared
    bots of the namespace own together, and this bot's role there (made by the operator: the
    hosts role runs tenant code and may not create or alter roles)."""
    namespace = bot["metadata"]["namespace"]
    path = object_path("v1", "Secret", namespace, host_manifests.DATABASE_SECRET)
    async with _lock(namespace, host_manifests.DATABASE_SECRET):
        target = await adoption.hosts_target(kube, admin_url, namespace)
        current = await kube.get(path)
        data = (current or {}).get("data") or {}
        password = (
            base64.b64decode(data["DATABASE_PASSWORD"]).decode()
            if "DATABASE_PASSWORD" in data
            else secrets.token_urlsafe(24)
        )
        url = target.url(password=password, host=host, port=port)
        owners = host_manifests.merged_owners(_owners(current), host_manifests.owner_reference(bot))
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": host_manifests.DATABASE_SECRET,
                "namespace": namespace,
                "labels": host_manifests.host_labels(host_manifests.DATABASE_SECRET),
                "ownerReferences": owners,
            },
            "type": "Opaque",
            "data": {"DATABASE_PASSWORD": _encode(password), "DATABASE_URL": _encode(url)},
        }
        if (
            current is None
            or owners != _owners(current)
            or data.get("DATABASE_URL") != _encode(url)
        ):
            await kube.apply(secret)
        owner = database.Owner(namespace)
        await database.ensure_database(admin_url, target, password, owner=owner)
        await database.ensure_tenant_role(admin_url, target, database.Owner.of(bot))
    return target


async def _apply_host(
    kube: KubeClient, namespace: str, manifest: dict[str, Any], owners: list[dict[str, Any]]
) -> dict[str, Any]:
    manifest["metadata"] |= {"namespace": namespace, "ownerReferences": owners}
    return await kube.apply(manifest)


async def join(
    kube: KubeClient,
    bot: Mapping[str, Any],
    image: str,
    bot_file: str,
    *,
    telegram_api_url: str,
    pod: BotPod,
) -> Membership:
    """Put the bot's key into its host's bots Secret and size and apply the host for it."""
    namespace, name = bot["metadata"]["namespace"], bot["metadata"]["name"]
    host = host_manifests.host_name(image)
    key = host_manifests.bot_key(name)
    me = host_manifests.owner_reference(bot)
    secret_path = object_path("v1", "Secret", namespace, host_manifests.bots_secret_name(host))
    async with _lock(namespace, host):
        secret = await kube.get(secret_path)
        data = dict((secret or {}).get("data") or {})
        joined = _joined(secret)
        owners = host_manifests.merged_owners(_owners(secret), me)
        encoded = _encode(bot_file)
        if data.get(key) != encoded or name not in joined or owners != _owners(secret):
            if data.get(key) != encoded or name not in joined:
                # A new or changed file: the host has yet to read it.
                joined[name] = time.time()
            data[key] = encoded
            await _apply_host(
                kube,
                namespace,
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": host_manifests.bots_secret_name(host),
                        "labels": host_manifests.host_labels(host),
                        "annotations": {JOINED_ANNOTATION: json.dumps(joined, sort_keys=True)},
                    },
                    "type": "Opaque",
                    "data": {k: data[k] for k in sorted(data)},
                },
                owners,
            )
        deployment = await _resize(
            kube,
            namespace,
            host,
            image=image,
            members=len(data),
            add=me,
            telegram_api_url=telegram_api_url,
            pod=pod,
        )
    return Membership(host=host, deployment=deployment, joined_at=joined[name])


async def _resize(
    kube: KubeClient,
    namespace: str,
    host: str,
    *,
    image: str,
    members: int,
    add: Mapping[str, Any] | None = None,
    drop_uid: str = "",
    telegram_api_url: str,
    pod: BotPod,
) -> dict[str, Any]:
    """Apply the host's Deployment (sized for `members`) and Service with the owners updated."""
    deployment_path = object_path("apps/v1", "Deployment", namespace, host)
    service_path = object_path("v1", "Service", namespace, host)
    current = await kube.get(deployment_path)
    owners = host_manifests.merged_owners(_owners(current), add, drop_uid)
    manifest = host_manifests.render_deployment(host, image, members, telegram_api_url, pod)
    deployment = await _apply_host(kube, namespace, manifest, owners)
    service = await kube.get(service_path)
    await _apply_host(
        kube,
        namespace,
        host_manifests.render_service(host),
        host_manifests.merged_owners(_owners(service), add, drop_uid),
    )
    return deployment


async def leave(
    kube: KubeClient,
    bot: Mapping[str, Any],
    host: str,
    *,
    telegram_api_url: str,
    pod: BotPod,
) -> None:
    """Take the bot's key out of `host` (the host drops it without a restart); the last member
    out deletes the host's Deployment and Service. Safe to repeat."""
    namespace, name = bot["metadata"]["namespace"], bot["metadata"]["name"]
    uid = bot["metadata"]["uid"]
    secret_path = object_path("v1", "Secret", namespace, host_manifests.bots_secret_name(host))
    deployment_path = object_path("apps/v1", "Deployment", namespace, host)
    async with _lock(namespace, host):
        secret = await kube.get(secret_path)
        data = dict((secret or {}).get("data") or {})
        joined = _joined(secret)
        if secret is not None and (host_manifests.bot_key(name) in data or name in joined):
            data.pop(host_manifests.bot_key(name), None)
            joined.pop(name, None)
            patch = {
                "metadata": {
                    "annotations": {JOINED_ANNOTATION: json.dumps(joined, sort_keys=True)}
                },
                "data": {host_manifests.bot_key(name): None},
            }
            await kube.patch(secret_path, patch)
        deployment = await kube.get(deployment_path)
        if deployment is None:
            return
        if not data:
            await kube.delete(deployment_path)
            await kube.delete(object_path("v1", "Service", namespace, host))
            return
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        await _resize(
            kube,
            namespace,
            host,
            image=image,
            members=len(data),
            drop_uid=uid,
            telegram_api_url=telegram_api_url,
            pod=pod,
        )


async def hosts_of(kube: KubeClient, bot: Mapping[str, Any]) -> set[str]:
    """Every host the bot is a member of: the owner reference each join puts on the host's
    Deployment says so. status.host and status.joining name two at most, and a move overtaken
    by another (a second new image before the first one's host was ready) joined a third."""
    namespace, uid = bot["metadata"]["namespace"], bot["metadata"]["uid"]
    selector = quote("app.kubernetes.io/component=host")
    listed = await kube.get(
        f"{collection_path('apps/v1', 'Deployment', namespace)}?labelSelector={selector}"
    )
    return {
        deployment["metadata"]["name"]
        for deployment in (listed or {}).get("items") or []
        # Checked here too: the selector is only a filter for the API server's sake.
        if (deployment["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "host"
        and any(ref.get("uid") == uid for ref in _owners(deployment))
    }
