"""Manifest rendering and spec validation: pure functions."""

from __future__ import annotations

import base64
from typing import Any

import kubernetes_validate
import pytest
from hello_operator import bot_manifests
from hello_operator.pod_shape import load_bot_pod

API = "http://127.0.0.1:9/bot-api"
# The checkout's chart: the same shape the operator image ships.
POD = load_bot_pod()


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "image": "registry.example/hello-bot:1.0.0",
        "token": {"secretName": "bot-token"},
        "webhook": {"host": "bot.example.com"},
    }
    return base | overrides


def env_of(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container["env"]}


def secret_files(manifest: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The files the container finds in SECRETS_DIR: file name -> its Secret's name and key."""
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "secrets"]
    assert {e["name"]: e.get("value") for e in container["env"]}["SECRETS_DIR"] == (
        mount["mountPath"]
    )
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
    return {
        item["path"]: {"name": source["secret"]["name"], "key": item["key"]}
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }


def with_meta(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest["metadata"]["namespace"] = "bots"
    return manifest


@pytest.mark.parametrize(
    "manifest",
    [
        with_meta(bot_manifests.render_deployment("echo", spec(), "img:1", API, POD)),
        with_meta(bot_manifests.render_deployment("echo", spec(webhook=None), "img:1", API, POD)),
        with_meta(bot_manifests.render_job("echo", spec(), API, POD)),
        with_meta(bot_manifests.render_service("echo")),
        with_meta(
            bot_manifests.render_ingress(
                "echo", spec(webhook={"host": "a.example.com", "tlsSecretName": "tls"})
            )
        ),
        with_meta(bot_manifests.render_generated_secret("echo", {"WEBHOOK_SECRET": "s"})),
    ],
    ids=["deployment", "deployment-polling", "job", "service", "ingress", "secret"],
)
def test_children_match_kubernetes_schemas(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, "1.33.0", strict=True)


def test_valid_spec_has_no_problems() -> None:
    assert bot_manifests.validate_spec(spec()) == []
    assert bot_manifests.validate_spec(spec(webhook=None, replicas=1)) == []


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (spec(webhook={"host": "https://bot.example.com"}), "not a DNS name"),
        (spec(webhook={"host": "bot.example.com:8443"}), "not a DNS name"),
        (spec(webhook={"host": "localhost"}), "not a DNS name"),
        (spec(webhook={"host": "bot.example.com", "path": "hook"}), "must start with '/'"),
        (spec(webhook=None, replicas=2), "exactly 1 replica"),
        (spec(image=""), "spec.image is required"),
        (spec(token={}), "spec.token.secretName is required"),
        (spec(database={"mode": "External"}), "external.secretName is required"),
        (spec(env=[{"name": "BOT_TOKEN", "value": "x"}]), "BOT_TOKEN"),
    ],
)
def test_bad_specs_are_named(bad: dict[str, Any], fragment: str) -> None:
    problems = bot_manifests.validate_spec(bad)
    assert len(problems) == 1
    assert fragment in problems[0]


def test_deployment_follows_the_runtime_contract() -> None:
    deployment = bot_manifests.render_deployment("echo", spec(replicas=2), "img:1", API, POD)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["serve"]
    assert container["image"] == "img:1"
    assert deployment["spec"]["replicas"] == 2
    env = env_of(deployment)
    # Secrets are files in SECRETS_DIR, named after their settings; none is a variable.
    assert secret_files(deployment) == {
        "bot_token": {"name": "bot-token", "key": "BOT_TOKEN"},
        "database_url": {"name": "echo-generated", "key": "DATABASE_URL"},
        "webhook_secret": {"name": "echo-generated", "key": "WEBHOOK_SECRET"},
    }
    assert not {"BOT_TOKEN", "DATABASE_URL", "WEBHOOK_SECRET"} & env.keys()
    assert env["WEBHOOK_URL"]["value"] == "https://bot.example.com"
    assert env["WEBHOOK_PATH"]["value"] == "/webhook"
    assert env["PROJECT_NAME"]["value"] == "echo"
    assert env["TELEGRAM_API_URL"]["value"] == API
    assert env["ENVIRONMENT"]["value"] == "production"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"] == POD.resources
    assert container["resources"]["limits"]["memory"] == "256Mi"
    # No variable takes a Secret's value.
    assert not [e for e in env.values() if "secretKeyRef" in e.get("valueFrom", {})]


