"""Status conditions as plain data: Kubernetes-style list, one entry per type."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MIGRATED = "Migrated"
READY = "Ready"
WEBHOOK_HEALTHY = "WebhookHealthy"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None = Unknown
    reason: str
    message: str

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else str(self.status)


def now_iso() -> str:
    return (
        datetime.datetime.now(tz=datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def merge_conditions(
    current: Iterable[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    *,
    generation: int | None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Return the full list with `updates` applied; `lastTransitionTime` moves only on a flip."""
    stamp = now or now_iso()
    by_type: dict[str, dict[str, Any]] = {c["type"]: dict(c) for c in current or [] if "type" in c}
    for cond in updates:
        old = by_type.get(cond.type)
        changed = old is None or old.get("status") != cond.status_text
        entry = {
            "type": cond.type,
            "status": cond.status_text,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": stamp if changed else old.get("lastTransitionTime", stamp),
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        by_type[cond.type] = entry
    order = [MIGRATED, READY, WEBHOOK_HEALTHY]
    return sorted(
        by_type.values(), key=lambda c: order.index(c["type"]) if c["type"] in order else 99
    )


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
