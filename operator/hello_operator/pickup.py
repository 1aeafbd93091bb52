"""Does a bot host serve a bot yet? The host's own word, from each of its ready Pods.

The host (`python -m bot host`, DESIGN.md section 8) lists every bot it serves in its `GET /readyz`
JSON, `checks.bots` (bot/hosting/host.py `BotHost.report`): `{name: {"status": "serving", "id":
bot_id}}`, another status for a bot it holds but cannot serve (`schema_behind`, `token_refused`),
and `{"<name>.env": {"status": "invalid", "error": ...}}` for a file it could not use. The kubelet
updates a mounted Secret only at its next sync, so a key just written reaches the Pods some time
later; Telegram is pointed at the host only once every ready Pod (a rolling update can have two)
reports the bot serving. The Pods are found through the host Service's EndpointSlices and asked on
the port those name (the container's `http` port, where the probes are served).

An operator that cannot ask (outside the cluster, the EndpointSlices unreadable, no Pod answers)
falls back to time: HOST_PICKUP_SECONDS after the bot's key was written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from hello_operator.kube import ApiError, KubeClient, collection_path

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# BotHost.report's status of a bot the host serves (bot/hosting/host.py HostedBot.status).
SERVING = "serving"
PORT_NAME = "http"
ASK_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class PodAddress:
    name: str  # the Pod's name (the endpoint's targetRef), else its address
    url: str  # http://address:port/readyz


@dataclass
class Pickup:
    """What the host's ready Pods report about one bot."""

    asked: int = 0
    serving: list[str] = field(default_factory=list)
    # Pods whose report does not list the bot, or "pod: serves bot id N" (another bot's file
    # under its name).
    not_loaded: list[str] = field(default_factory=list)
    # "pod: status[: error]" of Pods that hold the bot but do not serve it.
    unhealthy: list[str] = field(default_factory=list)
    # "pod: why" of ready Pods that gave no usable answer.
    unanswered: list[str] = field(default_factory=list)
    # Why no Pod could be asked at all (the EndpointSlices unreadable, no ready Pod listed).
    trouble: str = ""

    @property
    def confirmed(self) -> bool:
        """Every ready Pod reports the bot serving."""
        return self.asked > 0 and len(self.serving) == self.asked

    @property
    def refused(self) -> bool:
        """At least one Pod answered that it does not serve the bot: its word wins over time."""
        return bool(self.not_loaded or self.unhealthy)

    def _asked(self) -> str:
        return f"{self.asked} Pod{'s' if self.asked != 1 else ''} asked"

    def refusal(self, host: str) -> str:
        if self.unhealthy:
            reports = "; ".join(self.unhealthy)
            return f"host {host} reports the bot unhealthy: {reports} ({self._asked()})"
        missing = len(self.not_loaded)
        share = "" if missing == self.asked else f"{missing} of "
        # Only a Pod that still serves an older file of the bot's name has more to say.
        said = "".join(f"; {pod}" for pod in self.not_loaded if ": " in pod)
        return f"host {host} has not loaded the bot yet ({share}{self._asked()}{said})"

    def silence(self) -> str:
        """Why the host's word is missing (for the timed fallback's messages)."""
        if self.trouble:
            return self.trouble
        parts = [f"no answer from {', '.join(self.unanswered)}"]
        if self.serving:
            parts.insert(
                0, f"{', '.join(self.serving)} serve{'s' if len(self.serving) == 1 else ''} the bot"
            )
        return "; ".join(parts)


def bot_state(body: Any, name: str, bot_id: str) -> tuple[str, str]:
    """One Pod's /readyz JSON about the bot: ("serving" | "not_loaded" | "unhealthy" |
    "unanswered", detail)."""
    bots = ((body if isinstance(body, Mapping) else {}).get("checks") or {}).get("bots")
    if not isinstance(bots, Mapping):
        return "unanswered", "its /readyz lists no bots (not a bot host?)"
    entry = bots.get(name) or bots.get(f"{name}.env")
    if not isinstance(entry, Mapping):
        return "not_loaded", ""
    status = str(entry.get("status", ""))
    if status == SERVING:
        if str(entry.get("id")) != bot_id:
            # An older file of the same name with another bot's token: not this bot yet.
            return "not_loaded", f"serves bot id {entry.get('id')}"
        return "serving", ""
    error = entry.get("error")
    return "unhealthy", f"{status}: {error}" if error else status


def ready_pods(slices: Mapping[str, Any], host: str, default_port: int) -> list[PodAddress]:
    """The ready endpoints of the host Service's EndpointSlices, one address each."""
    pods: dict[str, PodAddress] = {}
    for item in slices.get("items") or []:
        labels = (item.get("metadata") or {}).get("labels") or {}
        if labels.get(SERVICE_NAME_LABEL) != host:
            continue  # the list is asked for by label; this guards against a server ignoring it
        ports = {p.get("name"): p.get("port") for p in item.get("ports") or []}
        port = int(ports.get(PORT_NAME) or default_port)
        for endpoint in item.get("endpoints") or []:
            # Unset `ready` means unknown, which the API says to read as ready.
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            addresses = endpoint.get("addresses") or []
            if not addresses:
                continue
            address = str(addresses[0])
            shown = f"[{address}]" if ":" in address else address  # IPv6 in a URL
            pod = str((endpoint.get("targetRef") or {}).get("name") or address)
            # A Pod may appear in two slices while they are rewritten: ask it once.
            pods[pod] = PodAddress(pod, f"http://{shown}:{port}/readyz")
    return list(pods.values())


async def ask_host(
    kube: KubeClient, namespace: str, host: str, *, name: str, bot_id: str, default_port: int
) -> Pickup:
    """Ask every ready Pod of `host` whether it serves the bot `name` (token id `bot_id`)."""
    selector = quote(f"{SERVICE_NAME_LABEL}={host}", safe="")
    path = collection_path("discovery.k8s.io/v1", "EndpointSlice", namespace)
    try:
        slices = await kube.get(f"{path}?labelSelector={selector}") or {}
    except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
        return Pickup(trouble=f"cannot list the host's EndpointSlices: {exc}")
    pods = ready_pods(slices, host, default_port)
    if not pods:
        return Pickup(trouble=f"no ready Pod of {host} in its EndpointSlices")
    timeout = aiohttp.ClientTimeout(total=ASK_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        answers = await asyncio.gather(*(_ask(session, pod) for pod in pods))
    pickup = Pickup(asked=len(pods))
    for pod, answer in zip(pods, answers, strict=True):
        if isinstance(answer, str):
            pickup.unanswered.append(f"{pod.name}: {answer}")
            continue
        state, detail = bot_state(answer, name, bot_id)
        if state == "serving":
            pickup.serving.append(pod.name)
        elif state == "not_loaded":
            pickup.not_loaded.append(f"{pod.name}: {detail}" if detail else pod.name)
        elif state == "unhealthy":
            pickup.unhealthy.append(f"{pod.name}: {detail}")
        else:
            pickup.unanswered.append(f"{pod.name}: {detail}")
    return pickup


async def _ask(session: aiohttp.ClientSession, pod: PodAddress) -> Any:
    """The Pod's /readyz JSON (whatever its status code: a 503 still lists the bots), or why
    there is none."""
    try:
        async with session.get(pod.url) as response:
            return await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return f"{type(exc).__name__}" + (f" ({exc})" if str(exc) else "")
