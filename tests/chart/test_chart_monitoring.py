"""metrics.*: the ServiceMonitor, PodMonitor and PrometheusRule are valid against
prometheus-operator's CRDs, scrape only the bot, and the scraper is let in only while a monitor
is enabled."""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from .helpers import (
    CHART_DIR,
    FULLNAME,
    NAMESPACE,
    REPO_ROOT,
    REQUIRED,
    Manifest,
    deep_merge,
    find,
    one,
)
from .prometheus import CRD_FILES, crd_errors

BOT_SELECTOR = {
    "app.kubernetes.io/name": "hello-bot",
    "app.kubernetes.io/instance": "demo",
    "app.kubernetes.io/component": "bot",
}
SCRAPER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}

# Monitoring variants: each is rendered, linted and validated like the README's variants.
MONITORING: dict[str, dict[str, Any]] = {
    "service-monitor-and-rules": {
        "metrics": {
            "serviceMonitor": {
                "enabled": True,
                "namespace": "monitoring",
                "interval": "15s",
                "scrapeTimeout": "10s",
                "labels": {"release": "kube-prometheus-stack"},
            },
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "kube-prometheus-stack"},
                "additionalRules": [
                    {"record": "hello_bot:updates:rate5m", "expr": "sum(rate(x_total[5m]))"}
                ],
            },
        }
    },
    "pod-monitor": {"metrics": {"podMonitor": {"enabled": True, "scrapeTimeout": "5s"}}},
}


@pytest.fixture(scope="module")
def monitoring(render) -> dict[str, list[Manifest]]:
    return {name: render(values) for name, values in MONITORING.items()}


def _bot_ingress(objects: list[Manifest]) -> list[dict[str, Any]]:
    return one(objects, "NetworkPolicy", FULLNAME)["spec"]["ingress"]


def _other_policies(objects: list[Manifest]) -> list[Manifest]:
    return [p for p in find(objects, "NetworkPolicy") if p["metadata"]["name"] != FULLNAME]


def test_defaults_render_no_prometheus_objects(default_objects: list[Manifest]) -> None:
    assert [o for o in default_objects if o["kind"] in CRD_FILES] == []
    assert len(_bot_ingress(default_objects)) == 1  # the ingress controller and helm test only


@pytest.mark.parametrize("variant", sorted(MONITORING))
def test_monitoring_variants_lint_strict_and_validate(
    monitoring: dict[str, list[Manifest]], variant: str
) -> None:
    report = helm.lint(
        CHART_DIR,
        deep_merge(REQUIRED, MONITORING[variant]),
        strict=True,
        namespace=NAMESPACE,
        kube_version="v1.29.0",
    )
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    crds = [o for o in monitoring[variant] if o["kind"] in CRD_FILES]
    assert crds
    for obj in crds:
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert crd_errors(obj) == [], obj["kind"]
    for obj in monitoring[variant]:
        if obj["kind"] not in CRD_FILES:
            kubernetes_validate.validate(obj, "1.33.0", strict=True)


def test_the_crd_validation_can_fail(monitoring: dict[str, list[Manifest]]) -> None:
    objects = monitoring["service-monitor-and-rules"]
    monitor = one(objects, "ServiceMonitor")
    misspelt = deep_merge(monitor, {"spec": {"endpoints": [{"port": "http", "intervall": "1m"}]}})
    assert any("intervall" in e for e in crd_errors(misspelt))
    rule = one(objects, "PrometheusRule")
    bad = deep_merge(rule, {"spec": {"groups": [{"name": "g", "rules": [{"alert": "A"}]}]}})
    assert any("'expr' is a required property" in e for e in crd_errors(bad))


def test_service_monitor_scrapes_the_bot_service_only(
    monitoring: dict[str, list[Manifest]],
) -> None:
    objects = monitoring["service-monitor-and-rules"]
    monitor = one(objects, "ServiceMonitor", FULLNAME)
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert spec["selector"]["matchLabels"] == BOT_SELECTOR
    (service,) = [
        svc
        for svc in find(objects, "Service")
        if svc["metadata"]["labels"].items() >= BOT_SELECTOR.items()
    ]
    assert service["spec"]["selector"] == BOT_SELECTOR
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "http"
    assert (endpoint["path"], endpoint["interval"], endpoint["scrapeTimeout"]) == (
        "/metrics",
        "15s",
        "10s",
    )
    # The alerts select job=<fullname>; the relabeling is what puts it there.
    assert endpoint["relabelings"] == [
        {"action": "replace", "targetLabel": "job", "replacement": FULLNAME}
    ]


