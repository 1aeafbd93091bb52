"""The operator behind operator.enabled: the CRD in crds/ and the RBAC rules, both one file in k8s/
that the chart links to; a one-replica restricted Deployment wired to the operator's settings,
and its NetworkPolicy."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.support.dockerfile import dockerfile_stages

from .helpers import (
    CHART_DIR,
    FULLNAME,
    NAMESPACE,
    REPO_ROOT,
    REQUIRED,
    Manifest,
    deep_merge,
    env_of,
    find,
    one,
    pod_spec,
)

OPERATOR = f"{FULLNAME}-operator"
KUSTOMIZE_BASE = REPO_ROOT / "k8s" / "operator"
CRD_SOURCE = REPO_ROOT / "k8s" / "crd" / "telegrambots.yaml"
CRD_LINK = CHART_DIR / "crds" / "telegrambots.yaml"
RBAC_SOURCE = KUSTOMIZE_BASE / "clusterrole.yaml"
RBAC_LINK = CHART_DIR / "files" / "operator-clusterrole.yaml"
ON: dict[str, Any] = {"operator": {"enabled": True}}


def _kustomize(name: str) -> dict[str, Any]:
    return yaml.safe_load((KUSTOMIZE_BASE / name).read_text())


def _container(objects: list[Manifest]) -> dict[str, Any]:
    (container,) = pod_spec(one(objects, "Deployment", OPERATOR))["containers"]
    return container


def _keys(objects: list[Manifest]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objects}


# --- the CRD ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("link", "source"), [(CRD_LINK, CRD_SOURCE), (RBAC_LINK, RBAC_SOURCE)])
def test_chart_links_to_the_one_copy_in_k8s(link: Path, source: Path) -> None:
    """crds/ cannot be templated and Helm reads no file outside the chart, so the chart holds a
    relative symlink (Helm follows it, and `helm package` stores the target's content)."""
    assert link.is_symlink()
    assert not Path(os.readlink(link)).is_absolute()
    assert link.resolve() == source.resolve()


def test_helm_loads_the_crd_from_crds_and_never_templates_it(chart: helm.Chart) -> None:
    (crd,) = chart.crds
    assert crd["name"] == "crds/telegrambots.yaml"
    assert crd["data"] == CRD_SOURCE.read_text()
    document = yaml.safe_load(crd["data"])
    assert document["kind"] == "CustomResourceDefinition"
    assert document["metadata"]["name"] == "telegrambots.hello-bot.dev"
    assert "{{" not in crd["data"]
    # Not a template: it is neither rendered nor removed by `helm uninstall`.
    assert not [t for t in chart.templates if "telegrambots" in t["name"]]


def test_readme_says_helm_never_upgrades_the_crd() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    assert "## Operator" in readme
    assert "never upgrades" in readme
    assert "kubectl apply -f charts/hello-bot/crds/telegrambots.yaml" in readme


# --- on and off -------------------------------------------------------------------------------


def test_operator_objects_render_only_when_enabled(
    rendered_variants: dict[str, list[Manifest]],
) -> None:
    off = _keys(rendered_variants["default"])
    on = _keys(rendered_variants["operator-on"])
    assert not [name for _, name in off if name.startswith(OPERATOR)]
    assert on - off == {
        ("ServiceAccount", OPERATOR),
        ("ClusterRole", OPERATOR),
        ("ClusterRoleBinding", OPERATOR),
        ("Deployment", OPERATOR),
        ("NetworkPolicy", OPERATOR),
    }
    assert off <= on


def test_operator_objects_carry_the_release_labels(
    rendered_variants: dict[str, list[Manifest]],
) -> None:
    objects = [o for o in rendered_variants["operator-on"] if o["metadata"]["name"] == OPERATOR]
    assert len(objects) == 5
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/component"] == "operator"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


# --- RBAC -------------------------------------------------------------------------------------


def test_cluster_role_rules_equal_the_kustomize_base(
    rendered_variants: dict[str, list[Manifest]],
) -> None:
    role = one(rendered_variants["operator-on"], "ClusterRole", OPERATOR)
    assert role["rules"] == _kustomize("clusterrole.yaml")["rules"]
    # Read from the linked file, never written out again in the template.
    template = (CHART_DIR / "templates" / "operator" / "clusterrole.yaml").read_text()
    assert "apiGroups" not in template


def test_a_chart_without_the_rbac_file_fails_clearly(tmp_path: Path) -> None:
    copy = tmp_path / "hello-bot"
    shutil.copytree(CHART_DIR, copy, symlinks=False)
    (copy / "files" / "operator-clusterrole.yaml").unlink()
    with helm.Chart.load(copy) as broken, pytest.raises(helm.HelmError) as caught:
        broken.render(deep_merge(REQUIRED, ON), name="demo", namespace=NAMESPACE)
    assert "files/operator-clusterrole.yaml" in str(caught.value)


def test_binding_ties_the_role_to_the_operators_service_account(
    rendered_variants: dict[str, list[Manifest]],
) -> None:
    objects = rendered_variants["operator-on"]
    binding = one(objects, "ClusterRoleBinding", OPERATOR)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": OPERATOR,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}
    ]
    assert pod_spec(one(objects, "Deployment", OPERATOR))["serviceAccountName"] == OPERATOR


