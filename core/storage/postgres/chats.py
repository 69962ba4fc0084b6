"""What chat adapters remember between messages, on PostgreSQL (the ``ChatStore`` protocol)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from core.storage.postgres.database import Database
from core.storage.postgres.queries import chats as sql
from core.storage.types import (
    Button,
    Delivered,
    GuildSettings,
    InboxEntry,
    RememberedPhoto,
    new_id,
)


class PostgresChats:
    """``ChatStore`` on a PostgreSQL ``Database``."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    # --- inbox -----------------------------------------------------------------------

    async def inbox_add(self, platform: str, events: Sequence[tuple[str, str]]) -> set[str]:
        """Store events (key, payload) in one statement; return the keys that were new."""
        if not events:
            return set()
        keys, payloads = [key for key, _ in events], [payload for _, payload in events]
        rows = await self._db.fetch(sql.INBOX_ADD, platform, keys, payloads, self._clock())
        return {str(row[0]) for row in rows}

    async def inbox_entry(self, platform: str, key: str) -> InboxEntry | None:
        """Return one stored event."""
        row = await self._db.fetchrow(sql.INBOX_ENTRY, platform, key)
        return None if row is None else InboxEntry(*row)

    async def inbox_open(self, platform: str) -> list[InboxEntry]:
        """Return the events not handled yet, oldest first (to replay after a restart)."""
        return [InboxEntry(*row) for row in await self._db.fetch(sql.INBOX_OPEN, platform)]

    async def inbox_first_reply(self, platform: str, key: str, reply_id: str) -> None:
        """Record that the first answer to an event was sent."""
        await self._db.execute(sql.INBOX_FIRST_REPLY, reply_id, platform, key)

    async def inbox_attempt(self, platform: str, key: str) -> None:
        """Count one more attempt at handling an event (a replay gives up after a few)."""
        await self._db.execute(sql.INBOX_ATTEMPT, platform, key)

    async def inbox_done(self, platform: str, key: str) -> None:
        """Mark an event handled; it stays a while so a redelivery is still recognised."""
        await self._db.execute(sql.INBOX_DONE, self._clock(), platform, key)

    async def inbox_prune(self, platform: str, older_than_seconds: float) -> int:
        """Forget handled events older than the platform's redelivery window."""
        return await self._db.execute(sql.INBOX_PRUNE, platform, self._clock() - older_than_seconds)

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
        await self._db.execute(
            sql.REMEMBER_PHOTO,
            platform, chat_id, user_id, file_ref, request_id, message_id, self._clock(),
        )  # fmt: skip

    async def last_photo(
        self, platform: str, chat_id: str, user_id: str, max_age_seconds: float
    ) -> RememberedPhoto | None:
        """Return the user's latest photo in a chat if it is recent enough."""
        since = self._clock() - max_age_seconds
        row = await self._db.fetchrow(sql.LAST_PHOTO, platform, chat_id, user_id, since)
        return None if row is None else RememberedPhoto(*row)

    # --- buttons ---------------------------------------------------------------------

    async def add_buttons(
        self, platform: str, buttons: Sequence[tuple[str, str, str | None, str]]
    ) -> list[str]:
        """Store buttons (action, request_id, job_id, owner); return their opaque ids."""
        ids = [new_id() for _ in buttons]
        now = self._clock()
        rows = [
            (button_id, platform, action, request_id, job_id, owner, now)
            for button_id, (action, request_id, job_id, owner) in zip(ids, buttons, strict=True)
        ]
        if rows:
            await self._db.executemany(sql.ADD_BUTTON, rows)
        return ids

    async def button(self, platform: str, button_id: str) -> Button | None:
        """Return what a button does, or None for an unknown id."""
        row = await self._db.fetchrow(sql.BUTTON, platform, button_id)
        return None if row is None else Button(*row)

    # --- preferences, history, status messages --------------------------------------

    async def set_locale(self, platform: str, user_id: str, locale: str) -> None:
        """Remember the language a user chose."""
        await self._db.execute(sql.SET_LOCALE, platform, user_id, locale)

    async def locale(self, platform: str, user_id: str) -> str | None:
        """Return the language a user chose, if any."""
        value = await self._db.fetchval(sql.LOCALE, platform, user_id)
        return None if value is None else str(value)

    async def add_history(
        self, platform: str, user_id: str, job_id: str, chat_id: str, file_ref: str, caption: str
    ) -> None:
        """Record a delivered video with the platform's id for it."""
        await self._db.execute(
            sql.ADD_HISTORY, platform, user_id, job_id, chat_id, file_ref, caption, self._clock()
        )

    async def history(self, platform: str, user_id: str, limit: int) -> list[Delivered]:
        """Return a user's latest delivered videos, newest first."""
        rows = await self._db.fetch(sql.HISTORY, platform, user_id, limit)
        return [Delivered(*row) for row in rows]

    async def set_status_message(self, request_id: str, message_id: str | None) -> None:
        """Remember the status message an adapter keeps editing for a request."""
        await self._db.execute(sql.SET_STATUS_MESSAGE, message_id, request_id)

    async def add_line_take(self, platform: str, request_id: str, before: int) -> int:
        """Count one more take of the line first asked in a request; return its number."""
        return int(await self._db.fetchval(sql.ADD_LINE_TAKE, platform, request_id, before))

    # --- guild settings --------------------------------------------------------------

    async def guild_settings(self, platform: str, guild_id: str) -> GuildSettings:
        """Return a guild's settings (the defaults if its admins never set any)."""
        row = await self._db.fetchrow(sql.GUILD_SETTINGS, platform, guild_id)
        if row is None:
            return GuildSettings()
        return GuildSettings(tuple(row[0]), int(row[1]))

    async def set_guild_channels(
        self, platform: str, guild_id: str, channels: Sequence[str]
    ) -> None:
        """Set the channels the bot answers in within a guild (empty: every channel)."""
        await self._db.execute(sql.SET_GUILD_CHANNELS, platform, guild_id, list(channels))

    async def set_guild_cap(self, platform: str, guild_id: str, daily_cap: int) -> None:
        """Set a guild's daily cap of takes (0: no cap)."""
        await self._db.execute(sql.SET_GUILD_CAP, platform, guild_id, daily_cap)

    async def add_guild_takes(self, platform: str, guild_id: str, day: str, takes: int) -> bool:
        """Count takes against the guild's day if they fit under its cap, atomically."""
        return await self._db.execute(sql.ADD_GUILD_TAKES, platform, guild_id, day, takes) > 0

    # --- retention -------------------------------------------------------------------

    async def delete_old_guild_days(self, before: str, limit: int) -> int:
        """Delete up to ``limit`` guilds' day counts of days (ISO dates) before ``before``."""
        return await self._db.execute(sql.DELETE_OLD_GUILD_DAYS, before, limit)

    async def delete_ended_lines(self, limit: int) -> int:
        """Delete up to ``limit`` take counts of lines none of whose requests keeps its photo."""
        return await self._db.execute(sql.DELETE_ENDED_LINES, limit)
