"""Children of a TelegramBot rendered as plain manifests: pure functions, no I/O.

The handlers adopt each manifest (`kopf.adopt`) before sending it, so owner references, namespace
and the owner's labels are added there, not here. The bot's Pod shape comes from the Helm chart
(`pod_shape.BotPod`), so these bots run exactly like the chart's.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from hello_operator.pod_shape import BotPod

# The Service's port; it targets the container's named port `http`, whatever number that has.
SERVICE_PORT = 8080
MANAGED_ENV = frozenset(
    {"BOT_TOKEN", "DATABASE_URL", "WEBHOOK_URL", "WEBHOOK_PATH", "WEBHOOK_SECRET", "PROJECT_NAME"}
)
HOST_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
PATH_RE = re.compile(r"^/[A-Za-z0-9._~/-]*$")
JOB_RESOURCES = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
# The settings the operator passes from Secrets reach the bot as files in SECRETS_DIR (where the
# chart mounts its own), never as variables: no token is in the bot's environment.
SECRET_SETTINGS = frozenset({"BOT_TOKEN", "DATABASE_URL", "WEBHOOK_SECRET", "REDIS_URL"})
SECRETS_DIR = "/etc/hello-bot/secrets"


def generated_secret_name(name: str) -> str:
    return f"{name}-generated"


def image_hash(image: str) -> str:
    return hashlib.sha256(image.encode()).hexdigest()[:10]


def job_name(name: str, image: str) -> str:
    # One Job per image: a new image gets a new Job, so the migration re-runs.
    return f"{name[:40]}-migrate-{image_hash(image)}"


def webhook_host(spec: Mapping[str, Any]) -> str:
    return str((spec.get("webhook") or {}).get("host") or "")


def webhook_path(spec: Mapping[str, Any]) -> str:
    return str((spec.get("webhook") or {}).get("path") or "/webhook")


def database_mode(spec: Mapping[str, Any]) -> str:
    return str((spec.get("database") or {}).get("mode") or "Shared")


def runtime(spec: Mapping[str, Any]) -> str:
    """`Dedicated`: a Deployment of its own; `Shared`: a member of its image's bot host."""
    return str(spec.get("runtime") or "Dedicated")


# What a host decides for all its bots; a bot that needs its own uses `runtime: Dedicated`.
# (resources and imagePullPolicy are the host's too, but the CRD defaults them: ignored.)
HOST_WIDE_FIELDS = ("env", "redis")


def validate_shared(spec: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    if not webhook_host(spec):
        problems.append("runtime Shared needs spec.webhook.host: a bot host serves webhooks only")
    elif webhook_path(spec) != "/webhook":
        problems.append("runtime Shared serves under /webhook: leave spec.webhook.path unset")
    if int(spec.get("replicas", 1)) != 1:
        problems.append("runtime Shared: the operator sizes the host; leave spec.replicas unset")
    if database_mode(spec) != "Shared":
        problems.append(
            "runtime Shared keeps every bot in the hosts' database: database.mode Shared"
        )
    if own := [f"spec.{key}" for key in HOST_WIDE_FIELDS if spec.get(key)]:
        problems.append(f"runtime Shared: {', '.join(own)} apply to the host; use Dedicated")
    return problems


def validate_spec(spec: Mapping[str, Any]) -> list[str]:
    """Problems the API server's schema may not have caught (or did not see: no CEL on old k3s)."""
    problems: list[str] = []
    if not spec.get("image"):
        problems.append("spec.image is required")
    if not (spec.get("token") or {}).get("secretName"):
        problems.append("spec.token.secretName is required")
    host = webhook_host(spec)
    if host and not HOST_RE.match(host):
        problems.append(
            f"spec.webhook.host {host!r} is not a DNS name "
            "(no scheme, port or path; e.g. bot.example.com)"
        )
    if host and not PATH_RE.match(webhook_path(spec)):
        problems.append(f"spec.webhook.path {webhook_path(spec)!r} must start with '/'")
    if not host and int(spec.get("replicas", 1)) > 1:
        problems.append(
            "polling mode (no spec.webhook.host) allows exactly 1 replica: "
            "Telegram serves getUpdates to one consumer"
        )
    database = spec.get("database") or {}
    if database_mode(spec) == "External" and not (database.get("external") or {}).get("secretName"):
        problems.append("spec.database.external.secretName is required when mode is External")
    clashes = sorted({e.get("name") for e in spec.get("env") or []} & MANAGED_ENV)
    if clashes:
        problems.append(f"spec.env must not set operator-managed variables: {', '.join(clashes)}")
    if runtime(spec) not in {"Dedicated", "Shared"}:
        problems.append(f"spec.runtime {runtime(spec)!r} is neither Dedicated nor Shared")
    elif runtime(spec) == "Shared":
        problems += validate_shared(spec)
    return problems


def labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "hello-bot",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "hello-bot-operator",
    }


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "hello-bot", "app.kubernetes.io/instance": name}


