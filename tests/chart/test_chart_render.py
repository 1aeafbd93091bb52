"""The chart renders for every documented variant, lints strict, and every manifest is valid
against the Kubernetes 1.29 and 1.33 OpenAPI schemas."""

from __future__ import annotations

import re

import helm_python as helm
import kubernetes_validate
import pytest

from .helpers import CHART_DIR, FULLNAME, REQUIRED, VARIANTS, Manifest, deep_merge, find, one

KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_lint_strict_is_clean(variant: str) -> None:
    report = helm.lint(
        CHART_DIR,
        deep_merge(REQUIRED, VARIANTS[variant]),
        strict=True,
        namespace="bots",
        kube_version="v1.29.0",
    )
    assert report["errors"] == []
    # Severity 1 is informational ("icon is recommended"); warnings and errors fail.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_manifests_match_kubernetes_schema(
    rendered_variants: dict[str, list[Manifest]], variant: str, kube_version: str
) -> None:
    objects = rendered_variants[variant]
    assert objects
    for obj in objects:
        # strict: unknown fields are errors too. The return value is the schema version used.
        used = kubernetes_validate.validate(obj, kube_version, strict=True)
        assert used == kube_version.rsplit(".", 1)[0], obj["metadata"]["name"]


def test_upgrade_render_is_valid_too(render, default_objects: list[Manifest]) -> None:
    upgrade = render(is_upgrade=True)

    def names(objects: list[Manifest]) -> list[tuple[str, str]]:
        # The migration Job is named after the release revision (1 installs, 2 upgrades).
        return sorted((o["kind"], re.sub(r"-\d+$", "-N", o["metadata"]["name"])) for o in objects)

    # The same release as an install (the migration Job runs on every upgrade too): an empty or
    # partial render would pass the validation below unnoticed.
    assert names(upgrade) == names(default_objects)
    assert ("Job", f"{FULLNAME}-migrate-N") in names(upgrade)
    for obj in upgrade:
        for kube_version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, kube_version, strict=True)


def test_invalid_manifest_is_caught_by_the_validator(default_objects: list[Manifest]) -> None:
    """The validation above can fail: a misspelt field is rejected."""
    deployment = one(default_objects, "Deployment")
    broken = deep_merge(deployment, {"spec": {"replicas": "one"}})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33.0", strict=True)


def test_default_release_has_every_component(default_objects: list[Manifest]) -> None:
    kinds = sorted({obj["kind"] for obj in default_objects})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Job",
        "NetworkPolicy",
        "Pod",
        "Secret",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
    names = {obj["metadata"]["name"] for obj in find(default_objects, "StatefulSet")}
    assert names == {f"{FULLNAME}-postgresql", f"{FULLNAME}-redis"}
    assert find(default_objects, "Ingress") == []


def _container_env(objects: list[Manifest]) -> dict[str, dict]:
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {entry["name"]: entry for entry in container["env"]}


def _config(objects: list[Manifest]) -> dict[str, str]:
    return one(objects, "ConfigMap", FULLNAME)["data"]


def test_external_postgresql_variant(rendered_variants: dict[str, list[Manifest]]) -> None:
    objects = rendered_variants["external-postgresql"]
    assert find(objects, "StatefulSet", f"{FULLNAME}-postgresql") == []
    assert find(objects, "Service", f"{FULLNAME}-postgresql") == []
    url = _container_env(objects)["DATABASE_URL"]["value"]
    # The password is the file database_password in SECRETS_DIR (test_chart_secrets.py).
    assert url == "postgresql+asyncpg://hellobot@db.example.internal:6432/hellobot"


def test_no_redis_variant_uses_the_memory_cache(
    rendered_variants: dict[str, list[Manifest]],
) -> None:
    objects = rendered_variants["no-redis"]
    assert find(objects, "StatefulSet", f"{FULLNAME}-redis") == []
    assert "REDIS_URL" not in _config(objects)
    assert "REDIS_URL" not in _container_env(objects)


def test_bundled_redis_url_points_at_its_service(default_objects: list[Manifest]) -> None:
    assert _config(default_objects)["REDIS_URL"] == f"redis://{FULLNAME}-redis:6379/0"
    assert one(default_objects, "Service", f"{FULLNAME}-redis")["spec"]["ports"][0]["port"] == 6379


def test_external_redis_url_comes_from_the_secret(
    rendered_variants: dict[str, list[Manifest]],
) -> None:
    objects = rendered_variants["external-redis"]
    assert "REDIS_URL" not in _config(objects)
    # A file in SECRETS_DIR, not a variable (test_chart_secrets.py).
    assert "REDIS_URL" not in _container_env(objects)
    (volume,) = [
        v
        for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "secrets"
    ]
    assert {"key": "redis-url", "path": "redis_url"} in volume["secret"]["items"]
    assert "redis-url" in one(objects, "Secret", FULLNAME)["data"]


def test_ingress_exposes_only_the_webhook_path(
    rendered_variants: dict[str, list[Manifest]],
) -> None:
    ingress = one(rendered_variants["ingress-tls"], "Ingress")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "traefik"
    assert spec["tls"] == [{"hosts": ["bot.example.com"], "secretName": "bot-example-com-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "bot.example.com"
    paths = rule["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/webhook", "Exact")]
    assert paths[0]["backend"]["service"] == {"name": FULLNAME, "port": {"name": "http"}}
    annotations = ingress["metadata"]["annotations"]
    assert annotations["traefik.ingress.kubernetes.io/router.tls"] == "true"
    # The bot registers https://<host><path> with Telegram.
    assert _config(rendered_variants["ingress-tls"])["WEBHOOK_URL"] == "https://bot.example.com"


def test_ingress_follows_a_custom_webhook_path(render) -> None:
    objects = render(
        {"ingress": {"enabled": True, "host": "bot.example.com"}, "bot": {"webhookPath": "/tg/x"}}
    )
    paths = one(objects, "Ingress")["spec"]["rules"][0]["http"]["paths"]
    assert [p["path"] for p in paths] == ["/tg/x"]
    assert _config(objects)["WEBHOOK_PATH"] == "/tg/x"
