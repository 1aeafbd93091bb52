"""Secrets stay in Secrets, and generated ones never rotate silently across upgrades."""

from __future__ import annotations

import base64
from typing import Any

import helm_python as helm
import pytest

from .helpers import (
    CHART_DIR,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    REQUIRED,
    TOKEN,
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
    secret = one(objects, "Secret")
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


def test_secret_env_comes_from_secret_key_refs(default_objects: list[Manifest]) -> None:
    env = env_of(pod_spec(one(default_objects, "Deployment"))["containers"][0])
    for name, key in (
        ("BOT_TOKEN", "bot-token"),
        ("WEBHOOK_SECRET", "webhook-secret"),
        ("DATABASE_PASSWORD", "database-password"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": FULLNAME, "key": key}
    assert env["DATABASE_URL"]["value"] == (
        f"postgresql+asyncpg://hellobot:$(DATABASE_PASSWORD)@{FULLNAME}-postgresql:5432/hellobot"
    )
    names = list(env)
    assert names.index("DATABASE_URL") > names.index("DATABASE_PASSWORD")


def test_existing_secret_is_used_everywhere(rendered_variants: dict[str, list[Manifest]]) -> None:
    objects = rendered_variants["existing-secret"]
    assert [o for o in objects if o["kind"] == "Secret"] == []
    refs = []
    for obj in workloads(objects):
        for container in all_containers(pod_spec(obj)):
            refs += [
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in container.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            ]
    assert refs
    assert set(refs) == {"hello-bot-credentials"}


def test_generated_secrets_are_random_on_first_install(render) -> None:
    first = _decoded(one(render(), "Secret"))
    second = _decoded(one(render(), "Secret"))
    assert len(first["webhook-secret"]) == 48
    assert len(first["database-password"]) == 32
    assert first["webhook-secret"].isalnum()
    assert first["webhook-secret"] != second["webhook-secret"]
    assert first["database-password"] != second["database-password"]


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
    objects = _render_against(fake_api, {})
    decoded = _decoded(one(objects, "Secret"))
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
        one(_render_against(fake_api, {"secret": {"webhookSecret": "new-webhook"}}), "Secret")
    )
    assert decoded["webhook-secret"] == "new-webhook"
    assert decoded["database-password"] == "old-password"


def test_lookup_of_another_release_does_not_leak_in(fake_api: FakeApiServer) -> None:
    fake_api.add_secret(NAMESPACE, "other-hello-bot", {"webhook-secret": "not-ours"})
    decoded = _decoded(one(_render_against(fake_api, {}), "Secret"))
    assert decoded["webhook-secret"] != "not-ours"
    assert len(decoded["webhook-secret"]) == 48


def test_secret_survives_uninstall(default_objects: list[Manifest]) -> None:
    """The PostgreSQL PVC outlives `helm uninstall`; so must the password it was made with."""
    annotations = one(default_objects, "Secret")["metadata"]["annotations"]
    assert annotations["helm.sh/resource-policy"] == "keep"
