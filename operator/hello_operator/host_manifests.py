"""The children of a bot host (`spec.runtime: Shared`) as plain manifests: pure functions, no I/O.

One host per namespace and image serves every Shared TelegramBot of that image (`python -m bot
host`, DESIGN.md section 8). Its bots Secret holds one `<name>.env` key per member, mounted as
the host's BOTS_DIR, so members come and go without a restart. Every host of a namespace uses
one database (one schema and role per bot inside it, bot/db/bot_stores.py), so a bot that moves to
another image's host keeps its rows.

The host's objects are owned by all their members at once (owner references without
`controller`; `host_membership` maintains the list), so no single bot's deletion takes the host
along.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from hello_operator import bot_manifests
from hello_operator.pod_shape import BotPod

# Every host serves its bots under this path; a Shared bot's URL is `https://{host}/webhook/{id}`.
HOST_WEBHOOK_PATH = "/webhook"
BOTS_DIR = "/bots"
# All hosts of a namespace share cache key prefixes and the database (see the module docstring).
HOST_PROJECT_NAME = "hello-bot-hosts"
DATABASE_SECRET = "hello-bot-hosts-database"  # noqa: S105 (a Secret's name)
# Sizing, from docs/operations.md section 13: a host Pod is the chart's bot Pod (bot.resources,
# a host with 1 bot measured 214 MiB RSS) plus this much per bot; 0.12-0.23 MiB per added bot
# was measured, 0.5 MiB is the budget the benchmark holds it to, twice that leaves room for load.
MEMORY_PER_BOT_MIB = 1
# The size moves in steps of this many bots: a new size is a new Pod template, i.e. a rolling
# restart of the host, so joining or leaving restarts it only when a step boundary is crossed.
BOTS_PER_STEP = 25
QUANTITY_RE = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)?$")
UNIT_MIB = {
    None: 1 / 2**20,
    "Ki": 1 / 1024,
    "Mi": 1.0,
    "Gi": 1024.0,
    "K": 1e3 / 2**20,
    "M": 1e6 / 2**20,
    "G": 1e9 / 2**20,
}


def host_name(image: str) -> str:
    return f"hello-bot-host-{bot_manifests.image_hash(image)}"


def bots_secret_name(host: str) -> str:
    return f"{host}-bots"


def bot_key(name: str) -> str:
    return f"{name}.env"


def bot_file(token: str, webhook_secret: str) -> str:
    """The member's `<name>.env`: what bot/hosting/bots_dir.py reads (only these two keys are per
    bot)."""
    return f"BOT_TOKEN={token}\nWEBHOOK_SECRET={webhook_secret}\n"


def bot_id(token: str) -> str:
    """The number before the colon: the host routes `{WEBHOOK_PATH}/{bot_id}` by it."""
    return token.split(":", 1)[0]


def webhook_url(spec: Mapping[str, Any], token: str) -> str:
    return f"https://{bot_manifests.webhook_host(spec)}{HOST_WEBHOOK_PATH}/{bot_id(token)}"


def memory_mib(quantity: str) -> float:
    match = QUANTITY_RE.match(str(quantity))
    if not match:
        msg = f"unsupported memory quantity {quantity!r}"
        raise ValueError(msg)
    return float(match[1]) * UNIT_MIB[match[2]]


def host_resources(base: Mapping[str, Any], members: int) -> dict[str, Any]:
    """The chart's bot resources plus MEMORY_PER_BOT_MIB for each bot the current step holds."""
    slots = max(1, math.ceil(members / BOTS_PER_STEP)) * BOTS_PER_STEP
    resources = copy.deepcopy(dict(base))
    for kind in ("requests", "limits"):
        section = resources.get(kind) or {}
        if "memory" in section:
            mib = math.ceil(memory_mib(section["memory"]) + slots * MEMORY_PER_BOT_MIB)
            section["memory"] = f"{mib}Mi"
    return resources


def host_labels(host: str) -> dict[str, str]:
    return bot_manifests.labels(host, "host")


