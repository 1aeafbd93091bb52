"""A small async Kubernetes REST client: the five verbs the operator needs, over aiohttp.

kopf logs in with its own client; this one reuses kopf's login helpers (service account in a pod,
kubeconfig elsewhere) so both talk to the same API server with the same identity.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from hello_operator.references import is_name, is_namespace

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

# kind -> plural; the API prefix comes from the manifest's apiVersion.
PLURALS = {
    "Secret": "secrets",
    "Service": "services",
    "Deployment": "deployments",
    "Job": "jobs",
    "Ingress": "ingresses",
    "TelegramBot": "telegrambots",
    "EndpointSlice": "endpointslices",
}

TRANSIENT_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"Kubernetes API {status} {reason}: {message}")
        self.status = status
        self.reason = reason

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_STATUSES


class InvalidName(ValueError):
    """A namespace or name that is not a Kubernetes name never becomes part of an API path."""


class ForeignObjectError(Exception):
    """The API answered with an object from another namespace than the one asked for."""


def _segment(value: str, *, namespace: bool = False) -> str:
    valid = is_namespace(value) if namespace else is_name(value)
    if not valid:
        what = "namespace" if namespace else "object name"
        msg = f"refusing an API path with {what} {str(value)[:80]!r}: not a Kubernetes name"
        raise InvalidName(msg)
    # A valid name needs no quoting; quoting anyway keeps any future slip a single segment.
    return quote(value, safe="")


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{_segment(namespace, namespace=True)}/{PLURALS[kind]}"


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    return f"{collection_path(api_version, kind, namespace)}/{_segment(name)}"


def path_namespace(path: str) -> str | None:
    """The namespace a path built here asks in (segments are names, so a split is exact)."""
    parts = path.split("?", 1)[0].split("/")
    return parts[parts.index("namespaces") + 1] if "namespaces" in parts else None


def check_namespace(path: str, payload: Mapping[str, Any]) -> None:
    """Refuse an answer holding an object of another namespace than `path` asked in."""
    asked = path_namespace(path)
    if asked is None:
        return
    for obj in [payload, *(payload.get("items") or [])]:
        found = (obj.get("metadata") or {}).get("namespace") if isinstance(obj, Mapping) else None
        if found is not None and found != asked:
            msg = f"asked in namespace {asked}, the API answered with an object of {found!r}"
            raise ForeignObjectError(msg)


def manifest_path(manifest: Mapping[str, Any]) -> str:
    meta = manifest["metadata"]
    return object_path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    if info.ca_path:
        return ssl.create_default_context(cafile=str(info.ca_path))
    if info.ca_data:
        data = info.ca_data.encode() if isinstance(info.ca_data, str) else info.ca_data
        return ssl.create_default_context(cadata=base64.b64decode(data).decode())
    return True


class KubeClient:
    """get / create / merge-patch / delete, plus create-or-patch for child objects."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        server: str,
        token: str | None = None,
        token_path: Path | None = None,
        ssl_context: ssl.SSLContext | bool = True,
    ) -> None:
        self._session = session
        self._server = server.rstrip("/")
        self._token = token
        self._token_path = token_path
        self._ssl = ssl_context

    @classmethod
    def from_connection(cls, info: kopf.ConnectionInfo) -> KubeClient:
        in_cluster = info.token is not None and SERVICE_ACCOUNT_TOKEN.exists()
        return cls(
            session=aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)),
            server=info.server,
            token=info.token,
            # Projected service account tokens rotate: read the file on every request.
            token_path=SERVICE_ACCOUNT_TOKEN if in_cluster else None,
            ssl_context=_ssl_context(info),
        )

    async def close(self) -> None:
        await self._session.close()

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        token = self._token_path.read_text().strip() if self._token_path else self._token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, content_type: str = ""
    ) -> dict[str, Any]:
        async with self._session.request(
            method,
            self._server + path,
            json=body,
            headers=self._headers(content_type or None),
            ssl=self._ssl,
            # A redirect would lead to a path nobody validated.
            allow_redirects=False,
        ) as response:
            try:
                payload: dict[str, Any] = await response.json(content_type=None) or {}
            except ValueError:  # e.g. an HTML error page from a proxy in front of the API
                payload = {}
            if not 200 <= response.status < 300:  # a 3xx too: redirects are not followed
                raise ApiError(
                    response.status,
                    str(payload.get("reason", response.reason)),
                    str(payload.get("message", "")),
                )
            check_namespace(path, payload)
            return payload

    async def get(self, path: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._request("POST", path, body, "application/json")

    async def patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._request("PATCH", path, body, "application/merge-patch+json")

    async def delete(self, path: str) -> bool:
        """Delete an object; False if it was already gone."""
        try:
            await self._request("DELETE", path)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create the object, or merge-patch it into the desired state if it exists."""
        meta = manifest["metadata"]
        collection = collection_path(manifest["apiVersion"], manifest["kind"], meta["namespace"])
        try:
            return await self.create(collection, manifest)
        except ApiError as exc:
            if exc.status != 409:
                raise
        return await self.patch(manifest_path(manifest), manifest)

    async def ensure(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create the object unless it exists; never change an existing one (Jobs are immutable)."""
        existing = await self.get(manifest_path(manifest))
        if existing is not None:
            return existing
        meta = manifest["metadata"]
        collection = collection_path(manifest["apiVersion"], manifest["kind"], meta["namespace"])
        return await self.create(collection, manifest)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's decoded data, or None if there is no such Secret."""
        secret = await self.get(object_path("v1", "Secret", namespace, name))
        if secret is None:
            return None
        data = secret.get("data") or {}
        return {key: base64.b64decode(value).decode() for key, value in data.items()}