def test_names_follow_the_fullname(render) -> None:
    objects = render({**ON, "fullnameOverride": "tg"})
    assert {name for _, name in _keys(objects) if "operator" in name} == {"tg-operator"}
    assert one(objects, "ClusterRoleBinding")["roleRef"]["name"] == "tg-operator"


WATCHED = ["team-a", "team-b"]
NAMESPACED: dict[str, Any] = {"operator": {"enabled": True, "watchNamespaces": WATCHED}}
# What kopf reads cluster-wide when it serves named namespaces: the CRDs (a reinstall) and the
# namespace list (whether a served namespace exists); neither holds a tenant's data.
KOPF_CLUSTER_RULES = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]


def test_watched_namespaces_get_a_role_each_and_nothing_namespaced_cluster_wide(render) -> None:
    objects = render(NAMESPACED)
    source = _kustomize("clusterrole.yaml")["rules"]
    cluster_role = one(objects, "ClusterRole", OPERATOR)
    assert cluster_role["rules"] == KOPF_CLUSTER_RULES
    roles = find(objects, "Role", OPERATOR)
    assert sorted(r["metadata"]["namespace"] for r in roles) == WATCHED
    for role in roles:
        # Every source rule but the cluster-wide one, in the source's order.
        assert role["rules"] == [r for r in source if r not in KOPF_CLUSTER_RULES]
    bindings = find(objects, "RoleBinding", OPERATOR)
    assert sorted(b["metadata"]["namespace"] for b in bindings) == WATCHED
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": OPERATOR,
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}
        ]
    assert one(objects, "ClusterRoleBinding", OPERATOR)["roleRef"]["name"] == OPERATOR


def test_watched_namespaces_are_what_kopf_serves(render) -> None:
    command = _container(render(NAMESPACED))["command"]
    assert "--all-namespaces" not in command
    assert [a for a in command if a.startswith("--namespace")] == [
        f"--namespace={ns}" for ns in WATCHED
    ]
    assert command[:2] == ["kopf", "run"]
    assert command[-2:] == ["-m", "hello_operator"]


def test_cluster_wide_mode_reads_secrets_everywhere_and_renders_no_role(
    rendered_variants: dict[str, list[Manifest]],
) -> None:
    """The default, as docs/operations.md says: one ClusterRole with every rule."""
    objects = rendered_variants["operator-on"]
    assert find(objects, "Role") == [] and find(objects, "RoleBinding") == []
    rules = one(objects, "ClusterRole", OPERATOR)["rules"]
    assert {
        "apiGroups": [""],
        "resources": ["secrets"],
        "verbs": ["get", "create", "patch"],
    } in rules
    assert "--all-namespaces" in _container(objects)["command"]


