"""The Kubernetes client's own guards: API paths only from names, objects only from where asked."""

from __future__ import annotations

import base64
from pathlib import Path

import aiohttp
import aiohttp.test_utils
import aiohttp.web
import pytest
from hello_operator import references
from hello_operator.kube import ApiError, ForeignObjectError, InvalidName, KubeClient, object_path
from operator_support import BOT_TOKEN, StampingEmulator

BAD_NAMES = ["", "..", "a/b", "../x", "UPPER", "a b", "a%2Fb", "a?b", "-a", "a" * 254, "a\nb"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_the_path_builder_refuses_what_is_not_a_name(bad: str) -> None:
    with pytest.raises(InvalidName):
        object_path("v1", "Secret", "tenant-a", bad)
    with pytest.raises(InvalidName):
        object_path("v1", "Secret", bad, "token")


def test_namespaces_are_labels_and_names_subdomains() -> None:
    assert object_path("v1", "Secret", "tenant-a", "a.b-c") == (
        "/api/v1/namespaces/tenant-a/secrets/a.b-c"
    )
    with pytest.raises(InvalidName):
        object_path("v1", "Secret", "tenant.a", "token")  # a namespace has no dots
    with pytest.raises(InvalidName):
        object_path("v1", "Secret", "a" * 64, "token")
    assert object_path("v1", "Secret", "a" * 63, "b" * 253).endswith("b" * 253)


def test_references_name_the_field_and_accept_honest_specs() -> None:
    honest = {
        "token": {"secretName": "bot-token"},
        "database": {"mode": "External", "external": {"secretName": "db.url"}},
        "redis": {"secretName": "redis"},
        "webhook": {
            "host": "x.example.com",
            "tlsSecretName": "x-tls",
            "ingressClassName": "traefik",
        },
    }
    references.check(honest, {"host": "hello-bot-host-0123456789"})
    references.check({"token": {"secretName": "t"}, "redis": {"secretName": ""}}, {})
    with pytest.raises(references.InvalidReference) as caught:
        references.check({"token": {"secretName": "t"}, "redis": {"secretName": "A"}}, {})
    assert caught.value.field == "spec.redis.secretName"
    long = "x" * 300
    with pytest.raises(references.InvalidReference) as caught:
        references.check({"token": {"secretName": long}}, {})
    assert len(str(caught.value)) < 400  # a hostile value is shown, not echoed whole


async def test_a_secret_from_another_namespace_is_refused(
    emulator: StampingEmulator, namespace: str
) -> None:
    """Whatever answers (a proxy, a broken server), a Secret the operator did not ask for is
    never used."""
    emulator.objects["v1/secrets", namespace, "token"] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "token", "namespace": "kube-system"},
        "data": {"BOT_TOKEN": base64.b64encode(b"999999:victim").decode()},
    }
    emulator.objects["v1/secrets", namespace, "mine"] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "mine", "namespace": namespace},
        "data": {"BOT_TOKEN": base64.b64encode(BOT_TOKEN.encode()).decode()},
    }
    async with aiohttp.ClientSession() as http:
        kube = KubeClient(session=http, server=str(emulator.url))
        with pytest.raises(ForeignObjectError):
            await kube.read_secret(namespace, "token")
        assert await kube.read_secret(namespace, "mine") == {"BOT_TOKEN": BOT_TOKEN}


def test_the_reason_and_the_name_rule_are_in_the_contract() -> None:
    reference = (Path(__file__).resolve().parents[2] / "docs" / "reference.md").read_text()
    rows = [line for line in reference.splitlines() if line.startswith(("| `Ready`", "| `Webhook"))]
    assert all(f"`{references.REASON}`" in row for row in rows) and len(rows) == 2
    assert f"at most {references.SUBDOMAIN_MAX}" in reference
    for path in references.SPEC_FIELDS:
        assert f"`{'.'.join(path)}`" in reference


async def test_a_redirect_is_an_error_never_followed() -> None:
    """Whatever the redirect points at was never validated as a path."""
    followed: list[str] = []

    async def redirect(_: aiohttp.web.Request) -> aiohttp.web.Response:
        raise aiohttp.web.HTTPFound("/api/v1/namespaces/kube-system/secrets/victim")

    async def victim(request: aiohttp.web.Request) -> aiohttp.web.Response:
        followed.append(request.path)
        return aiohttp.web.json_response({"metadata": {"namespace": "kube-system"}})

    app = aiohttp.web.Application()
    app.router.add_get("/api/v1/namespaces/tenant-a/secrets/token", redirect)
    app.router.add_get("/api/v1/namespaces/kube-system/secrets/victim", victim)
    server = aiohttp.test_utils.TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            kube = KubeClient(session=http, server=str(server.make_url("")))
            with pytest.raises(ApiError) as caught:
                await kube.read_secret("tenant-a", "token")
    finally:
        await server.close()
    assert caught.value.status == 302
    assert followed == []
