"""Names of the databases and roles the operator makes in the shared PostgreSQL.

A name is a readable prefix for the admin plus a hash of the whole identity, always (not only
for long names): `bot/<namespace>/<name>` or `hosts/<namespace>`. `/` cannot occur in a DNS label,
so two identities never hash the same text, and 64 bits leave no collision to search for. The
prefixes keep the kinds apart: a bot's database starts `tgb_`, a namespace's hosts database
`tgh_`, and the previous operator's names (kept by adopted databases) all start `tgbot_`.

The previous scheme (`legacy_*`) folded `-` to `_` and hashed only long names, so several
TelegramBots could map to one name; `legacy_claimants` lists every one that could.
"""

from __future__ import annotations

import hashlib
import re

MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1, in bytes (every name here is ASCII)
HASH_CHARS = 16
BOT_PREFIX = "tgb_"
HOSTS_PREFIX = "tgh_"
LEGACY_PREFIX = "tgbot_"
LEGACY_HOSTS_SUFFIX = "__hosts"
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _name(prefix: str, readable: str, identity: str) -> str:
    digest = hashlib.sha256(identity.encode()).hexdigest()[:HASH_CHARS]
    room = MAX_IDENTIFIER - len(prefix) - 1 - HASH_CHARS
    return f"{prefix}{readable.replace('-', '_')[:room]}_{digest}"


def bot_database(namespace: str, name: str) -> str:
    """The database (and role) of one Dedicated-store TelegramBot."""
    return _name(BOT_PREFIX, f"{namespace}_{name}", f"bot/{namespace}/{name}")


def hosts_database(namespace: str) -> str:
    """The database (and role) every bot host of `namespace` shares."""
    return _name(HOSTS_PREFIX, namespace, f"hosts/{namespace}")


def _legacy_identifier(raw: str) -> str:
    """The previous operator's identifier(): `-` folded to `_`, a hash only past 63 bytes."""
    ident = re.sub(r"[^a-z0-9_]", "_", raw.lower())
    if len(ident) <= MAX_IDENTIFIER:
        return ident
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{ident[: MAX_IDENTIFIER - 9]}_{digest}"


def legacy_bot_database(namespace: str, name: str) -> str:
    return _legacy_identifier(f"{LEGACY_PREFIX}{namespace}_{name}")


def legacy_hosts_database(namespace: str) -> str:
    return _legacy_identifier(f"{LEGACY_PREFIX}{namespace}{LEGACY_HOSTS_SUFFIX}")


def legacy_claimants(legacy: str) -> set[tuple[str, str]]:
    """Every (namespace, name) of DNS labels whose legacy bot database is `legacy`, found by
    splitting it at each `_` (the separator; every other `_` was a `-`). A hashed long name's
    other preimages cannot be listed; that name's 63 characters read literally can."""
    body = legacy.removeprefix(LEGACY_PREFIX)
    found = set()
    for at in (i for i, char in enumerate(body) if char == "_"):
        namespace, name = body[:at].replace("_", "-"), body[at + 1 :].replace("_", "-")
        if (
            DNS_LABEL.fullmatch(namespace)
            and DNS_LABEL.fullmatch(name)
            and legacy_bot_database(namespace, name) == legacy
        ):
            found.add((namespace, name))
    return found