def test_watched_namespaces_render_lint_clean_valid_objects(render) -> None:
    report = helm.lint(
        CHART_DIR, deep_merge(REQUIRED, NAMESPACED), strict=True, namespace=NAMESPACE
    )
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    for obj in render(NAMESPACED):
        kubernetes_validate.validate(obj, "1.33.0", strict=True)


@pytest.mark.parametrize("bad", [["../kube-system"], ["Team"], ["a" * 64], ["a", "a"], "team-a"])
def test_watch_namespaces_must_be_namespace_names(chart: helm.Chart, bad: Any) -> None:
    with pytest.raises(helm.HelmError) as caught:
        chart.validate_schema(deep_merge(REQUIRED, {"operator": {"watchNamespaces": bad}}))
    assert "watchNamespaces" in str(caught.value)


# --- the Deployment ---------------------------------------------------------------------------


def test_deployment_matches_the_kustomize_base(
    rendered_variants: dict[str, list[Manifest]],
) -> None:
    deployment = one(rendered_variants["operator-on"], "Deployment", OPERATOR)
    base = _kustomize("deployment.yaml")
    (base_container,) = base["spec"]["template"]["spec"]["containers"]
    container = _container(rendered_variants["operator-on"])
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"} == base["spec"]["strategy"]
    assert container["command"] == base_container["command"]
    assert container["command"] == json.loads(dict(dockerfile_stages()["operator"])["ENTRYPOINT"])
    assert container["livenessProbe"] == base_container["livenessProbe"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["command"]
    assert container["resources"] == {
        "requests": {"cpu": "20m", "memory": "96Mi"},
        "limits": {"cpu": "200m", "memory": "128Mi"},
    }
    assert (
        container["resources"]["requests"]["memory"]
        == (base_container["resources"]["requests"]["memory"])
    )
    assert (
        container["resources"]["limits"]["memory"]
        == (base_container["resources"]["limits"]["memory"])
    )


def test_default_image_is_pinned_and_matches_the_kustomize_tag(chart: helm.Chart) -> None:
    image = chart.values["operator"]["image"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", image["tag"])
    (pinned,) = _kustomize("kustomization.yaml")["images"]
    assert image["tag"] == pinned["newTag"]


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ({}, "ghcr.io/hello-bot/hello-bot-operator:0.1.0"),
        (
            {"repository": "ghcr.io/me/bot-operator", "tag": "main-7-abc1234"},
            "ghcr.io/me/bot-operator:main-7-abc1234",
        ),
        (
            {"tag": "1.2.3", "digest": "sha256:" + "a" * 64},
            "ghcr.io/hello-bot/hello-bot-operator:1.2.3@sha256:" + "a" * 64,
        ),
    ],
)
def test_image_comes_from_operator_image(render, image: dict[str, str], expected: str) -> None:
    container = _container(render({"operator": {"enabled": True, "image": image}}))
    assert container["image"] == expected


def test_resources_come_from_operator_resources(render) -> None:
    resources = {
        "requests": {"cpu": "30m", "memory": "100Mi"},
        "limits": {"cpu": "300m", "memory": "160Mi"},
    }
    container = _container(render({"operator": {"enabled": True, "resources": resources}}))
    assert container["resources"] == resources


