"""A bot's rows follow it when it moves between runtimes, each copy recorded in `status.rows`.

The rows (`rows`) are copied into the new store once it is migrated, before Telegram is told the
new URL, and again once the old target let go (the final sync: what the old target wrote
meanwhile).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
import kopf

from hello_operator import adoption, bot_manifests, rows
from hello_operator.reconcile import (
    DATABASE_ERRORS,
    Blocked,
    Clients,
    backoff,
    change_status,
    database_blocked,
)

Move = tuple[str, str]
"""(from, to): the runtimes between whose stores a copy of the bot's rows goes."""


def last_copy(status: Mapping[str, Any], move: Move, stage: str) -> bool:
    """status.rows says the last copy of the bot's rows was `move`'s at `stage`."""
    record = status.get("rows") or {}
    return (record.get("from"), record.get("to"), record.get("stage")) == (*move, stage)


def unfinished(status: Mapping[str, Any], move: Move) -> bool:
    """`move`'s rows had their first copy, not yet the final sync."""
    return last_copy(status, move, "Initial")


async def follow_rows(
    clients: Clients,
    owner: kopf.Body,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    *,
    move: Move,
    stage: str,
    retry: int,
) -> None:
    """Copy the bot's rows from the old store to the new one (`rows`) and record it in
    status.rows. `Initial` runs once per move; `Final` whenever the move gets that far (a copy
    changes nothing that is already there). A failure blocks the move where it stands: the old
    target keeps serving, or, after it let go, its rows stay put until the retry copies them."""
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    # Every key, always: a merge patch keeps the keys a record does not mention.
    record: dict[str, Any] = {
        "from": move[0],
        "to": move[1],
        "stage": stage,
        "copied": None,
        "message": None,
    }
    if stage == "Initial" and unfinished(status, move):
        return
    if bot_manifests.database_mode(spec) == "External":
        # Only a Dedicated bot can have one; the operator has no access to it. Said once per
        # move: the Initial step comes first, and the Final one finds it said.
        record["stage"] = "NotCopied"
        if stage == "Initial" and not last_copy(status, move, "NotCopied"):
            message = "database.mode is External: the operator does not copy rows into it"
            kopf.event(owner, type="Warning", reason="RowsNotCopied", message=message)
            await _record(clients, namespace, name, record | {"message": message})
        return
    admin_url = clients.config.shared_postgres_admin_url
    try:
        own = await adoption.bot_target(clients.kube, admin_url, owner)
        hosts = await adoption.hosts_target(clients.kube, admin_url, namespace)
    except DATABASE_ERRORS as exc:
        raise database_blocked(
            exc, retry, retry_after=clients.config.blocked_retry_seconds
        ) from exc
    try:
        copied = await rows.copy_rows(
            admin_url,
            rows.store(move[0], name, own=own.database, hosts=hosts.database),
            rows.store(move[1], name, own=own.database, hosts=hosts.database),
        )
    except (rows.CopyError, asyncpg.PostgresError, OSError, TimeoutError) as exc:
        raise Blocked(
            "RowCopyFailed",
            f"copying the bot's rows from {move[0]} to {move[1]}: {type(exc).__name__}: {exc}",
            retry_after=backoff(retry),
        ) from exc
    await _record(clients, namespace, name, record | {"copied": copied})


async def _record(clients: Clients, namespace: str, name: str, record: dict[str, Any]) -> None:
    """Written at once (not with kopf's patch at the end): a crash after the copy must not
    forget it, and a Waiting or Blocked step later in the same pass writes no patch of ours."""
    record["at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    await change_status(clients, namespace, name, lambda _: {"rows": record})
