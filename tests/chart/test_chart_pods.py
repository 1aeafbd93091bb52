"""Properties of every Pod the chart creates: probes, resources, the memory budget, Pod
Security Standard `restricted`, service account tokens, rollout on config change."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import (
    FULLNAME,
    VARIANTS,
    Manifest,
    all_containers,
    env_of,
    find,
    mebibytes,
    one,
    pod_spec,
    workloads,
)

BUDGET_MIB = 1024
JOB_LIMIT_MIB = 256


def _bot(objects: list[Manifest]) -> dict[str, Any]:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def test_bot_probes_use_the_contract_endpoints(default_objects: list[Manifest]) -> None:
    (container,) = _bot(default_objects)["containers"]
    assert container["args"] == ["serve"]
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_data_stores_have_probes(default_objects: list[Manifest]) -> None:
    for name, tool in (("postgresql", "pg_isready"), ("redis", "redis-cli")):
        spec = one(default_objects, "StatefulSet", f"{FULLNAME}-{name}")["spec"]["template"]
        (container,) = spec["spec"]["containers"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert tool in " ".join(container[probe]["exec"]["command"]), (name, probe)


@pytest.mark.parametrize(("pre_stop", "grace", "period"), [(5, 20, 35), (0, 20, 21), (10, 45, 60)])
def test_termination_grace_exceeds_pre_stop_plus_drain(
    render, pre_stop: int, grace: int, period: int
) -> None:
    objects = render(
        {
            "bot": {
                "preStopSeconds": pre_stop,
                "shutdownGraceSeconds": grace,
                "terminationGracePeriodSeconds": period,
            }
        }
    )
    spec = _bot(objects)
    (container,) = spec["containers"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(pre_stop)]
    assert one(objects, "ConfigMap", FULLNAME)["data"]["SHUTDOWN_GRACE_SECONDS"] == str(grace)
    assert spec["terminationGracePeriodSeconds"] == period > pre_stop + grace


def test_rolling_update_never_drops_below_the_ready_replicas(
    default_objects: list[Manifest],
) -> None:
    strategy = one(default_objects, "Deployment")["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


def test_downward_api_feeds_the_tracing_attributes(default_objects: list[Manifest]) -> None:
    env = env_of(_bot(default_objects)["containers"][0])
    assert env["K8S_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["K8S_NAMESPACE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["K8S_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    names = list(env)
    # $(VAR) expands only variables defined earlier in the list.
    assert names.index("OTEL_RESOURCE_ATTRIBUTES") > names.index("K8S_NODE_NAME")
    attributes = env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    assert "k8s.pod.name=$(K8S_POD_NAME)" in attributes
    assert "k8s.namespace.name=$(K8S_NAMESPACE_NAME)" in attributes
    assert "k8s.node.name=$(K8S_NODE_NAME)" in attributes


def test_config_and_secret_changes_roll_the_pods(render) -> None:
    def annotations(values: dict[str, Any]) -> dict[str, str]:
        return one(render(values), "Deployment")["spec"]["template"]["metadata"]["annotations"]

    base = annotations({"secret": {"webhookSecret": "a", "databasePassword": "p"}})
    same = annotations({"secret": {"webhookSecret": "a", "databasePassword": "p"}})
    config = annotations(
        {"secret": {"webhookSecret": "a", "databasePassword": "p"}, "bot": {"logLevel": "DEBUG"}}
    )
    secret = annotations({"secret": {"webhookSecret": "b", "databasePassword": "p"}})
    assert base == same
    assert config["checksum/config"] != base["checksum/config"]
    assert config["checksum/secret"] == base["checksum/secret"]
    assert secret["checksum/secret"] != base["checksum/secret"]
    assert secret["checksum/config"] == base["checksum/config"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_container_has_requests_and_limits(
    rendered_variants: dict[str, list[Manifest]], variant: str
) -> None:
    for obj in workloads(rendered_variants[variant]):
        for container in all_containers(pod_spec(obj)):
            resources = container.get("resources", {})
            where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
            for key in ("requests", "limits"):
                assert set(resources.get(key, {})) >= {"cpu", "memory"}, where
            requested = mebibytes(resources["requests"]["memory"])
            assert requested <= mebibytes(resources["limits"]["memory"]), where


def long_running_memory_mib(objects: list[Manifest]) -> float:
    """Memory limits of all rendered long-running containers x replicas (the operator's
    Deployment included when operator.enabled renders it)."""
    total = 0.0
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        replicas = obj["spec"].get("replicas", 1)
        for container in obj["spec"]["template"]["spec"]["containers"]:
            total += replicas * mebibytes(container["resources"]["limits"]["memory"])
    return total


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_memory_budget_fits_a_2gb_node(
    rendered_variants: dict[str, list[Manifest]], variant: str
) -> None:
    assert long_running_memory_mib(rendered_variants[variant]) <= BUDGET_MIB


def test_default_budget_numbers(rendered_variants: dict[str, list[Manifest]]) -> None:
    """The numbers in the README's budget table."""
    off = long_running_memory_mib(rendered_variants["default"])
    on = long_running_memory_mib(rendered_variants["operator-on"])
    assert (off, on) == (256 + 320 + 96, 256 + 320 + 96 + 128)