def _environ(container: dict[str, Any]) -> dict[str, str]:
    """The environment the process sees: plain values, $(VAR) expanded like the kubelet does;
    a secret reference would be a marker naming the Secret and key (there are none: secrets
    arrive as files, `_secret_files`)."""
    environ: dict[str, str] = {}
    for entry in container["env"]:
        if "value" in entry:
            environ[entry["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: environ.get(m.group(1), m.group(0)), entry["value"]
            )
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            environ[entry["name"]] = f"<{ref['name']}/{ref['key']}>"
    return environ


def _secret_files(objects: list[Manifest], root: Path) -> dict[str, str]:
    """The operator's environment with its secret volume laid out under `root` as the kubelet
    would, each file holding a marker naming the Secret and key."""
    deployment = one(objects, "Deployment", OPERATOR)
    container = _container(objects)
    environ = _environ(container)
    volumes = {
        volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]
    }
    for mount in container.get("volumeMounts", []):
        if mount["mountPath"] != environ.get("SECRETS_DIR"):
            continue
        secret = volumes[mount["name"]]["secret"]
        for item in secret["items"]:
            path = root / mount["mountPath"].lstrip("/") / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"<{secret['secretName']}/{item['key']}>")
    if "SECRETS_DIR" in environ:
        environ["SECRETS_DIR"] = str(root / environ["SECRETS_DIR"].lstrip("/"))
    return environ


@pytest.fixture
def operator_config(monkeypatch: pytest.MonkeyPatch) -> Any:
    # operator/ is a folder, not a package (it would shadow stdlib `operator`).
    monkeypatch.syspath_prepend(str(REPO_ROOT / "operator"))
    return importlib.import_module("hello_operator.settings").OperatorConfig


def test_bundled_postgresql_is_the_shared_server(
    rendered_variants: dict[str, list[Manifest]], operator_config: Any, tmp_path: Path
) -> None:
    objects = rendered_variants["operator-on"]
    env = env_of(_container(objects))
    # The password is a file, never a variable (test_chart_secrets.py checks every workload).
    assert "SHARED_POSTGRES_PASSWORD" not in env
    host = f"{FULLNAME}-postgresql.{NAMESPACE}.svc"
    # The server's superuser, not the bot's role (which is none: test_postgresql_roles.py).
    config = operator_config.from_env(_secret_files(objects, tmp_path))
    password = quote(f"<{FULLNAME}-postgresql-admin/postgres-password>", safe="")
    assert config.shared_postgres_admin_url == (
        f"postgresql://postgres:{password}@{host}:5432/hellobot"
    )
    assert (config.shared_postgres_host, config.shared_postgres_port) == (host, 5432)
    assert config.telegram_api_url == "https://api.telegram.org"
    assert (config.telegram_timeout_seconds, config.migration_poll_seconds) == (10.0, 10.0)
    assert config.blocked_retry_seconds == 60.0
    # The bundled Service really is that host's first label, on 5432.
    service = one(rendered_variants["operator-on"], "Service", f"{FULLNAME}-postgresql")
    assert service["spec"]["ports"][0]["port"] == 5432


def test_every_variable_set_is_one_the_settings_read(
    rendered_variants: dict[str, list[Manifest]],
) -> None:
    source = (REPO_ROOT / "operator" / "hello_operator" / "settings.py").read_text()
    read = set(re.findall(r'env\.get\(\s*"([A-Z_]+)"', source))
    # Secret settings are read as a file or a variable of the same name.
    secret_files = re.search(r"SECRET_FILES = \(([^)]*)\)", source)
    assert secret_files
    read |= set(re.findall(r'"([A-Z_]+)"', secret_files.group(1)))
    assert "TELEGRAM_API_URL" in read
    names = {entry["name"] for entry in _container(rendered_variants["operator-on"])["env"]}
    assert names <= read


def test_settings_are_values(render, operator_config: Any, tmp_path: Path) -> None:
    objects = render(
        {
            "bot": {"telegramApiUrl": "http://telegram-bot-api.tg:8081"},
            "operator": {
                "enabled": True,
                "telegramTimeoutSeconds": 5,
                "migrationPollSeconds": 2.5,
                "blockedRetrySeconds": 30,
                "hostPickupSeconds": 120,
            },
        }
    )
    config = operator_config.from_env(_secret_files(objects, tmp_path))
    # Empty operator.telegramApiUrl follows the bot's.
    assert config.telegram_api_url == "http://telegram-bot-api.tg:8081"
    assert config.telegram_timeout_seconds == 5.0
    assert config.migration_poll_seconds == 2.5
    assert config.blocked_retry_seconds == 30.0
    assert config.host_pickup_seconds == 120.0
    own = render({"operator": {"enabled": True, "telegramApiUrl": "https://tg.example.com"}})
    assert _environ(_container(own))["TELEGRAM_API_URL"] == "https://tg.example.com"


