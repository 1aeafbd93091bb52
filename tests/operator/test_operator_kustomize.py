"""The operator's kustomize base: one small, restricted, least-privilege Deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

BASE = Path(__file__).resolve().parents[2] / "k8s" / "operator"
K8S_VERSION = "1.33.0"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((BASE / name).read_text())


def memory_mib(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024, "M": 1e6 / 2**20}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 2**20


def test_kustomization_lists_every_file() -> None:
    listed = set(load("kustomization.yaml")["resources"])
    assert {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"} <= listed
    assert "../crd" in listed


@pytest.mark.parametrize(
    "name",
    ["deployment.yaml", "clusterrole.yaml", "clusterrolebinding.yaml", "serviceaccount.yaml"],
)
def test_manifests_match_kubernetes_schemas(name: str) -> None:
    kubernetes_validate.validate(load(name), K8S_VERSION, strict=True)


def test_deployment_shape() -> None:
    deployment = load("deployment.yaml")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == [
        "kopf",
        "run",
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
        "-m",
        "hello_operator",
    ]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert memory_mib(limits["memory"]) <= 128
    assert memory_mib(requests["memory"]) <= memory_mib(limits["memory"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_rbac_is_least_privilege() -> None:
    rules = load("clusterrole.yaml")["rules"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert not [g for g in granted if "*" in g]
    # Secrets are read by name only and never deleted (a bot host's bots Secret is emptied).
    assert ("", "secrets", "list") not in granted
    assert ("", "secrets", "watch") not in granted
    assert ("", "secrets", "delete") not in granted
    # What the operator does: a bot moving to a host drops its own Deployment and Service, the
    # last bot leaving a host drops the host's (tests/operator/test_operator_runtime.py).
    for group, resource in [("", "services"), ("apps", "deployments")]:
        assert (group, resource, "delete") in granted
    assert ("hello-bot.dev", "telegrambots/status", "patch") in granted
    # A bot host's Pods are found through its Service's EndpointSlices: listed by label, only.
    slices = {g for g in granted if g[:2] == ("discovery.k8s.io", "endpointslices")}
    assert slices == {("discovery.k8s.io", "endpointslices", "list")}
    assert ("", "events", "create") in granted
    binding = load("clusterrolebinding.yaml")
    assert binding["roleRef"]["name"] == load("clusterrole.yaml")["metadata"]["name"]
    assert binding["subjects"][0]["name"] == load("serviceaccount.yaml")["metadata"]["name"]
