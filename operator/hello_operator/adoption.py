"""Which TelegramBot (or namespace) gets a database the previous operator named.

The previous names could collide (`naming.legacy_claimants`), so a legacy database is adopted
only by an owner that existed before this operator first ran (the registry's epoch: nothing made
later ever had a legacy name) and only if no other such TelegramBot maps to the same name. Then
neither gets it: an admin decides (docs/operations.md), and no empty database replaces it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from hello_operator import database, naming
from hello_operator.kube import ApiError, KubeClient, collection_path, object_path
from hello_operator.settings import GROUP, VERSION


class Ambiguous(database.NotOwned):
    def __init__(self, name: str, owner: database.Owner) -> None:
        super().__init__(
            database.ADOPTION_AMBIGUOUS,
            f"{name} (the previous operator's name) could belong to another TelegramBot as well "
            f"as to {owner}; an admin must say whose it is",
        )


def _before(created: datetime | None, epoch: datetime) -> bool:
    return created is not None and created < epoch


async def _rival_existed(
    kube: KubeClient, candidates: Iterable[tuple[str, str]], me: tuple[str, str], epoch: datetime
) -> bool:
    """Whether any candidate but `me` is a TelegramBot created before `epoch`."""
    for namespace, name in sorted(set(candidates) - {me}):
        path = object_path(f"{GROUP}/{VERSION}", "TelegramBot", namespace, name)
        try:
            found = await kube.get(path)
        except ApiError as exc:
            # A namespace the operator may not read: it never provisioned a bot there.
            if exc.status == 403:
                continue
            raise
        if found is not None and _before(database.Owner.of(found).created, epoch):
            return True
    return False


def bot_legacy(kube: KubeClient, bot: Mapping[str, Any]) -> database.Legacy:
    owner = database.Owner.of(bot)
    name = naming.legacy_bot_database(owner.namespace, owner.name)

    async def adoptable(epoch: datetime) -> bool:
        if not _before(owner.created, epoch):
            return False  # made after the previous operator: that database is someone else's
        if name.endswith(naming.LEGACY_HOSTS_SUFFIX):
            raise Ambiguous(name, owner)  # also some namespace's legacy hosts database
        me = (owner.namespace, owner.name)
        if await _rival_existed(kube, naming.legacy_claimants(name), me, epoch):
            raise Ambiguous(name, owner)
        return True

    return database.Legacy(name, adoptable)


def hosts_legacy(kube: KubeClient, namespace: str) -> database.Legacy:
    """A namespace's legacy hosts database: no other namespace maps to it (DNS labels fold
    one-to-one), but a bot's legacy name could (`b--hosts` in `a` for the namespace `a-b`). So
    where one could, the namespace must have had a TelegramBot before the epoch (else that
    database was never its own), and no such bot may still exist."""
    name = naming.legacy_hosts_database(namespace)
    owner = database.Owner(namespace)

    async def adoptable(epoch: datetime) -> bool:
        claimants = naming.legacy_claimants(name)
        if not claimants:
            return True
        if not await _had_bots(kube, namespace, epoch):
            return False
        if await _rival_existed(kube, claimants, ("", ""), epoch):
            raise Ambiguous(name, owner)
        return True

    return database.Legacy(name, adoptable)


async def _had_bots(kube: KubeClient, namespace: str, epoch: datetime) -> bool:
    listed = await kube.get(collection_path(f"{GROUP}/{VERSION}", "TelegramBot", namespace))
    bots = (listed or {}).get("items") or []
    return any(_before(database.Owner.of(bot).created, epoch) for bot in bots)


async def bot_target(
    kube: KubeClient, admin_url: str, bot: Mapping[str, Any]
) -> database.DatabaseTarget:
    """The database and role the TelegramBot owns (claimed or adopted now if need be)."""
    owner = database.Owner.of(bot)
    name = database.DatabaseTarget.for_bot(owner.namespace, owner.name).database
    legacy = bot_legacy(kube, bot)
    return database.DatabaseTarget.named(
        await database.claim(admin_url, database.BOT, owner, name, legacy)
    )


async def hosts_target(kube: KubeClient, admin_url: str, namespace: str) -> database.DatabaseTarget:
    """The database and role the namespace's bot hosts share (claimed or adopted now)."""
    name = database.DatabaseTarget.for_hosts(namespace).database
    legacy = hosts_legacy(kube, namespace)
    return database.DatabaseTarget.named(
        await database.claim(admin_url, database.HOSTS, database.Owner(namespace), name, legacy)
    )