def owner_reference(bot: Mapping[str, Any]) -> dict[str, Any]:
    """One member's claim on a host object; no `controller`: every member owns it alike."""
    meta = bot["metadata"]
    return {
        "apiVersion": bot["apiVersion"],
        "kind": bot["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": False,
        "blockOwnerDeletion": False,
    }


def merged_owners(
    current: Iterable[Mapping[str, Any]], add: Mapping[str, Any] | None, drop_uid: str = ""
) -> list[dict[str, Any]]:
    owners = [
        dict(ref) for ref in current if ref.get("uid") not in {drop_uid, (add or {}).get("uid")}
    ]
    if add is not None:
        owners.append(dict(add))
    return owners


def host_env(host: str, telegram_api_url: str, pod: BotPod) -> list[dict[str, Any]]:
    # No WEBHOOK_URL: each bot has its own public host, so the operator registers each webhook
    # (after the host serves the bot) instead of the host registering them all under one URL.
    return [
        {"name": "BOTS_DIR", "value": BOTS_DIR},
        bot_manifests._secret_env("DATABASE_URL", DATABASE_SECRET, "DATABASE_URL"),
        {"name": "PROJECT_NAME", "value": HOST_PROJECT_NAME},
        {"name": "ENVIRONMENT", "value": "production"},
        {"name": "TELEGRAM_API_URL", "value": telegram_api_url},
        {"name": "LOG_FORMAT", "value": "json"},
        {"name": "WEBHOOK_PATH", "value": HOST_WEBHOOK_PATH},
        {"name": "HOST", "value": "0.0.0.0"},
        {"name": "PORT", "value": str(pod.port)},
        {"name": "SHUTDOWN_GRACE_SECONDS", "value": str(pod.shutdown_grace_seconds)},
        {"name": "DB_POOL_SIZE", "value": str(pod.db_pool_size)},
        {"name": "DB_MAX_OVERFLOW", "value": str(pod.db_max_overflow)},
    ]


def _bots_volume(host: str, only: str | None = None) -> dict[str, Any]:
    # Not a subPath: the kubelet then updates the files in place when the Secret changes.
    secret: dict[str, Any] = {"secretName": bots_secret_name(host), "defaultMode": 0o440}
    if only is not None:
        secret["items"] = [{"key": bot_key(only), "path": bot_key(only)}]
    return {"name": "bots", "secret": secret}


def render_deployment(
    host: str, image: str, members: int, telegram_api_url: str, pod: BotPod
) -> dict[str, Any]:
    container = {
        "name": "bot",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["host"],
        "ports": [{"name": "http", "containerPort": pod.port, "protocol": "TCP"}],
        "env": host_env(host, telegram_api_url, pod),
        **copy.deepcopy(dict(pod.container)),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(pod.pre_stop_seconds)]}}},
        "resources": host_resources(pod.resources, members),
    }
    pod_spec = bot_manifests._pod_spec(container, pod)
    container["volumeMounts"].append({"name": "bots", "mountPath": BOTS_DIR, "readOnly": True})
    pod_spec["volumes"].append(_bots_volume(host))
    pod_spec["terminationGracePeriodSeconds"] = pod.termination_grace_period_seconds
    labels = host_labels(host)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": host, "labels": labels},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": pod.revision_history_limit,
            "strategy": pod.strategy_for("host"),
            "selector": {"matchLabels": bot_manifests.selector(host)},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def render_service(host: str) -> dict[str, Any]:
    service = bot_manifests.render_service(host)
    service["metadata"]["labels"] = host_labels(host)
    return service


def render_job(
    name: str, image: str, host: str, telegram_api_url: str, pod: BotPod
) -> dict[str, Any]:
    """`migrate` for this one bot's schema in the hosts' database, before the host serves it.

    Only the bot's own key of the bots Secret is mounted, so the Job migrates this bot alone.
    """
    container = {
        "name": "migrate",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["migrate"],
        "env": [
            {"name": "BOTS_DIR", "value": BOTS_DIR},
            bot_manifests._secret_env("DATABASE_URL", DATABASE_SECRET, "DATABASE_URL"),
            {"name": "PROJECT_NAME", "value": HOST_PROJECT_NAME},
            {"name": "ENVIRONMENT", "value": "production"},
            {"name": "TELEGRAM_API_URL", "value": telegram_api_url},
            {"name": "LOG_FORMAT", "value": "json"},
        ],
        "resources": bot_manifests.JOB_RESOURCES,
    }
    pod_spec = bot_manifests._pod_spec(container, pod) | {"restartPolicy": "Never"}
    container["volumeMounts"].append({"name": "bots", "mountPath": BOTS_DIR, "readOnly": True})
    pod_spec["volumes"].append(_bots_volume(host, only=name))
    return bot_manifests.migration_job(job_name(name, image), name, image, pod_spec)


def job_name(name: str, image: str) -> str:
    # Not bot_manifests.job_name: that Job migrated the bot's own database, not its schema here.
    return f"{name[:40]}-tenant-{bot_manifests.image_hash(image)}"
