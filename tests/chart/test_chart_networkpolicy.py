"""NetworkPolicies: default deny, then only the flows the release needs."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import FULLNAME, VARIANTS, Manifest, find, one

BOT = {"app.kubernetes.io/component": "bot"}


def _policies(objects: list[Manifest]) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p["spec"] for p in find(objects, "NetworkPolicy")}


def _ports(rule: dict[str, Any]) -> set[tuple[Any, str]]:
    return {(p["port"], p["protocol"]) for p in rule.get("ports", [])}


def _component(peer: dict[str, Any]) -> str | None:
    return peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")


def test_default_deny_covers_every_pod_of_the_release(default_objects: list[Manifest]) -> None:
    deny = _policies(default_objects)[f"{FULLNAME}-default-deny"]
    assert deny["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "hello-bot",
        "app.kubernetes.io/instance": "demo",
    }
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny
    assert "egress" not in deny
    # Every Pod template carries the labels the deny policy selects.
    for obj in default_objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert deny["podSelector"]["matchLabels"].items() <= labels.items()


def test_bot_ingress_only_from_the_ingress_controller(default_objects: list[Manifest]) -> None:
    bot = _policies(default_objects)[FULLNAME]
    assert bot["podSelector"]["matchLabels"].items() >= BOT.items()
    (rule,) = bot["ingress"]
    controller, test_pod = rule["from"]
    assert controller["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }
    assert controller["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "traefik"}
    assert _component(test_pod) == "test"
    assert _ports(rule) == {("http", "TCP")}


def test_bot_egress_dns_data_stores_and_https(default_objects: list[Manifest]) -> None:
    egress = _policies(default_objects)[FULLNAME]["egress"]
    dns, postgresql, redis, https = egress
    assert _ports(dns) == {(53, "UDP"), (53, "TCP")}
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert _component(postgresql["to"][0]) == "postgresql"
    assert _ports(postgresql) == {(5432, "TCP")}
    assert _component(redis["to"][0]) == "redis"
    assert _ports(redis) == {(6379, "TCP")}
    assert _ports(https) == {(443, "TCP")}
    assert https["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]


def test_telegram_egress_can_be_narrowed(render) -> None:
    objects = render({"networkPolicy": {"telegramCidrs": ["149.154.160.0/20", "91.108.4.0/22"]}})
    https = _policies(objects)[FULLNAME]["egress"][-1]
    assert [peer["ipBlock"]["cidr"] for peer in https["to"]] == [
        "149.154.160.0/20",
        "91.108.4.0/22",
    ]


def test_data_stores_accept_only_their_clients(default_objects: list[Manifest]) -> None:
    policies = _policies(default_objects)
    (pg_rule,) = policies[f"{FULLNAME}-postgresql"]["ingress"]
    assert sorted(_component(p) for p in pg_rule["from"]) == ["bot", "migration"]
    (redis_rule,) = policies[f"{FULLNAME}-redis"]["ingress"]
    assert [_component(p) for p in redis_rule["from"]] == ["bot"]
    for name in (f"{FULLNAME}-postgresql", f"{FULLNAME}-redis"):
        assert "egress" not in policies[name]
        assert "Egress" in policies[name]["policyTypes"]


def test_migration_job_reaches_only_dns_and_postgresql(default_objects: list[Manifest]) -> None:
    migration = _policies(default_objects)[f"{FULLNAME}-migration"]
    assert "ingress" not in migration
    dns, postgresql = migration["egress"]
    assert _ports(dns) == {(53, "UDP"), (53, "TCP")}
    assert _component(postgresql["to"][0]) == "postgresql"


def test_external_stores_are_reached_on_their_ports(
    rendered_variants: dict[str, list[Manifest]],
) -> None:
    external_pg = _policies(rendered_variants["external-postgresql"])
    assert f"{FULLNAME}-postgresql" not in external_pg
    assert _ports(external_pg[FULLNAME]["egress"][1]) == {(6432, "TCP")}
    assert _ports(external_pg[f"{FULLNAME}-migration"]["egress"][1]) == {(6432, "TCP")}
    external_redis = _policies(rendered_variants["external-redis"])
    assert f"{FULLNAME}-redis" not in external_redis
    assert _ports(external_redis[FULLNAME]["egress"][2]) == {(6380, "TCP")}


def test_no_redis_means_no_redis_egress(rendered_variants: dict[str, list[Manifest]]) -> None:
    egress = _policies(rendered_variants["no-redis"])[FULLNAME]["egress"]
    assert len(egress) == 3
    assert all((6379, "TCP") not in _ports(rule) for rule in egress)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_template_has_an_allow_policy(
    rendered_variants: dict[str, list[Manifest]], variant: str
) -> None:
    objects = rendered_variants[variant]
    policies = _policies(objects)
    selected = {
        spec["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
        for spec in policies.values()
    }
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            labels = obj["spec"]["template"]["metadata"]["labels"]
        elif obj["kind"] == "Pod":
            labels = obj["metadata"]["labels"]
        else:
            continue
        assert labels["app.kubernetes.io/component"] in selected, obj["metadata"]["name"]


def test_policies_can_be_switched_off(render) -> None:
    assert find(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy") == []


def test_policy_names_are_unique(default_objects: list[Manifest]) -> None:
    names = [p["metadata"]["name"] for p in find(default_objects, "NetworkPolicy")]
    assert len(names) == len(set(names)) == 6
    assert one(default_objects, "NetworkPolicy", f"{FULLNAME}-test")


def test_extra_ingress_opens_metrics_scraping(render) -> None:
    scrape = {
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}],
        "ports": [{"port": "http", "protocol": "TCP"}],
    }
    ingress = _policies(render({"networkPolicy": {"extraIngress": [scrape]}}))[FULLNAME]["ingress"]
    assert len(ingress) == 2
    assert ingress[1] == scrape
