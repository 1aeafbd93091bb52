"""Secrets stay in Secrets, and generated ones never rotate silently across upgrades."""

from __future__ import annotations

import base64
from typing import Any

import helm_python as helm
import pytest

from .helpers import (
    ALL_ON,
    CHART_DIR,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    REQUIRED,
    TOKEN,
    VARIANTS,
    FakeApiServer,
    Manifest,
    all_containers,
    deep_merge,
    env_of,
    one,
    parse_manifests,
    pod_spec,
    workloads,
)

KNOWN = {
    "secret": {
        "botToken": TOKEN,
        "webhookSecret": "webhook-secret-value-123",
        "databasePassword": "database-password-456",
    },
    "externalRedis": {"url": "redis://:redis-password-789@cache:6379/0"},
}
VALUE_SETS = {**VARIANTS, **ALL_ON}
SECRET_VALUES = (
    "test-token-value",
    "webhook-secret-value-123",
    "database-password-456",
    "redis-password-789",
)


def _decoded(secret: Manifest) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


@pytest.mark.parametrize("redis_enabled", [True, False])
def test_no_secret_value_outside_the_secret(render, redis_enabled: bool) -> None:
    objects = render(deep_merge(KNOWN, {"redis": {"enabled": redis_enabled}}))
    secret = one(objects, "Secret", FULLNAME)
    decoded = _decoded(secret)
    assert decoded["bot-token"] == TOKEN
    assert decoded["database-password"] == "database-password-456"
    assert ("redis-url" in decoded) is (not redis_enabled)
    for obj in objects:
        if obj["kind"] == "Secret":
            continue
        text = repr(obj)
        for value in SECRET_VALUES:
            assert value not in text, (
                f"{value!r} leaks into {obj['kind']}/{obj['metadata']['name']}"
            )
    # ConfigMaps in particular hold nothing secret-looking.
    for config_map in (o for o in objects if o["kind"] == "ConfigMap"):
        assert not {"BOT_TOKEN", "WEBHOOK_SECRET", "DATABASE_URL", "DATABASE_PASSWORD"} & set(
            config_map["data"]
        )


# No container takes a secret as a variable, the operator's included (SECRETS_DIR).
SECRET_ENV_EXCEPTIONS: set[tuple[str, str, str, str]] = set()


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_secrets_reach_containers_as_files_never_as_variables(render, value_set: str) -> None:
    objects = render(VALUE_SETS[value_set])
    secret_env = {
        (obj["kind"], obj["metadata"]["name"], container["name"], entry["name"])
        for obj in workloads(objects)
        for container in all_containers(pod_spec(obj))
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    secret_env_from = [
        container["name"]
        for obj in workloads(objects)
        for container in all_containers(pod_spec(obj))
        for source in container.get("envFrom", [])
        if "secretRef" in source
    ]
    assert secret_env <= SECRET_ENV_EXCEPTIONS
    assert secret_env_from == []


def _secret_files(objects: list[Manifest], kind: str) -> dict[str, str]:
    """The bot container's SECRETS_DIR: file name -> the release Secret's key."""
    spec = pod_spec(one(objects, kind))
    volumes = {v["name"]: v for v in spec["volumes"]}
    container = spec["containers"][0]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "secrets"]
    assert env_of(container)["SECRETS_DIR"]["value"] == mount["mountPath"]
    assert mount["readOnly"] is True
    secret = volumes["secrets"]["secret"]
    assert secret["secretName"] == FULLNAME
    return {item["path"]: item["key"] for item in secret["items"]}


def test_the_bot_reads_its_secrets_from_files(rendered_variants: dict[str, list[Manifest]]) -> None:
    # File names are the settings' names (bot.config reads SECRETS_DIR).
    assert _secret_files(rendered_variants["default"], "Deployment") == {
        "bot_token": "bot-token",
        "webhook_secret": "webhook-secret",
        "database_password": "database-password",
    }
    assert _secret_files(rendered_variants["external-redis"], "Deployment")["redis_url"] == (
        "redis-url"
    )
    # The bot host reads its bots' tokens from BOTS_DIR.
    assert _secret_files(rendered_variants["host"], "Deployment") == {
        "database_password": "database-password"
    }
    env = env_of(pod_spec(one(rendered_variants["default"], "Deployment"))["containers"][0])
    assert env["DATABASE_URL"]["value"] == (
        f"postgresql+asyncpg://hellobot@{FULLNAME}-postgresql:5432/hellobot"
    )
    assert not {"BOT_TOKEN", "WEBHOOK_SECRET", "DATABASE_PASSWORD", "REDIS_URL"} & set(env)