def test_pods_are_restricted() -> None:
    for manifest in (
        bot_manifests.render_deployment("echo", spec(), "img:1", API, POD),
        bot_manifests.render_job("echo", spec(), API, POD),
    ):
        pod = manifest["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsUser"] == 10001
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert "limits" in container["resources"]


def test_polling_runs_one_recreated_pod_without_webhook_env() -> None:
    deployment = bot_manifests.render_deployment("echo", spec(webhook=None), "img:1", API, POD)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"] == ["poll"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not {"WEBHOOK_URL", "WEBHOOK_SECRET"} & env_of(deployment).keys()


def test_external_database_and_redis_come_from_secrets() -> None:
    external = spec(
        database={"mode": "External", "external": {"secretName": "db", "key": "URL"}},
        redis={"secretName": "redis"},
        env=[{"name": "LOG_LEVEL", "value": "DEBUG"}],
    )
    deployment = bot_manifests.render_deployment("echo", external, "img:1", API, POD)
    files = secret_files(deployment)
    assert files["database_url"] == {"name": "db", "key": "URL"}
    assert files["redis_url"] == {"name": "redis", "key": "REDIS_URL"}
    assert env_of(deployment)["LOG_LEVEL"]["value"] == "DEBUG"
    # The migration Job reads the same database file, and no token.
    job = bot_manifests.render_job("echo", external, API, POD)
    assert secret_files(job) == {
        "database_url": {"name": "db", "key": "URL"},
        "redis_url": {"name": "redis", "key": "REDIS_URL"},
    }


def test_a_spec_env_secret_of_the_same_setting_stays_a_variable() -> None:
    # spec.env comes after the operator's entries and wins, as a variable wins over a file.
    ref = {"secretKeyRef": {"name": "mine", "key": "URL"}}
    own = spec(redis={"secretName": "redis"}, env=[{"name": "REDIS_URL", "valueFrom": ref}])
    deployment = bot_manifests.render_deployment("echo", own, "img:1", API, POD)
    assert secret_files(deployment)["redis_url"] == {"name": "redis", "key": "REDIS_URL"}
    assert env_of(deployment)["REDIS_URL"]["valueFrom"] == ref


def test_job_is_named_by_image_and_runs_migrate() -> None:
    job_1 = bot_manifests.render_job("echo", spec(image="img:1"), API, POD)
    job_2 = bot_manifests.render_job("echo", spec(image="img:2"), API, POD)
    assert job_1["metadata"]["name"] != job_2["metadata"]["name"]
    assert job_1["metadata"]["name"] == bot_manifests.job_name("echo", "img:1")
    container = job_1["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate"]
    assert "BOT_TOKEN" not in env_of(job_1)  # migrations need no token
    assert container["resources"]["limits"]["memory"] == "256Mi"
    assert len(bot_manifests.job_name("x" * 63, "img:1")) <= 63


def test_ingress_exposes_only_the_webhook_path() -> None:
    ingress = bot_manifests.render_ingress(
        "echo",
        spec(webhook={"host": "bot.example.com", "path": "/tg", "ingressClassName": "traefik"}),
    )
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "bot.example.com"
    assert [p["path"] for p in rule["http"]["paths"]] == ["/tg"]
    assert rule["http"]["paths"][0]["pathType"] == "Exact"
    assert ingress["spec"]["ingressClassName"] == "traefik"


def test_generated_secret_is_base64() -> None:
    secret = bot_manifests.render_generated_secret("echo", {"WEBHOOK_SECRET": "s3cret"})
    assert base64.b64decode(secret["data"]["WEBHOOK_SECRET"]) == b"s3cret"
    assert secret["metadata"]["name"] == "echo-generated"