def test_admin_url_from_an_existing_secret(render, operator_config: Any, tmp_path: Path) -> None:
    objects = render(
        {
            "operator": {
                "enabled": True,
                "sharedPostgres": {"existingSecret": "pg-admin", "host": "pg.internal"},
            }
        }
    )
    env = env_of(_container(objects))
    assert not {"SHARED_POSTGRES_ADMIN_URL", "SHARED_POSTGRES_PASSWORD"} & set(env)
    config = operator_config.from_env(_secret_files(objects, tmp_path))
    assert config.shared_postgres_admin_url == "<pg-admin/SHARED_POSTGRES_ADMIN_URL>"
    assert (config.shared_postgres_host, config.shared_postgres_port) == ("pg.internal", 5432)


def test_the_policy_values_reach_the_operator(render, operator_config: Any, tmp_path: Path) -> None:
    objects = render(
        {
            "operator": {
                "enabled": True,
                "allowedImages": ["registry.example/hello-bot:", "registry.example/team/"],
                "allowedIngressAnnotations": ["cert-manager.io/"],
            }
        }
    )
    policy = operator_config.from_env(_secret_files(objects, tmp_path)).policy
    assert policy.images == ("registry.example/hello-bot:", "registry.example/team/")
    assert policy.annotations == ("cert-manager.io/",)
    plain = render({"operator": {"enabled": True}})
    default = operator_config.from_env(_secret_files(plain, tmp_path / "default"))
    assert default.policy.images == default.policy.annotations == ()


@pytest.mark.parametrize(
    "values",
    [
        {"operator": {"enabled": True, "sharedPostgres": {"enabled": False}}},
        {
            "operator": {"enabled": True},
            "postgresql": {"enabled": False},
            "externalDatabase": {"host": "db.example.internal"},
        },
    ],
    ids=["opted-out", "external-database"],
)
def test_no_shared_server_means_external_databases_only(
    render, values: dict[str, Any], operator_config: Any
) -> None:
    objects = render(values)
    env = env_of(_container(objects))
    assert not [name for name in env if name.startswith("SHARED_POSTGRES")]
    assert operator_config.from_env(_environ(_container(objects))).shared_postgres_admin_url == ""
    egress = _policy(objects, OPERATOR)["egress"]
    assert [_ports(rule) for rule in egress] == [
        {(53, "UDP"), (53, "TCP")},
        {(443, "TCP"), (6443, "TCP")},
        {(443, "TCP")},
        {(8080, "TCP")},  # the bot hosts' probe port, whatever the database
    ]