def _referenced_secrets(objects: list[Manifest]) -> set[str]:
    names: set[str] = set()
    for obj in workloads(objects):
        spec = pod_spec(obj)
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                names.add(volume["secret"]["secretName"])
            for source in volume.get("projected", {}).get("sources", []):
                if "secret" in source:
                    names.add(source["secret"]["name"])
        for container in all_containers(spec):
            names |= {
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in container.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
    return names


def test_existing_secret_is_used_everywhere(rendered_variants: dict[str, list[Manifest]]) -> None:
    objects = rendered_variants["existing-secret"]
    # The bundled PostgreSQL's admin password is the chart's own, whatever the bot's Secret.
    admin = f"{FULLNAME}-postgresql-admin"
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"] == [admin]
    assert _referenced_secrets(objects) == {"hello-bot-credentials", admin}


def test_generated_secrets_are_random_on_first_install(render) -> None:
    first = _decoded(one(render(), "Secret", FULLNAME))
    second = _decoded(one(render(), "Secret", FULLNAME))
    assert len(first["webhook-secret"]) == 48
    assert len(first["database-password"]) == 32
    assert first["webhook-secret"].isalnum()
    assert first["webhook-secret"] != second["webhook-secret"]
    assert first["database-password"] != second["database-password"]
    admin = f"{FULLNAME}-postgresql-admin"
    first_admin = _decoded(one(render(), "Secret", admin))["postgres-password"]
    second_admin = _decoded(one(render(), "Secret", admin))["postgres-password"]
    assert len(first_admin) == 32 and first_admin.isalnum()
    assert first_admin != second_admin
    assert first_admin != first["database-password"]


def _render_against(api: FakeApiServer, values: dict[str, Any]) -> list[Manifest]:
    with (
        helm.Config(kube_apiserver=api.url, namespace=NAMESPACE) as config,
        helm.Chart.load(CHART_DIR) as chart,
    ):
        rendered = config.render(
            chart,
            deep_merge(REQUIRED, values),
            name=RELEASE,
            namespace=NAMESPACE,
            revision=2,
            is_install=False,
            is_upgrade=True,
        )
    return parse_manifests(rendered)


def test_upgrade_keeps_the_generated_secrets(fake_api: FakeApiServer) -> None:
    fake_api.add_secret(
        NAMESPACE,
        FULLNAME,
        {
            "bot-token": TOKEN,
            "webhook-secret": "kept-webhook",
            "database-password": "kept-password",
        },
    )
    admin = f"{FULLNAME}-postgresql-admin"
    fake_api.add_secret(NAMESPACE, admin, {"postgres-password": "kept-admin"})
    objects = _render_against(fake_api, {})
    decoded = _decoded(one(objects, "Secret", FULLNAME))
    assert _decoded(one(objects, "Secret", admin))["postgres-password"] == "kept-admin"
    assert decoded["webhook-secret"] == "kept-webhook"
    assert decoded["database-password"] == "kept-password"
    assert f"/api/v1/namespaces/{NAMESPACE}/secrets/{FULLNAME}" in fake_api.requests
    # Stable Secret, stable checksum: an upgrade without changes does not roll the Pods.
    again = _render_against(fake_api, {})
    checksum = "checksum/secret"
    first = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"][checksum]
    second = one(again, "Deployment")["spec"]["template"]["metadata"]["annotations"][checksum]
    assert first == second


def test_explicit_values_win_over_the_stored_ones(fake_api: FakeApiServer) -> None:
    fake_api.add_secret(
        NAMESPACE, FULLNAME, {"webhook-secret": "old-webhook", "database-password": "old-password"}
    )
    decoded = _decoded(
        one(
            _render_against(fake_api, {"secret": {"webhookSecret": "new-webhook"}}),
            "Secret",
            FULLNAME,
        )
    )
    assert decoded["webhook-secret"] == "new-webhook"
    assert decoded["database-password"] == "old-password"


def test_lookup_of_another_release_does_not_leak_in(fake_api: FakeApiServer) -> None:
    fake_api.add_secret(NAMESPACE, "other-hello-bot", {"webhook-secret": "not-ours"})
    decoded = _decoded(one(_render_against(fake_api, {}), "Secret", FULLNAME))
    assert decoded["webhook-secret"] != "not-ours"
    assert len(decoded["webhook-secret"]) == 48


def test_secret_survives_uninstall(render, default_objects: list[Manifest]) -> None:
    """The PostgreSQL PVC outlives `helm uninstall`; so must the password it was made with."""
    annotations = one(default_objects, "Secret", FULLNAME)["metadata"]["annotations"]
    assert annotations["helm.sh/resource-policy"] == "keep"
    # The admin password too: a hook, which Helm never deletes on uninstall, and which exists
    # before the migration Job of an upgrade (a pre-upgrade hook itself) needs it.
    admin = one(default_objects, "Secret", f"{FULLNAME}-postgresql-admin")
    hooks = admin["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert sorted(hooks) == ["pre-install", "pre-upgrade"]
    weight = int(admin["metadata"]["annotations"]["helm.sh/hook-weight"])
    job = one(render(is_upgrade=True), "Job")
    assert weight < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
