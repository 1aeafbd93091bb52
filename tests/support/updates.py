"""Realistic Telegram Update JSON, as the Bot API delivers it."""

from __future__ import annotations

import itertools
import time
from typing import Any

_ids = itertools.count(10_000)


def next_update_id() -> int:
    return next(_ids)


def user(user_id: int, first_name: str = "Ann", **extra: Any) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": first_name, **extra}


def message_update(
    from_user: dict[str, Any] | None,
    text: str | None = "hello",
    *,
    update_id: int | None = None,
    chat_type: str = "private",
    kind: str = "message",
    **content: Any,
) -> dict[str, Any]:
    chat_id = from_user["id"] if from_user and chat_type == "private" else -1001234567890
    chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
    if chat_type == "private" and from_user:
        chat["first_name"] = from_user["first_name"]
    message: dict[str, Any] = {
        "message_id": next(_ids),
        "date": int(time.time()),
        "chat": chat,
        **content,
    }
    if from_user is not None:
        message["from"] = from_user
    if text is not None:
        message["text"] = text
        if text.startswith("/"):
            length = len(text.split(maxsplit=1)[0])
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
    if kind == "edited_message":
        message["edit_date"] = int(time.time())
    return {"update_id": update_id if update_id is not None else next(_ids), kind: message}


def start_update(from_user: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return message_update(from_user, "/start", **kwargs)


def callback_update(
    from_user: dict[str, Any], data: str, *, message: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A press on an inline keyboard button of `message` (by default one the bot sent)."""
    if message is None:
        message = message_update(from_user, "pick one")["message"]
    query = {"id": str(next(_ids)), "from": from_user, "chat_instance": "1", "data": data}
    return {"update_id": next(_ids), "callback_query": {**query, "message": message}}


STICKER: dict[str, Any] = {
    "file_id": "s",
    "file_unique_id": "s",
    "type": "regular",
    "width": 512,
    "height": 512,
    "is_animated": False,
    "is_video": False,
}
