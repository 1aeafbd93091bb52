"""The names of Kubernetes objects a TelegramBot refers to, checked before any API call uses one.

A name goes into an API path (`kube.object_path`), so a name that is not a Kubernetes name
(`../../kube-system/secrets/x`) would reach another namespace's objects. The CRD refuses such
names, but a CRD applied by an older chart, or an object stored before an upgrade, never saw that
schema; and the status subresource has no pattern at all. So the operator checks every name
itself, here, in every code path: an invalid one is a False condition (`InvalidReference`) whose
message names the field, and never a request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# RFC 1123, as the API server checks them (k8s.io/apimachinery validation).
LABEL_MAX = 63
SUBDOMAIN_MAX = 253
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
LABEL_RE = re.compile(rf"{_LABEL}")
SUBDOMAIN_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*")
# The same pattern as the CRD's `pattern` (JSON Schema patterns are not anchored implicitly).
SUBDOMAIN_PATTERN = rf"^{_LABEL}(\.{_LABEL})*$"

REASON = "InvalidReference"
# The object names a spec carries, each optional except the token's (validate_spec requires it).
SPEC_FIELDS = (
    ("token", "secretName"),
    ("database", "external", "secretName"),
    ("redis", "secretName"),
    ("webhook", "tlsSecretName"),
    ("webhook", "ingressClassName"),
)
# Bot hosts (Deployments) the operator wrote into the status; a tenant may write there too.
STATUS_FIELDS = ("host", "joining")
SHOWN_CHARS = 80


def is_namespace(value: object) -> bool:
    """A namespace's name: an RFC 1123 label."""
    return isinstance(value, str) and len(value) <= LABEL_MAX and bool(LABEL_RE.fullmatch(value))


def is_name(value: object) -> bool:
    """An object's name: an RFC 1123 subdomain (Secrets, Deployments, TelegramBots, ...)."""
    return (
        isinstance(value, str)
        and len(value) <= SUBDOMAIN_MAX
        and bool(SUBDOMAIN_RE.fullmatch(value))
    )


class InvalidReference(ValueError):
    """A field that should name an object in the bot's namespace holds something else."""

    def __init__(self, field: str, value: object) -> None:
        shown = repr(value)
        if len(shown) > SHOWN_CHARS:
            shown = f"{shown[:SHOWN_CHARS]}... ({len(str(value))} characters)"
        super().__init__(
            f"{field} {shown} is not a Kubernetes object name: lowercase letters, digits, '-' "
            f"and '.', starting and ending with a letter or digit, at most {SUBDOMAIN_MAX} "
            "characters"
        )
        self.field = field


def _at(obj: Mapping[str, Any], path: tuple[str, ...]) -> object:
    node: object = obj
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


def checked(field: str, value: object) -> str:
    """`value` if it is a name, "" if absent or empty (the spec validation says where one is
    required), else InvalidReference naming `field`."""
    if value is None or value == "":
        return ""
    if not is_name(value):
        raise InvalidReference(field, value)
    return str(value)


def _name(obj: Mapping[str, Any], prefix: str, path: tuple[str, ...]) -> str:
    return checked(".".join((prefix, *path)), _at(obj, path))


def spec_name(spec: Mapping[str, Any], *path: str) -> str:
    """The object name at `spec.<path>`, "" if there is none; InvalidReference if not a name."""
    return _name(spec, "spec", path)


def status_name(status: Mapping[str, Any], key: str) -> str:
    """The bot host `status.<key>` names, "" if none; InvalidReference if not a name."""
    return _name(status, "status", (key,))


def check(spec: Mapping[str, Any], status: Mapping[str, Any]) -> None:
    """Raise InvalidReference for the first name in `spec` or `status` that is not a name."""
    for path in SPEC_FIELDS:
        spec_name(spec, *path)
    for key in STATUS_FIELDS:
        status_name(status, key)