def render_generated_secret(name: str, values: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": generated_secret_name(name), "labels": labels(name, "config")},
        "type": "Opaque",
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()},
    }


def _secret_env(var: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _database_env(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    if database_mode(spec) == "External":
        ref = spec["database"]["external"]
        return _secret_env("DATABASE_URL", ref["secretName"], ref.get("key", "DATABASE_URL"))
    return _secret_env("DATABASE_URL", generated_secret_name(name), "DATABASE_URL")


def _redis_env(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    redis = spec.get("redis") or {}
    if redis.get("secretName"):
        return [_secret_env("REDIS_URL", redis["secretName"], redis.get("key", "REDIS_URL"))]
    if redis.get("url"):
        return [{"name": "REDIS_URL", "value": redis["url"]}]
    return []


def common_env(name: str, spec: Mapping[str, Any], telegram_api_url: str) -> list[dict[str, Any]]:
    """Variables both the bot and its migration Job get."""
    return [
        _database_env(name, spec),
        {"name": "PROJECT_NAME", "value": name},
        {"name": "ENVIRONMENT", "value": "production"},
        {"name": "TELEGRAM_API_URL", "value": telegram_api_url},
        {"name": "LOG_FORMAT", "value": "json"},
        *_redis_env(spec),
    ]


def bot_env(
    name: str, spec: Mapping[str, Any], telegram_api_url: str, pod: BotPod
) -> list[dict[str, Any]]:
    token = spec["token"]
    env = [
        _secret_env("BOT_TOKEN", token["secretName"], token.get("key", "BOT_TOKEN")),
        *common_env(name, spec, telegram_api_url),
        {"name": "HOST", "value": "0.0.0.0"},
        {"name": "PORT", "value": str(pod.port)},
        {"name": "SHUTDOWN_GRACE_SECONDS", "value": str(pod.shutdown_grace_seconds)},
        {"name": "DB_POOL_SIZE", "value": str(pod.db_pool_size)},
        {"name": "DB_MAX_OVERFLOW", "value": str(pod.db_max_overflow)},
    ]
    if webhook_host(spec):
        env += [
            {"name": "WEBHOOK_URL", "value": f"https://{webhook_host(spec)}"},
            {"name": "WEBHOOK_PATH", "value": webhook_path(spec)},
            _secret_env("WEBHOOK_SECRET", generated_secret_name(name), "WEBHOOK_SECRET"),
        ]
    return env + list(spec.get("env") or [])


def _secrets_as_files(env: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """(env, projected volume sources): each setting of SECRET_SETTINGS taken from a Secret
    becomes the file SECRETS_DIR/<setting>. A second entry of the same name (spec.env's) stays a
    variable, which wins over the file as it did over the first entry."""
    kept: list[dict[str, Any]] = []
    sources: list[Any] = []
    for entry in env:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        path = entry["name"].lower()
        taken = any(s["secret"]["items"][0]["path"] == path for s in sources)
        if entry["name"] in SECRET_SETTINGS and ref is not None and not taken:
            item = {"key": ref["key"], "path": path}
            sources.append({"secret": {"name": ref["name"], "items": [item]}})
        else:
            kept.append(entry)
    if sources:
        kept.append({"name": "SECRETS_DIR", "value": SECRETS_DIR})
    return kept, sources


def _pod_spec(container: dict[str, Any], pod: BotPod) -> dict[str, Any]:
    """Pod Security Standard `restricted` (the shape's contexts), a writable /tmp on a read-only
    root, secrets as files; the migration Job runs the same image under the same restrictions."""
    container["securityContext"] = copy.deepcopy(dict(pod.container["securityContext"]))
    container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108 (an emptyDir)
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": pod.tmp_size_limit}}]
    container["env"], sources = _secrets_as_files(container["env"])
    if sources:
        container["volumeMounts"].append(
            {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True}
        )
        volumes.append({"name": "secrets", "projected": {"defaultMode": 0o440, "sources": sources}})
    return copy.deepcopy(dict(pod.pod)) | {"containers": [container], "volumes": volumes}


def render_job(
    name: str, spec: Mapping[str, Any], telegram_api_url: str, pod: BotPod
) -> dict[str, Any]:
    image = spec["image"]
    container = {
        "name": "migrate",
        "image": image,
        "imagePullPolicy": spec.get("imagePullPolicy", "IfNotPresent"),
        "args": ["migrate"],
        "env": common_env(name, spec, telegram_api_url) + list(spec.get("env") or []),
        "resources": JOB_RESOURCES,
    }
    pod_spec = _pod_spec(container, pod) | {"restartPolicy": "Never"}
    return migration_job(job_name(name, image), name, image, pod_spec)


def migration_job(job: str, name: str, image: str, pod_spec: dict[str, Any]) -> dict[str, Any]:
    """A migration Job of `name`'s `image` around `pod_spec` (a Dedicated bot's or a host's)."""
    job_labels = labels(name, "migration") | {"hello-bot.dev/image-hash": image_hash(image)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job, "labels": job_labels},
        "spec": {
            "backoffLimit": 3,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 3600,
            "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
        },
    }


def render_deployment(
    name: str, spec: Mapping[str, Any], image: str, telegram_api_url: str, pod: BotPod
) -> dict[str, Any]:
    """The bot Deployment running `image` (the last image whose migration succeeded)."""
    webhook = bool(webhook_host(spec))
    container = {
        "name": "bot",
        "image": image,
        "imagePullPolicy": spec.get("imagePullPolicy", "IfNotPresent"),
        "args": ["serve" if webhook else "poll"],
        "ports": [{"name": "http", "containerPort": pod.port, "protocol": "TCP"}],
        "env": bot_env(name, spec, telegram_api_url, pod),
        **copy.deepcopy(dict(pod.container)),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(pod.pre_stop_seconds)]}}},
        "resources": copy.deepcopy(dict(spec.get("resources") or pod.resources)),
    }
    pod_spec = _pod_spec(container, pod)
    pod_spec["terminationGracePeriodSeconds"] = pod.termination_grace_period_seconds
    bot_labels = labels(name, "bot")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": bot_labels},
        "spec": {
            "replicas": int(spec.get("replicas", 1)),
            "revisionHistoryLimit": pod.revision_history_limit,
            "strategy": pod.strategy_for("webhook" if webhook else "polling"),
            "selector": {"matchLabels": selector(name)},
            "template": {"metadata": {"labels": bot_labels}, "spec": pod_spec},
        },
    }