def test_budget_counts_the_rendered_operator_container(render) -> None:
    """The operator's share comes from its rendered container, not from a reserve: changing
    operator.resources changes the total by exactly that much."""
    on = render({"operator": {"enabled": True}})
    operator = one(on, "Deployment", f"{FULLNAME}-operator")
    (container,) = pod_spec(operator)["containers"]
    assert container["resources"]["limits"]["memory"] == "128Mi"
    bigger = render(
        {
            "operator": {
                "enabled": True,
                "resources": {
                    "requests": {"cpu": "20m", "memory": "96Mi"},
                    "limits": {"cpu": "200m", "memory": "200Mi"},
                },
            }
        }
    )
    assert long_running_memory_mib(bigger) - long_running_memory_mib(on) == 200 - 128


def test_budget_check_catches_an_oversized_release(render) -> None:
    values = {"bot": {"replicaCount": 2}, "operator": {"enabled": True}}
    assert long_running_memory_mib(render(values)) > BUDGET_MIB


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_job_and_test_pod_stays_under_256_mib(
    rendered_variants: dict[str, list[Manifest]], variant: str
) -> None:
    short_lived = [o for o in rendered_variants[variant] if o["kind"] in ("Job", "Pod")]
    assert {o["kind"] for o in short_lived} == {"Job", "Pod"}
    for obj in short_lived:
        spec = pod_spec(obj)
        # Effective Pod memory: init containers run one at a time, app containers together.
        inits = [
            mebibytes(c["resources"]["limits"]["memory"]) for c in spec.get("initContainers", [])
        ]
        apps = sum(mebibytes(c["resources"]["limits"]["memory"]) for c in spec["containers"])
        assert max([apps, *inits]) <= JOB_LIMIT_MIB, obj["metadata"]["name"]


RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_meets_pod_security_restricted(
    rendered_variants: dict[str, list[Manifest]], variant: str
) -> None:
    for obj in workloads(rendered_variants[variant]):
        spec = pod_spec(obj)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] > 0
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(forbidden), forbidden
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume
        for container in all_containers(spec):
            assert container["securityContext"] == RESTRICTED_CONTAINER, container["name"]
            assert "ports" not in container or all("hostPort" not in p for p in container["ports"])


def test_bot_and_data_stores_run_as_their_image_users(default_objects: list[Manifest]) -> None:
    uids = {
        obj["metadata"]["name"]: pod_spec(obj)["securityContext"]["runAsUser"]
        for obj in workloads(default_objects)
    }
    assert uids[FULLNAME] == 10001
    assert uids[f"{FULLNAME}-postgresql"] == 999
    assert uids[f"{FULLNAME}-redis"] == 999


