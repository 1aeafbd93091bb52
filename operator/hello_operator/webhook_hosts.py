"""Who owns a webhook's DNS name: one namespace, the one of the oldest TelegramBot claiming it.

The operator writes an Ingress for `spec.webhook.host`. Two namespaces' Ingresses for one name
would leave the Ingress controller to pick whose Pods get Telegram's requests, and with them the
other bot's users and its secret token header. So a name belongs to the namespace of the oldest
TelegramBot that claims it (bots of one namespace may share it: they trust each other), and a
younger claim from another namespace is refused before anything is made for it. kopf's index
keeps every TelegramBot's claim in memory from its watch, so the check costs no request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from hello_operator import bot_manifests
from hello_operator.reconcile import Blocked
from hello_operator.settings import GROUP, PLURAL, VERSION

REASON = "WebhookHostTaken"


@dataclass(frozen=True, order=True)
class Claim:
    """One TelegramBot's claim; ordered oldest first, then by namespace and name (a tie of
    creation seconds is broken the same way whatever order the watch saw them in)."""

    created: str
    namespace: str
    name: str


@kopf.index(GROUP, VERSION, PLURAL)
def webhook_host_claims(
    namespace: str, name: str, meta: Mapping[str, Any], spec: Mapping[str, Any], **_: Any
) -> dict[str, Claim] | None:
    host = bot_manifests.webhook_host(spec).lower()
    if not host:
        return None
    created = str(meta.get("creationTimestamp") or "")
    return {host: Claim(created=created, namespace=namespace, name=name)}


def owner(claims: Iterable[Claim]) -> Claim:
    return min(claims)


def check(
    namespace: str,
    spec: Mapping[str, Any],
    claims: kopf.Index[str, Claim],
    *,
    retry_after: float,
) -> None:
    """Raise Blocked if another namespace owns the bot's webhook host (retried: the owner may
    go away or change its name).

    The message does not name that namespace: which tenants exist is not the asker's business.
    """
    host = bot_manifests.webhook_host(spec).lower()
    if not host or host not in claims:
        return
    if owner(claims[host]).namespace != namespace:
        raise Blocked(
            REASON,
            f"spec.webhook.host {host} is already used by a TelegramBot in another namespace; "
            "a webhook's DNS name belongs to one namespace",
            retry_after=retry_after,
        )