def render_service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels(name, "bot")},
        "spec": {
            "type": "ClusterIP",
            "selector": selector(name),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def render_ingress(
    name: str, spec: Mapping[str, Any], routes: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Only the webhook path is exposed; /healthz, /readyz and /metrics stay inside.

    `routes`: path -> Service; by default the bot's own path to its own Service. A bot moving
    between runtimes has two for a while: the old URL stays routed until Telegram uses the new.
    """
    webhook = spec["webhook"]
    host = webhook_host(spec)
    paths = routes or {webhook_path(spec): name}
    ingress_spec: dict[str, Any] = {
        "rules": [
            {
                "host": host,
                "http": {
                    "paths": [
                        {
                            "path": path,
                            "pathType": "Exact",
                            "backend": {"service": {"name": service, "port": {"name": "http"}}},
                        }
                        for path, service in sorted(paths.items())
                    ]
                },
            }
        ]
    }
    if webhook.get("ingressClassName"):
        ingress_spec["ingressClassName"] = webhook["ingressClassName"]
    if webhook.get("tlsSecretName"):
        ingress_spec["tls"] = [{"hosts": [host], "secretName": webhook["tlsSecretName"]}]
    metadata: dict[str, Any] = {"name": name, "labels": labels(name, "bot")}
    if webhook.get("annotations"):
        metadata["annotations"] = dict(webhook["annotations"])
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": ingress_spec,
    }