def test_pod_monitor_scrapes_the_bot_pods_by_port_name(
    monitoring: dict[str, list[Manifest]],
) -> None:
    objects = monitoring["pod-monitor"]
    monitor = one(objects, "PodMonitor", FULLNAME)
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["spec"]["selector"]["matchLabels"] == BOT_SELECTOR
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert endpoint["port"] in {p["name"] for p in container["ports"]}
    assert endpoint["scrapeTimeout"] == "5s"
    assert endpoint["relabelings"][0]["replacement"] == FULLNAME
    assert find(objects, "ServiceMonitor") == find(objects, "PrometheusRule") == []


@pytest.mark.parametrize("variant", sorted(MONITORING))
def test_scraper_is_let_in_while_a_monitor_is_on(
    monitoring: dict[str, list[Manifest]], default_objects: list[Manifest], variant: str
) -> None:
    before = _bot_ingress(default_objects)
    after = _bot_ingress(monitoring[variant])
    assert after[: len(before)] == before
    (scraper,) = after[len(before) :]
    assert scraper == {"from": [SCRAPER], "ports": [{"port": "http", "protocol": "TCP"}]}
    # Nothing else opens: every other policy of the release is unchanged.
    assert _other_policies(monitoring[variant]) == _other_policies(default_objects)


def test_scraper_selectors_are_values(render) -> None:
    objects = render(
        {
            "metrics": {"podMonitor": {"enabled": True}},
            "networkPolicy": {
                "metricsScraper": {
                    # Helm merges maps: same keys replace the defaults' values.
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "observability"}
                    },
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "vmagent"}},
                }
            },
        }
    )
    peer = _bot_ingress(objects)[-1]["from"][0]
    assert peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "vmagent"}},
    }


def test_prometheus_rule_lives_where_asked_with_its_labels(render) -> None:
    rule = one(
        render(
            {
                "metrics": {
                    "podMonitor": {"enabled": True},
                    "prometheusRule": {
                        "enabled": True,
                        "namespace": "monitoring",
                        "labels": {"release": "kps"},
                    },
                }
            }
        ),
        "PrometheusRule",
    )
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "kps"
    # Rules in Prometheus's namespace still select the release's series.
    for r in rule["spec"]["groups"][0]["rules"]:
        assert f'namespace="{NAMESPACE}"' in r["expr"], r["alert"]


def test_additional_rules_are_appended(monitoring: dict[str, list[Manifest]]) -> None:
    rules = one(monitoring["service-monitor-and-rules"], "PrometheusRule")["spec"]["groups"][0][
        "rules"
    ]
    assert rules[-1] == {"record": "hello_bot:updates:rate5m", "expr": "sum(rate(x_total[5m]))"}


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_alert_is_documented_with_a_runbook_section(
    monitoring: dict[str, list[Manifest]],
) -> None:
    rules = one(monitoring["service-monitor-and-rules"], "PrometheusRule")["spec"]["groups"][0][
        "rules"
    ]
    anchors = _anchors((REPO_ROOT / "docs" / "operations.md").read_text())
    alerts = [r for r in rules if "alert" in r]
    assert len(alerts) >= 8
    for rule in alerts:
        annotations = rule["annotations"]
        assert annotations["summary"]
        assert annotations["description"]
        base, anchor = annotations["runbook_url"].split("#")
        assert base == "https://github.com/hello-bot/hello-bot/blob/main/docs/operations.md"
        assert anchor == rule["alert"].lower()
        assert anchor in anchors, f"docs/operations.md has no section for {rule['alert']}"
        assert rule["labels"]["severity"] in {"warning", "critical"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}},
            "metrics.podMonitor.enabled: metrics.serviceMonitor.enabled is true too",
        ),
        (
            {"metrics": {"prometheusRule": {"enabled": True}}},
            "metrics.prometheusRule.enabled: the alerts select the job label",
        ),
    ],
)
def test_inconsistent_metrics_values_fail_clearly(
    render, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError) as caught:
        render(values)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"serviceMonitor": {"interval": "30 seconds"}}, "/metrics/serviceMonitor/interval"),
        ({"podMonitor": {"namespace": "Monitoring"}}, "/metrics/podMonitor/namespace"),
        ({"serviceMonitor": {"labels": {"release": 1}}}, "/metrics/serviceMonitor/labels"),
        ({"prometheusRule": {"runbookBaseUrl": "docs/operations.md"}}, "runbookBaseUrl"),
        ({"prometheusRule": {"additionalRules": [{"alert": "X"}]}}, "additionalRules/0"),
        ({"grafana": {}}, "additional properties 'grafana'"),
    ],
)
def test_schema_rejects_bad_metrics_values(
    chart: helm.Chart, values: dict[str, Any], where: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(deep_merge(REQUIRED, {"metrics": values}))
    assert where in str(caught.value)
