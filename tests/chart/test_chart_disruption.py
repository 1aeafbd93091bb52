"""pdb.* and bot.topologySpreadConstraints: a disruption budget only where there are replicas to
spare, never one that blocks draining a node, and spread constraints that select the bot."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from .helpers import FULLNAME, REQUIRED, Manifest, deep_merge, find, one

BOT_SELECTOR = {
    "app.kubernetes.io/name": "hello-bot",
    "app.kubernetes.io/instance": "demo",
    "app.kubernetes.io/component": "bot",
}
HOSTNAME_SPREAD = {
    "maxSkew": 1,
    "topologyKey": "kubernetes.io/hostname",
    "whenUnsatisfiable": "ScheduleAnyway",
}


def _replicas(count: int, **pdb: Any) -> dict[str, Any]:
    return {"bot": {"replicaCount": count}, "pdb": pdb}


def _evictable(budget: dict[str, Any], replicas: int) -> int:
    """Pods the disruption controller lets `kubectl drain` evict when all are healthy
    (Kubernetes rounds a percentage up for both fields)."""

    def scaled(value: int | str) -> int:
        if isinstance(value, str):
            percent = int(value.rstrip("%"))
            return -(-percent * replicas // 100)
        return value

    if "minAvailable" in budget:
        return max(0, replicas - scaled(budget["minAvailable"]))
    return scaled(budget["maxUnavailable"])


def test_one_replica_gets_no_budget(default_objects: list[Manifest], render) -> None:
    assert find(default_objects, "PodDisruptionBudget") == []
    # Even a budget asked for explicitly: with one Pod it could only block or allow everything.
    assert find(render(_replicas(1, minAvailable=1)), "PodDisruptionBudget") == []


@pytest.mark.parametrize(
    ("replicas", "pdb", "field", "expected"),
    [
        (2, {}, "maxUnavailable", 1),
        (3, {"minAvailable": 2}, "minAvailable", 2),
        (4, {"minAvailable": "50%"}, "minAvailable", "50%"),
        (3, {"maxUnavailable": "34%"}, "maxUnavailable", "34%"),
        (2, {"maxUnavailable": 1}, "maxUnavailable", 1),
    ],
)
def test_replicas_get_a_budget_that_lets_a_node_drain(
    render, replicas: int, pdb: dict[str, Any], field: str, expected: int | str
) -> None:
    objects = render(_replicas(replicas, **pdb))
    budget = one(objects, "PodDisruptionBudget", FULLNAME)
    kubernetes_validate.validate(budget, "1.33.0", strict=True)
    spec = budget["spec"]
    assert spec["selector"]["matchLabels"] == BOT_SELECTOR
    assert {k: v for k, v in spec.items() if k != "selector"} == {field: expected}
    assert _evictable(spec, replicas) >= 1
    assert one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"].items() >= (
        BOT_SELECTOR.items()
    )


def test_pdb_create_false_renders_none(render) -> None:
    assert (
        find(render({"bot": {"replicaCount": 2}, "pdb": {"create": False}}), "PodDisruptionBudget")
        == []
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (_replicas(2, minAvailable=2), "pdb.minAvailable: 2 of 2 bot Pods leaves none evictable"),
        (_replicas(3, minAvailable="70%"), "pdb.minAvailable: 70% of 3 bot Pods leaves none"),
        (_replicas(2, maxUnavailable=0), "pdb.maxUnavailable: 0 allows no eviction"),
        (_replicas(2, maxUnavailable="0%"), "pdb.maxUnavailable: 0 allows no eviction"),
        (_replicas(3, minAvailable=1, maxUnavailable=1), "not both"),
    ],
)
def test_a_budget_that_blocks_draining_is_refused(
    render, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError) as caught:
        render(values)
    assert message in str(caught.value)


def test_the_refusal_matches_what_kubernetes_would_allow(render) -> None:
    """The chart's arithmetic agrees with the disruption controller's at the boundary."""
    # 66% of 3 rounds up to 2: one Pod evictable, accepted.
    spec = one(render(_replicas(3, minAvailable="66%")), "PodDisruptionBudget")["spec"]
    assert _evictable(spec, 3) == 1
    # 67% of 3 rounds up to 3: nothing evictable, refused.
    with pytest.raises(helm.HelmError, match="67% of 3"):
        render(_replicas(3, minAvailable="67%"))


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"pdb": {"minAvailable": "half"}}, "/pdb/minAvailable"),
        ({"pdb": {"maxUnavailable": -1}}, "/pdb/maxUnavailable"),
        ({"bot": {"topologySpreadConstraints": [{"maxSkew": 1}]}}, "topologySpreadConstraints/0"),
        (
            {"bot": {"topologySpreadConstraints": [{**HOSTNAME_SPREAD, "maxSkew": 0}]}},
            "topologySpreadConstraints/0/maxSkew",
        ),
    ],
)
def test_schema_rejects_bad_disruption_values(
    chart: helm.Chart, values: dict[str, Any], where: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(deep_merge(REQUIRED, values))
    assert where in str(caught.value)


def _spread(objects: list[Manifest]) -> list[dict[str, Any]] | None:
    return one(objects, "Deployment")["spec"]["template"]["spec"].get("topologySpreadConstraints")


def test_no_spread_constraints_by_default(default_objects: list[Manifest]) -> None:
    assert _spread(default_objects) is None


def test_spread_constraints_select_the_bot_unless_they_say_otherwise(render) -> None:
    zone = {
        "maxSkew": 2,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "custom"}},
    }
    objects = render(
        {"bot": {"replicaCount": 2, "topologySpreadConstraints": [HOSTNAME_SPREAD, zone]}}
    )
    hostname, kept = _spread(objects)
    assert hostname == {**HOSTNAME_SPREAD, "labelSelector": {"matchLabels": BOT_SELECTOR}}
    assert kept == zone
    kubernetes_validate.validate(one(objects, "Deployment"), "1.33.0", strict=True)