def test_read_only_root_leaves_writable_scratch(default_objects: list[Manifest]) -> None:
    mounts = {
        obj["metadata"]["name"]: {
            m["mountPath"] for m in pod_spec(obj)["containers"][0].get("volumeMounts", [])
        }
        for obj in workloads(default_objects)
    }
    assert "/tmp" in mounts[FULLNAME]
    assert {"/var/run/postgresql", "/tmp", "/dev/shm", "/var/lib/postgresql/data"} <= mounts[
        f"{FULLNAME}-postgresql"
    ]
    assert {"/data", "/etc/redis"} <= mounts[f"{FULLNAME}-redis"]
    shm = {
        v["name"]: v
        for v in pod_spec(one(default_objects, "StatefulSet", f"{FULLNAME}-postgresql"))["volumes"]
    }["shm"]
    assert shm["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_only_the_operator_mounts_a_service_account_token(
    rendered_variants: dict[str, list[Manifest]], variant: str
) -> None:
    objects = rendered_variants[variant]
    operator_name = f"{FULLNAME}-operator"
    for obj in workloads(objects):
        spec = pod_spec(obj)
        if obj["metadata"]["name"] == operator_name:
            # It watches TelegramBots and creates their children through the API.
            assert spec["automountServiceAccountToken"] is True
            assert spec["serviceAccountName"] == operator_name
        else:
            assert spec["automountServiceAccountToken"] is False, obj["metadata"]["name"]
            assert spec["serviceAccountName"] == FULLNAME
    for account in find(objects, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False, account["metadata"]["name"]
    enabled = VARIANTS[variant].get("operator", {}).get("enabled", False)
    expected = {FULLNAME, operator_name} if enabled else {FULLNAME}
    assert {a["metadata"]["name"] for a in find(objects, "ServiceAccount")} == expected


def test_selectors_hold_only_immutable_labels(default_objects: list[Manifest]) -> None:
    allowed = {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
    }
    selectors = [
        o["spec"]["selector"]["matchLabels"]
        for o in default_objects
        if o["kind"] in ("Deployment", "StatefulSet")
    ]
    selectors += [o["spec"]["selector"] for o in default_objects if o["kind"] == "Service"]
    assert len(selectors) == 6
    for selector in selectors:
        assert set(selector) <= allowed
        assert selector["app.kubernetes.io/instance"] == "demo"
    # Distinct components: no workload selects another's Pods.
    assert len({tuple(sorted(s.items())) for s in selectors[:3]}) == 3


def test_images_are_pinned(rendered_variants: dict[str, list[Manifest]]) -> None:
    for objects in rendered_variants.values():
        for obj in workloads(objects):
            for container in all_containers(pod_spec(obj)):
                image = container["image"]
                tag = image.rsplit(":", 1)[1]
                assert tag not in ("latest", "") and any(ch.isdigit() for ch in tag), image


def test_postgresql_is_tuned_for_its_limit(default_objects: list[Manifest]) -> None:
    container = pod_spec(one(default_objects, "StatefulSet", f"{FULLNAME}-postgresql"))[
        "containers"
    ][0]
    args = container["args"]
    settings = dict(arg.split("=", 1) for arg in args[1::2])
    assert all(flag == "-c" for flag in args[0::2])
    limit = mebibytes(container["resources"]["limits"]["memory"])
    shared = mebibytes(settings["shared_buffers"].replace("MB", "Mi"))
    assert shared <= limit / 4
    assert int(settings["max_connections"]) >= 2 * (5 + 10) + 2  # surge Pod + migration
    claim = one(default_objects, "StatefulSet", f"{FULLNAME}-postgresql")["spec"][
        "volumeClaimTemplates"
    ][0]
    assert claim["spec"]["storageClassName"] == "local-path"


def test_redis_maxmemory_is_below_its_limit(default_objects: list[Manifest]) -> None:
    conf = one(default_objects, "ConfigMap", f"{FULLNAME}-redis")["data"]["redis.conf"]
    settings = dict(
        line.split(" ", 1) for line in conf.splitlines() if line and not line.startswith("#")
    )
    container = pod_spec(one(default_objects, "StatefulSet", f"{FULLNAME}-redis"))["containers"][0]
    limit = mebibytes(container["resources"]["limits"]["memory"])
    maxmemory = mebibytes(settings["maxmemory"].replace("mb", "Mi"))
    assert maxmemory <= limit * 0.6
    assert settings["maxmemory-policy"] == "volatile-lru"
    assert settings["save"] != '""'
    assert container["command"] == ["redis-server", "/etc/redis/redis.conf"]


def test_tracing_is_off_by_default_and_samples_a_ratio_when_on(
    render, default_objects: list[Manifest]
) -> None:
    config = one(default_objects, "ConfigMap", FULLNAME)["data"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in config
    assert "OTEL_TRACES_SAMPLER" not in config
    objects = render({"bot": {"otel": {"exporterOtlpEndpoint": "http://collector:4318"}}})
    config = one(objects, "ConfigMap", FULLNAME)["data"]
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert config["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert config["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
