"""The k3s server configuration for a 2 GB node keeps what the chart relies on."""

from __future__ import annotations

from pathlib import Path

import yaml

from .helpers import REPO_ROOT

K3S = REPO_ROOT / "k8s" / "k3s"


def _kubelet_args() -> dict[str, str]:
    config = yaml.safe_load((K3S / "config.yaml").read_text())
    return dict(arg.split("=", 1) for arg in config["kubelet-arg"])


def test_config_keeps_what_the_chart_needs() -> None:
    config = yaml.safe_load((K3S / "config.yaml").read_text())
    disabled = set(config["disable"])
    assert "metrics-server" in disabled
    # Ingress, its node ports, the local-path StorageClass and DNS are used by the chart.
    assert not disabled & {"traefik", "servicelb", "local-storage", "coredns"}
    assert not config.get("disable-network-policy", False)
    assert not config.get("cluster-init", False)


def test_kubelet_reserves_memory_and_evicts_before_the_oom_killer() -> None:
    args = _kubelet_args()
    assert "memory=" in args["kube-reserved"]
    assert "memory=" in args["system-reserved"]
    hard = dict(item.split("<", 1) for item in args["eviction-hard"].split(","))
    soft = dict(item.split("<", 1) for item in args["eviction-soft"].split(","))
    assert hard["memory.available"] == "100Mi"
    assert soft["memory.available"] == "200Mi"
    assert "memory.available" in args["eviction-soft-grace-period"]


def test_allocatable_memory_holds_the_release_budget() -> None:
    args = _kubelet_args()

    def reserved(value: str) -> int:
        parts = dict(item.split("=", 1) for item in value.split(","))
        return int(parts["memory"].removesuffix("Mi"))

    allocatable = 2048 - reserved(args["kube-reserved"]) - reserved(args["system-reserved"]) - 100
    assert allocatable >= 1024 + 256  # the release's limit budget plus one Job


def test_traefik_config_is_a_helm_chart_config() -> None:
    doc = yaml.safe_load((K3S / "traefik-config.yaml").read_text())
    assert doc["kind"] == "HelmChartConfig"
    assert doc["metadata"] == {"name": "traefik", "namespace": "kube-system"}
    values = yaml.safe_load(doc["spec"]["valuesContent"])
    assert set(values["resources"]["limits"]) == {"cpu", "memory"}


def test_readme_explains_the_file() -> None:
    text = Path(K3S / "README.md").read_text()
    for term in ("kube-reserved", "system-reserved", "eviction-hard", "metrics-server"):
        assert term in text


def _seconds(duration: str) -> float:
    """A Go duration as Traefik's values take it: `10s`, `2m`."""
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]]


def test_traefik_drops_requests_that_do_not_arrive_in_time() -> None:
    doc = yaml.safe_load((K3S / "traefik-config.yaml").read_text())
    ports = yaml.safe_load(doc["spec"]["valuesContent"])["ports"]
    for entrypoint in ("web", "websecure"):
        timeouts = ports[entrypoint]["transport"]["respondingTimeouts"]
        # A half-sent request is dropped within seconds (a Telegram update is a few KiB) ...
        assert 0 < _seconds(timeouts["readTimeout"]) <= 30, entrypoint
        # ... while the bot's slowest valid answer (56 s: docs/reference.md) still gets out.
        assert _seconds(timeouts["writeTimeout"]) > 56, entrypoint
        assert _seconds(timeouts["idleTimeout"]) > 0, entrypoint