def test_pod_is_restricted_and_writes_only_tmp(
    rendered_variants: dict[str, list[Manifest]],
) -> None:
    spec = pod_spec(one(rendered_variants["operator-on"], "Deployment", OPERATOR))
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["enableServiceLinks"] is False
    container = _container(rendered_variants["operator-on"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = [mount for mount in container["volumeMounts"] if not mount.get("readOnly")]
    assert writable == [{"name": "tmp", "mountPath": "/tmp"}]


# --- NetworkPolicies --------------------------------------------------------------------------


def _policy(objects: list[Manifest], name: str) -> dict[str, Any]:
    return one(objects, "NetworkPolicy", name)["spec"]


def _ports(rule: dict[str, Any]) -> set[tuple[Any, str]]:
    return {(p["port"], p["protocol"]) for p in rule.get("ports", [])}


def test_operator_policy_allows_no_ingress_and_only_its_egress(
    rendered_variants: dict[str, list[Manifest]],
) -> None:
    policy = _policy(rendered_variants["operator-on"], OPERATOR)
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policy
    dns, api, postgresql, telegram, hosts = policy["egress"]
    assert _ports(dns) == {(53, "UDP"), (53, "TCP")}
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert _ports(api) == {(443, "TCP"), (6443, "TCP")}
    assert api["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
    assert _ports(postgresql) == {(5432, "TCP")}
    labels = postgresql["to"][0]["podSelector"]["matchLabels"]
    assert labels["app.kubernetes.io/component"] == "postgresql"
    assert _ports(telegram) == {(443, "TCP")}
    # The bot hosts' /readyz, on the bot port only: whether a host serves a bot yet.
    assert hosts["to"] == [
        {
            "namespaceSelector": {},
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/managed-by": "hello-bot-operator",
                    "app.kubernetes.io/component": "host",
                }
            },
        }
    ]
    assert _ports(hosts) == {(8080, "TCP")}


def test_operator_reaches_the_hosts_on_the_bot_port(
    render, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The labels are the operator's own host labels; the port follows bot.port."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "operator"))
    host_manifests = importlib.import_module("hello_operator.host_manifests")
    objects = render({**ON, "bot": {"port": 9000}})
    hosts = _policy(objects, OPERATOR)["egress"][-1]
    labels = host_manifests.host_labels("hello-bot-host-x")
    selector = hosts["to"][0]["podSelector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert _ports(hosts) == {(9000, "TCP")}


def test_operator_egress_follows_the_cidr_values(render) -> None:
    objects = render(
        {
            "operator": {"enabled": True, "sharedPostgres": {"existingSecret": "pg", "port": 6432}},
            "networkPolicy": {
                "kubeApiCidrs": ["192.0.2.10/32"],
                "externalCidrs": ["198.51.100.0/24"],
                "telegramCidrs": ["149.154.160.0/20"],
            },
        }
    )
    _, api, postgresql, telegram, _ = _policy(objects, OPERATOR)["egress"]
    assert api["to"] == [{"ipBlock": {"cidr": "192.0.2.10/32"}}]
    assert postgresql["to"] == [{"ipBlock": {"cidr": "198.51.100.0/24"}}]
    assert _ports(postgresql) == {(6432, "TCP")}
    assert telegram["to"] == [{"ipBlock": {"cidr": "149.154.160.0/20"}}]


def test_bundled_postgresql_admits_the_operator_and_its_bots(
    rendered_variants: dict[str, list[Manifest]],
) -> None:
    (rule,) = _policy(rendered_variants["operator-on"], f"{FULLNAME}-postgresql")["ingress"]
    components = [
        peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        for peer in rule["from"]
    ]
    assert components[:3] == ["bot", "migration", "operator"]
    # The operator's bots and migration Jobs, in any namespace (database.mode: Shared).
    assert rule["from"][3] == {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "hello-bot-operator"}},
    }
    assert len(rule["from"]) == 4
    (default_rule,) = _policy(rendered_variants["default"], f"{FULLNAME}-postgresql")["ingress"]
    assert len(default_rule["from"]) == 2


def test_managed_by_label_matches_what_the_operator_puts_on_its_pods(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT / "operator"))
    bot_manifests = importlib.import_module("hello_operator.bot_manifests")
    assert bot_manifests.labels("x", "bot")["app.kubernetes.io/managed-by"] == "hello-bot-operator"


def test_policies_off_means_no_operator_policy(render) -> None:
    objects = render({**ON, "networkPolicy": {"enabled": False}})
    assert find(objects, "NetworkPolicy") == []
    assert one(objects, "Deployment", OPERATOR)


def test_a_namespaced_operator_reaches_bot_hosts_only_in_its_namespaces(render) -> None:
    objects = render({"operator": {"enabled": True, "watchNamespaces": ["team-a", "team-b"]}})
    egress = _policy(objects, OPERATOR)["egress"]
    (hosts,) = [rule for rule in egress if _ports(rule) == {(8080, "TCP")}]
    (peer,) = hosts["to"]
    assert peer["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
        ]
    }
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "host"
