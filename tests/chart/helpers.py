"""Shared helpers for the chart tests: values variants, parsing, a fake Kubernetes API."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "hello-bot"
RELEASE = "demo"
NAMESPACE = "bots"
FULLNAME = "demo-hello-bot"
TOKEN = "123456:test-token-value-not-a-real-one_xyz"

# The values every render needs: the chart refuses to render without a bot token.
REQUIRED: dict[str, Any] = {"secret": {"botToken": TOKEN}}

# Every documented variant (README "Variants"), as the values a user would pass.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "external-postgresql": {
        "postgresql": {"enabled": False},
        "externalDatabase": {"host": "db.example.internal", "port": 6432},
    },
    "no-redis": {"redis": {"enabled": False}},
    "external-redis": {
        "redis": {"enabled": False},
        "externalRedis": {"url": "redis://:s3cret@cache.example.internal:6380/0"},
    },
    "ingress-tls": {
        "ingress": {
            "enabled": True,
            "host": "bot.example.com",
            "tls": {"enabled": True, "secretName": "bot-example-com-tls"},
        }
    },
    "existing-secret": {"secret": {"existingSecret": "hello-bot-credentials", "botToken": ""}},
    "host": {
        "bot": {"mode": "host", "bots": {"existingSecret": "hello-bot-bots"}},
        "secret": {"botToken": ""},
        "ingress": {"enabled": True, "host": "bots.example.com"},
    },
    "operator-on": {"operator": {"enabled": True}},
    "backup": {"backup": {"enabled": True}},
    "two-replicas": {
        "bot": {
            "replicaCount": 2,
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                }
            ],
        }
    },
    "operator-external-admin": {
        "operator": {
            "enabled": True,
            "sharedPostgres": {"existingSecret": "pg-admin", "host": "pg.example.internal"},
        },
        "postgresql": {"enabled": False},
        "externalDatabase": {"host": "db.example.internal"},
    },
}

# Everything the chart can render at once, beyond the variants: the operator with the bundled
# PostgreSQL, backups, and every monitoring object (the checkov run; a ServiceMonitor and a
# PodMonitor exclude each other, so the PodMonitor gets a render of its own).
ALL_ON: dict[str, dict[str, Any]] = {
    "all-on": {
        "operator": {"enabled": True},
        "backup": {"enabled": True},
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
        },
    },
    "pod-monitor": {"metrics": {"podMonitor": {"enabled": True}}},
}

# Kinds that belong to no namespace; every other object the chart renders names its namespace.
CLUSTER_SCOPED_KINDS = frozenset(
    {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}
)

Manifest = dict[str, Any]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge override into a copy of base, recursively (like Helm's values coalescing)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_manifests(rendered: dict[str, str]) -> list[Manifest]:
    """Rendered template files to objects (NOTES.txt and empty documents dropped)."""
    objects: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                document.setdefault("metadata", {}).setdefault("annotations", {})
                objects.append(document)
    return objects


def find(objects: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]


def one(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob", "Pod")


def pod_spec(obj: Manifest) -> dict[str, Any]:
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def workloads(objects: list[Manifest]) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def mebibytes(quantity: str | int) -> float:
    """A Kubernetes memory quantity in MiB."""
    text = str(quantity)
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "k": 1000 / 1024**2, "M": 1000**2 / 1024**2}
    units["G"] = 1000**3 / 1024**2
    for suffix in ("Ki", "Mi", "Gi", "k", "M", "G"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text) / 1024**2


# --- a loopback stand-in for the Kubernetes API, for `lookup` ------------------------------


class FakeApiServer:
    """Answers the two requests Helm's `lookup` makes for a core/v1 Secret: API discovery
    (/api/v1) and the GET of the object. Objects live in `secrets[(namespace, name)]`."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def add_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.secrets[(namespace, name)] = {
            key: base64.b64encode(value.encode()).decode() for key, value in data.items()
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                api.requests.append(path)
                parts = path.strip("/").split("/")
                body: dict[str, Any] | None = None
                if path == "/api/v1":
                    body = {
                        "kind": "APIResourceList",
                        "groupVersion": "v1",
                        "resources": [
                            {
                                "name": "secrets",
                                "singularName": "secret",
                                "namespaced": True,
                                "kind": "Secret",
                                "verbs": ["get", "list"],
                            }
                        ],
                    }
                elif len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"]:
                    data = api.secrets.get((parts[3], parts[5]))
                    if parts[4] == "secrets" and data is not None:
                        body = {
                            "apiVersion": "v1",
                            "kind": "Secret",
                            "metadata": {"name": parts[5], "namespace": parts[3]},
                            "type": "Opaque",
                            "data": data,
                        }
                if body is None:
                    body = {"kind": "Status", "reason": "NotFound", "code": 404}
                payload = json.dumps(body).encode()
                self.send_response(body.get("code", 200))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the tests assert on `requests` instead."""

        return Handler

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
