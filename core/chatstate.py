"""What chat adapters remember between messages, on the shared store.

- the inbox: each platform event that asks for something is written here before anything
  else happens, so an event fetched from the platform survives a crash and a redelivered
  event is recognised (its key is unique);
- the last photo a user sent in a chat, so a line can follow its photo;
- button ids: a button carries a short opaque id, the action lives here;
- each user's chosen language and the videos they received (with the platform's file id,
  so a video can be sent again without uploading it again).

Platform-free: keys and ids are strings chosen by the adapter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.store import Store, new_id


@dataclass(frozen=True)
class InboxEntry:
    """A stored platform event and how far its handling got."""

    key: str
    payload: str
    first_reply: str | None  # the first answer already sent, so a replay does not repeat it
    attempts: int
    received_at: float


@dataclass(frozen=True)
class RememberedPhoto:
    """The last photo a user sent in a chat: a platform file or a stored request's image."""

    file_ref: str | None
    request_id: str | None
    message_id: str | None
    updated_at: float


@dataclass(frozen=True)
class Button:
    """What an inline button does, for whom."""

    id: str
    action: str
    request_id: str
    job_id: str | None
    owner: str  # platform user id of the requester


@dataclass(frozen=True)
class Delivered:
    """A video a user received, re-sendable by its platform file id."""

    job_id: str
    chat_id: str
    file_ref: str
    caption: str
    created_at: float


