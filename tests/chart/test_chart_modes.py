"""bot.mode, bot.hotReload and image.digest: what they render, and what they refuse."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from .helpers import REQUIRED, deep_merge, one

DIGEST = "sha256:" + "0f" * 32


def _bot(render, values: dict[str, Any]) -> dict[str, Any]:
    deployment = one(render(values), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_webhook_mode_is_the_default_and_probes_over_http(render) -> None:
    container = _bot(render, {})
    assert container["args"] == ["serve"]
    assert "command" not in container
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_polling_mode_runs_poll_with_the_same_http_probes(render) -> None:
    container = _bot(render, {"bot": {"mode": "polling"}})
    assert container["args"] == ["poll"]
    # `python -m bot poll` serves /healthz, /readyz and /metrics too (bot/serving/polling.py).
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(("mode", "command"), [("polling", "poll"), ("webhook", "serve")])
def test_hot_reload_runs_the_mode_under_watchfiles(render, mode: str, command: str) -> None:
    container = _bot(render, {"bot": {"mode": mode, "hotReload": True}})
    assert container["command"][0] == "watchfiles"
    assert f"python -m bot {command}" in container["command"]
    assert container["command"][-1] == "/app/bot"
    assert "args" not in container
    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_digest_pins_the_image(render) -> None:
    container = _bot(render, {"image": {"tag": "1.2.3", "digest": DIGEST}})
    assert container["image"] == f"ghcr.io/hello-bot/hello-bot:1.2.3@{DIGEST}"
    job = one(render({"image": {"tag": "1.2.3", "digest": DIGEST}}), "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"].endswith(DIGEST)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"bot": {"mode": "longpoll"}}, "/bot/mode"),
        ({"bot": {"hotReload": "yes"}}, "/bot/hotReload"),
        ({"image": {"digest": "sha256:short"}}, "/image/digest"),
    ],
)
def test_schema_rejects_bad_mode_values(chart: helm.Chart, values: dict, where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(deep_merge(REQUIRED, values))
    assert where in str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"bot": {"mode": "polling"}, "ingress": {"enabled": True, "host": "bot.example.com"}},
            "ingress.enabled: bot.mode is polling",
        ),
        ({"bot": {"mode": "polling", "replicaCount": 2}}, "bot.replicaCount: 2 polling Pods"),
    ],
)
def test_polling_refuses_inconsistent_values(render, values: dict, message: str) -> None:
    with pytest.raises(helm.HelmError) as caught:
        render(values)
    assert message in str(caught.value)


HOST = {"bot": {"mode": "host", "bots": {"existingSecret": "my-bots"}}}


def test_host_mode_runs_every_bot_of_a_secret_from_one_pod(render) -> None:
    rendered = render(deep_merge(HOST, {"ingress": {"enabled": True, "host": "bots.example.com"}}))
    deployment = one(rendered, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["host"]
    env = {e["name"]: e for e in container["env"]}
    assert env["BOTS_DIR"]["value"] == "/etc/hello-bot/bots"
    assert "BOT_TOKEN" not in env and "WEBHOOK_SECRET" not in env  # per bot, in the files
    mount = next(m for m in container["volumeMounts"] if m["name"] == "bots")
    assert (mount["mountPath"], mount["readOnly"]) == ("/etc/hello-bot/bots", True)
    assert "subPath" not in mount  # a subPath mount never sees the Secret change
    volume = next(v for v in pod["volumes"] if v["name"] == "bots")
    assert volume["secret"]["secretName"] == "my-bots"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # The migration Job brings every bot's schema to head.
    job = one(rendered, "Job")["spec"]["template"]["spec"]
    job_env = {e["name"]: e.get("value") for e in job["containers"][0]["env"]}
    assert job_env["BOTS_DIR"] == "/etc/hello-bot/bots"
    assert any(
        v["name"] == "bots" and v["secret"]["secretName"] == "my-bots" for v in job["volumes"]
    )
    # The Ingress lets Telegram reach {webhookPath}/{bot_id} and nothing else.
    [path] = one(rendered, "Ingress")["spec"]["rules"][0]["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/webhook/", "Prefix")


def test_host_mode_without_its_secret_fails_with_a_clear_message(render) -> None:
    with pytest.raises(helm.HelmError, match=r"bot\.bots\.existingSecret: bot\.mode is host"):
        render({"bot": {"mode": "host"}})


def test_host_mode_needs_no_single_bot_token(render) -> None:
    values = deep_merge(HOST, {"secret": {"botToken": ""}})
    assert one(render(values), "Deployment")
