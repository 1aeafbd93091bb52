"""Every namespaced object the chart renders names its namespace (as the Bitnami charts do), so
`helm template | kubectl apply` and scanners never guess it from the current context."""

from __future__ import annotations

import pytest

from .helpers import ALL_ON, CLUSTER_SCOPED_KINDS, NAMESPACE, VARIANTS

VALUE_SETS = {**VARIANTS, **ALL_ON}


@pytest.mark.parametrize("is_upgrade", [False, True], ids=["install", "upgrade"])
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_namespaced_object_names_the_release_namespace(
    render, value_set: str, is_upgrade: bool
) -> None:
    objects = render(VALUE_SETS[value_set], is_upgrade=is_upgrade)
    namespaced = [obj for obj in objects if obj["kind"] not in CLUSTER_SCOPED_KINDS]
    assert namespaced
    missing = [
        f"{obj['kind']}/{obj['metadata']['name']}"
        for obj in namespaced
        if obj["metadata"].get("namespace") != NAMESPACE
    ]
    assert missing == []


def test_cluster_scoped_objects_name_no_namespace(render) -> None:
    objects = render(ALL_ON["all-on"])
    cluster_scoped = [obj for obj in objects if obj["kind"] in CLUSTER_SCOPED_KINDS]
    assert {obj["kind"] for obj in cluster_scoped} >= {"ClusterRole", "ClusterRoleBinding"}
    assert all("namespace" not in obj["metadata"] for obj in cluster_scoped)


def test_a_monitor_namespace_value_still_wins(render) -> None:
    objects = render({"metrics": {"podMonitor": {"enabled": True, "namespace": "monitoring"}}})
    (monitor,) = [obj for obj in objects if obj["kind"] == "PodMonitor"]
    assert monitor["metadata"]["namespace"] == "monitoring"