class ChatState:
    """Adapter state on top of ``Store`` (tables created by its migrations)."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    # --- inbox -----------------------------------------------------------------------

    async def inbox_add(self, platform: str, events: Sequence[tuple[str, str]]) -> set[str]:
        """Store events (key, payload) in one transaction; return the keys that were new."""
        if not events:
            return set()
        now = self._clock()
        added: set[str] = set()
        async with self._store.transaction() as db:
            for key, payload in events:
                cursor = await db.execute(
                    "INSERT INTO chat_inbox (platform, key, payload, received_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (platform, key, payload, now),
                )
                if cursor.rowcount > 0:
                    added.add(key)
        return added

    async def inbox_entry(self, platform: str, key: str) -> InboxEntry | None:
        """Return one stored event."""
        rows = await self._store.query(
            "SELECT key, payload, first_reply, attempts, received_at FROM chat_inbox"
            " WHERE platform = ? AND key = ?",
            (platform, key),
        )
        return InboxEntry(*rows[0]) if rows else None

    async def inbox_open(self, platform: str) -> list[InboxEntry]:
        """Return the events not handled yet, oldest first (to replay after a restart)."""
        rows = await self._store.query(
            "SELECT key, payload, first_reply, attempts, received_at FROM chat_inbox"
            " WHERE platform = ? AND done_at IS NULL ORDER BY received_at, rowid",
            (platform,),
        )
        return [InboxEntry(*row) for row in rows]

    async def inbox_first_reply(self, platform: str, key: str, reply_id: str) -> None:
        """Record that the first answer to an event was sent."""
        async with self._store.transaction() as db:
            await db.execute(
                "UPDATE chat_inbox SET first_reply = ? WHERE platform = ? AND key = ?",
                (reply_id, platform, key),
            )

    async def inbox_attempt(self, platform: str, key: str) -> None:
        """Count one more attempt at handling an event (a replay gives up after a few)."""
        async with self._store.transaction() as db:
            await db.execute(
                "UPDATE chat_inbox SET attempts = attempts + 1 WHERE platform = ? AND key = ?",
                (platform, key),
            )

    async def inbox_done(self, platform: str, key: str) -> None:
        """Mark an event handled; it stays a while so a redelivery is still recognised."""
        async with self._store.transaction() as db:
            await db.execute(
                "UPDATE chat_inbox SET done_at = ? WHERE platform = ? AND key = ?",
                (self._clock(), platform, key),
            )

    async def inbox_prune(self, platform: str, older_than_seconds: float) -> int:
        """Forget handled events older than the platform's redelivery window."""
        async with self._store.transaction() as db:
            cursor = await db.execute(
                "DELETE FROM chat_inbox WHERE platform = ? AND done_at IS NOT NULL"
                " AND received_at < ?",
                (platform, self._clock() - older_than_seconds),
            )
            return int(cursor.rowcount)

    # --- photos ----------------------------------------------------------------------

    async def remember_photo(
        self,
        platform: str,
        chat_id: str,
        user_id: str,
        *,
        file_ref: str | None = None,
        request_id: str | None = None,
        message_id: str | None = None,
    ) -> None:
        """Remember a user's latest photo in a chat (a file, or a stored request's image)."""
        async with self._store.transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO chat_photos (platform, chat_id, user_id, file_ref,"
                " request_id, message_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (platform, chat_id, user_id, file_ref, request_id, message_id, self._clock()),
            )

    async def last_photo(
        self, platform: str, chat_id: str, user_id: str, max_age_seconds: float
    ) -> RememberedPhoto | None:
        """Return the user's latest photo in a chat if it is recent enough."""
        rows = await self._store.query(
            "SELECT file_ref, request_id, message_id, updated_at FROM chat_photos"
            " WHERE platform = ? AND chat_id = ? AND user_id = ? AND updated_at >= ?",
            (platform, chat_id, user_id, self._clock() - max_age_seconds),
        )
        return RememberedPhoto(*rows[0]) if rows else None

    # --- buttons ---------------------------------------------------------------------

    async def add_buttons(
        self, platform: str, buttons: Sequence[tuple[str, str, str | None, str]]
    ) -> list[str]:
        """Store buttons (action, request_id, job_id, owner); return their opaque ids."""
        ids = [new_id() for _ in buttons]
        now = self._clock()
        async with self._store.transaction() as db:
            await db.executemany(
                "INSERT INTO chat_buttons (id, platform, action, request_id, job_id, owner,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (button_id, platform, action, request_id, job_id, owner, now)
                    for button_id, (action, request_id, job_id, owner) in zip(
                        ids, buttons, strict=True
                    )
                ],
            )
        return ids

    async def button(self, platform: str, button_id: str) -> Button | None:
        """Return what a button does, or None for an unknown id."""
        rows = await self._store.query(
            "SELECT id, action, request_id, job_id, owner FROM chat_buttons"
            " WHERE platform = ? AND id = ?",
            (platform, button_id),
        )
        return Button(*rows[0]) if rows else None

    # --- preferences and history ------------------------------------------------------

    async def set_locale(self, platform: str, user_id: str, locale: str) -> None:
        """Remember the language a user chose."""
        async with self._store.transaction() as db:
            await db.execute(
                "INSERT INTO chat_prefs (platform, user_id, locale) VALUES (?, ?, ?)"
                " ON CONFLICT (platform, user_id) DO UPDATE SET locale = excluded.locale",
                (platform, user_id, locale),
            )

    async def locale(self, platform: str, user_id: str) -> str | None:
        """Return the language a user chose, if any."""
        rows = await self._store.query(
            "SELECT locale FROM chat_prefs WHERE platform = ? AND user_id = ?",
            (platform, user_id),
        )
        return None if not rows else rows[0][0]

    async def add_history(
        self, platform: str, user_id: str, job_id: str, chat_id: str, file_ref: str, caption: str
    ) -> None:
        """Record a delivered video with the platform's id for it."""
        async with self._store.transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO chat_history (platform, user_id, job_id, chat_id,"
                " file_ref, caption, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (platform, user_id, job_id, chat_id, file_ref, caption, self._clock()),
            )

    async def history(self, platform: str, user_id: str, limit: int) -> list[Delivered]:
        """Return a user's latest delivered videos, newest first."""
        rows = await self._store.query(
            "SELECT job_id, chat_id, file_ref, caption, created_at FROM chat_history"
            " WHERE platform = ? AND user_id = ? ORDER BY created_at DESC LIMIT ?",
            (platform, user_id, limit),
        )
        return [Delivered(*row) for row in rows]
