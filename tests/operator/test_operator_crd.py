"""The CRD is structurally sound; examples pass its schema and bad specs do not."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hello_operator import references

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "k8s" / "examples").glob("*.yaml"))


def name_fields(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every spec field that names an object (a Secret, an IngressClass)."""
    return {
        path: node
        for path, node in walk(schema_of(crd)["properties"]["spec"], "spec")
        if path.endswith(("secretName", "SecretName", "ClassName"))
    }


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for key, child in (node.get("properties") or {}).items():
        found += walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        found += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_crd_identity_and_subresources(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "telegrambots.hello-bot.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == "TelegramBot"
    assert crd["spec"]["names"]["shortNames"] == ["tgbot"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Ready", "Phase", "Webhook", "Host", "Age"]


def test_schema_is_structural(crd: dict[str, Any]) -> None:
    """Every node has a type unless it is int-or-string; the status keeps kopf's own fields."""
    schema = schema_of(crd)
    untyped = [
        path
        for path, node in walk(schema)
        if "type" not in node and not node.get("x-kubernetes-int-or-string")
    ]
    assert untyped == []
    assert schema["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True
    jsonschema.Draft7Validator.check_schema(schema)


def test_defaults_satisfy_their_own_schema(crd: dict[str, Any]) -> None:
    with_defaults = [(p, n) for p, n in walk(schema_of(crd)) if "default" in n]
    assert len(with_defaults) >= 6
    for _path, node in with_defaults:
        jsonschema.validate(node["default"], node)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(crd: dict[str, Any], example: Path) -> None:
    doc = yaml.safe_load(example.read_text())
    assert doc["apiVersion"] == f"{crd['spec']['group']}/v1alpha1"
    jsonschema.validate(doc, schema_of(crd))


BAD_SPECS = {
    "no-image": lambda s: s.pop("image"),
    "no-token": lambda s: s.pop("token"),
    "url-as-host": lambda s: s["webhook"].update(host="https://bot.example.com"),
    "host-with-port": lambda s: s["webhook"].update(host="bot.example.com:8443"),
    "relative-path": lambda s: s["webhook"].update(path="webhook"),
    "negative-replicas": lambda s: s.update(replicas=-1),
    "unknown-policy": lambda s: s.update(deletionPolicy="Purge"),
    "unknown-db-mode": lambda s: s.update(database={"mode": "Sqlite"}),
    "env-without-name": lambda s: s.update(env=[{"value": "x"}]),
    # Names of objects in the bot's namespace: no path can be smuggled through them.
    "token-path": lambda s: s["token"].update(secretName="../../kube-system/secrets/victim"),
    "token-slash": lambda s: s["token"].update(secretName="kube-system/victim"),
    "token-upper": lambda s: s["token"].update(secretName="Token"),
    "token-too-long": lambda s: s["token"].update(secretName="a" * 254),
    "database-path": lambda s: s.update(
        database={"mode": "External", "external": {"secretName": "../x"}}
    ),
    "redis-path": lambda s: s.update(redis={"secretName": "../../kube-system/secrets/victim"}),
    "tls-path": lambda s: s["webhook"].update(tlsSecretName="../x"),
    "ingress-class-path": lambda s: s["webhook"].update(ingressClassName="a/b"),
}


@pytest.mark.parametrize("mutate", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_bad_specs_are_rejected(crd: dict[str, Any], mutate: Any) -> None:
    doc = yaml.safe_load((ROOT / "k8s" / "examples" / "telegrambot.yaml").read_text())
    bad = copy.deepcopy(doc)
    mutate(bad["spec"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema_of(crd))


def test_every_object_name_has_the_kubernetes_name_pattern(crd: dict[str, Any]) -> None:
    """The same pattern the operator checks itself (hello_operator.references), for a CRD that
    an older chart applied or objects stored before it."""
    fields = name_fields(crd)
    assert set(fields) == {
        "spec.token.secretName",
        "spec.database.external.secretName",
        "spec.redis.secretName",
        "spec.webhook.tlsSecretName",
        "spec.webhook.ingressClassName",
    }
    assert {f"spec.{'.'.join(path)}" for path in references.SPEC_FIELDS} == set(fields)
    for node in fields.values():
        assert node["pattern"] == references.SUBDOMAIN_PATTERN
        assert node["maxLength"] == references.SUBDOMAIN_MAX


@pytest.mark.parametrize("name", ["bot-token", "a", "tls.example-com", "a" * 253])
def test_honest_names_pass(crd: dict[str, Any], name: str) -> None:
    doc = yaml.safe_load((ROOT / "k8s" / "examples" / "telegrambot.yaml").read_text())
    doc["spec"]["token"]["secretName"] = name
    doc["spec"]["redis"] = {"secretName": name}
    jsonschema.validate(doc, schema_of(crd))
    references.check(doc["spec"], {})
