"""k8s/deploy/rbac.yaml: the CD identity may manage what the chart renders, in one namespace,
and nothing more."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from .conftest import Render
from .helpers import REPO_ROOT, TOKEN

RBAC = REPO_ROOT / "k8s" / "deploy" / "rbac.yaml"
NAMESPACE = "hello-bot"
MANAGE = {"get", "list", "watch", "create", "update", "patch", "delete"}
# Group and resource of every kind the chart can render.
RESOURCES = {
    "ConfigMap": ("", "configmaps"),
    "Secret": ("", "secrets"),
    "Service": ("", "services"),
    "ServiceAccount": ("", "serviceaccounts"),
    "Pod": ("", "pods"),
    "Deployment": ("apps", "deployments"),
    "StatefulSet": ("apps", "statefulsets"),
    "Job": ("batch", "jobs"),
    "Ingress": ("networking.k8s.io", "ingresses"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
}
# Every variant that changes which kinds the chart renders.
VARIANTS: list[dict[str, Any]] = [
    {},
    {"ingress": {"enabled": True, "host": "bot.example.com"}},
    {"postgresql": {"enabled": False}, "externalDatabase": {"host": "db.example.com"}},
    {"redis": {"enabled": False}},
    {"bot": {"mode": "polling", "hotReload": True}},
]


def _objects() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(RBAC.read_text()) if doc]


def _role() -> dict[str, Any]:
    (role,) = [o for o in _objects() if o["kind"] == "Role"]
    return role


def granted(role: dict[str, Any], group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in role["rules"]:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs |= set(rule["verbs"])
    return verbs


def test_objects_are_valid_kubernetes() -> None:
    for obj in _objects():
        kubernetes_validate.validate(obj, "1.33.0", strict=True)


def test_everything_is_namespaced_in_the_bots_namespace() -> None:
    kinds = [o["kind"] for o in _objects()]
    assert sorted(kinds) == ["Namespace", "Role", "RoleBinding", "Secret", "ServiceAccount"]
    for obj in _objects():
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == NAMESPACE
            labels = obj["metadata"]["labels"]
            assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE


def test_the_binding_gives_the_role_to_the_deployer_only() -> None:
    (binding,) = [o for o in _objects() if o["kind"] == "RoleBinding"]
    (account,) = [o for o in _objects() if o["kind"] == "ServiceAccount"]
    (token,) = [o for o in _objects() if o["kind"] == "Secret"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": _role()["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert token["type"] == "kubernetes.io/service-account-token"
    assert (
        token["metadata"]["annotations"]["kubernetes.io/service-account.name"]
        == (account["metadata"]["name"])
    )


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(v) or "default")
def test_the_role_manages_every_kind_the_chart_renders(render: Render, variant: dict) -> None:
    values = {"secret": {"botToken": TOKEN}, **variant}
    kinds = {obj["kind"] for obj in render(values)}
    assert kinds <= set(RESOURCES), kinds - set(RESOURCES)
    for kind in kinds:
        group, resource = RESOURCES[kind]
        assert granted(_role(), group, resource) >= MANAGE, kind


def test_the_deployer_cannot_install_the_operator(render: Render) -> None:
    """docs/operations.md: the operator's cluster-scoped RBAC is out of the deployer's reach, so
    CD keeps operator.enabled false and the operator runs from k8s/operator."""
    values = {"secret": {"botToken": TOKEN}, "operator": {"enabled": True}}
    kinds = {obj["kind"] for obj in render(values)}
    assert {"ClusterRole", "ClusterRoleBinding"} <= kinds
    assert granted(_role(), "rbac.authorization.k8s.io", "clusterroles") == set()
    assert granted(_role(), "rbac.authorization.k8s.io", "clusterrolebindings") == set()


def test_helm_can_keep_its_release_records_and_show_test_logs() -> None:
    assert granted(_role(), "", "secrets") >= MANAGE  # storage driver `secret`
    assert granted(_role(), "", "pods/log") == {"get"}


def test_nothing_beyond_the_chart() -> None:
    role = _role()
    for rule in role["rules"]:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])
        assert "rbac.authorization.k8s.io" not in rule["apiGroups"]
    for group, resource in [
        ("", "pods/exec"),
        ("", "pods/portforward"),
        ("", "pods/attach"),
        ("", "namespaces"),
        ("", "nodes"),
        ("", "persistentvolumes"),
    ]:
        assert granted(role, group, resource) == set(), resource
    assert granted(role, "", "persistentvolumeclaims") == {"get", "list", "watch"}


def test_the_least_privilege_check_would_catch_a_wildcard() -> None:
    role = {"rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]}
    assert granted(role, "", "pods/exec") == {"create"}
