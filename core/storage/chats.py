"""The chat state protocol: what chat adapters remember between messages.

- the inbox: each platform event that asks for something is written here before anything
  else happens, so an event fetched from the platform survives a crash and a redelivered
  event is recognised (its key is unique);
- the last photo a user sent in a chat, so a line can follow its photo;
- button ids: a button carries a short opaque id, the action lives here;
- each user's chosen language and the videos they received (with the platform's file id,
  so a video can be sent again without uploading it again);
- the status message an adapter keeps editing for a request, and how many takes a line
  has had (another take of it is numbered after them);
- a community's settings (allowed channels, a daily cap of takes) and its takes of the day.

Platform-free: keys and ids are strings chosen by the adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from core.storage.types import Button, Delivered, GuildSettings, InboxEntry, RememberedPhoto


class ChatStore(Protocol):
    """Adapter state, shared by every process of a deployment."""

    async def inbox_add(self, platform: str, events: Sequence[tuple[str, str]]) -> set[str]:
        """Store events (key, payload) in one transaction; return the keys that were new."""
        ...

    async def inbox_entry(self, platform: str, key: str) -> InboxEntry | None:
        """Return one stored event."""
        ...

    async def inbox_open(self, platform: str) -> list[InboxEntry]:
        """Return the events not handled yet, oldest first (to replay after a restart)."""
        ...

    async def inbox_first_reply(self, platform: str, key: str, reply_id: str) -> None:
        """Record that the first answer to an event was sent."""
        ...

    async def inbox_attempt(self, platform: str, key: str) -> None:
        """Count one more attempt at handling an event (a replay gives up after a few)."""
        ...

    async def inbox_done(self, platform: str, key: str) -> None:
        """Mark an event handled; it stays a while so a redelivery is still recognised."""
        ...

    async def inbox_prune(self, platform: str, older_than_seconds: float) -> int:
        """Forget handled events older than the platform's redelivery window."""
        ...

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
        ...

    async def last_photo(
        self, platform: str, chat_id: str, user_id: str, max_age_seconds: float
    ) -> RememberedPhoto | None:
        """Return the user's latest photo in a chat if it is recent enough."""
        ...

    async def add_buttons(
        self, platform: str, buttons: Sequence[tuple[str, str, str | None, str]]
    ) -> list[str]:
        """Store buttons (action, request_id, job_id, owner); return their opaque ids."""
        ...

    async def button(self, platform: str, button_id: str) -> Button | None:
        """Return what a button does, or None for an unknown id."""
        ...

    async def set_locale(self, platform: str, user_id: str, locale: str) -> None:
        """Remember the language a user chose."""
        ...

    async def locale(self, platform: str, user_id: str) -> str | None:
        """Return the language a user chose, if any."""
        ...

    async def add_history(
        self, platform: str, user_id: str, job_id: str, chat_id: str, file_ref: str, caption: str
    ) -> None:
        """Record a delivered video with the platform's id for it."""
        ...

    async def history(self, platform: str, user_id: str, limit: int) -> list[Delivered]:
        """Return a user's latest delivered videos, newest first."""
        ...

    async def set_status_message(self, request_id: str, message_id: str | None) -> None:
        """Remember the status message an adapter keeps editing for a request."""
        ...

    async def add_line_take(self, platform: str, request_id: str, before: int) -> int:
        """Count one more take of the line first asked in a request; return its number.

        ``before``: the takes the line is known to have had (at least); atomic, so that
        takes counted at once get different numbers.
        """
        ...

    async def guild_settings(self, platform: str, guild_id: str) -> GuildSettings:
        """Return a guild's settings (the defaults if its admins never set any)."""
        ...

    async def set_guild_channels(
        self, platform: str, guild_id: str, channels: Sequence[str]
    ) -> None:
        """Set the channels the bot answers in within a guild (empty: every channel)."""
        ...

    async def set_guild_cap(self, platform: str, guild_id: str, daily_cap: int) -> None:
        """Set a guild's daily cap of takes (0: no cap)."""
        ...

    async def add_guild_takes(self, platform: str, guild_id: str, day: str, takes: int) -> bool:
        """Count takes against the guild's day if they fit under its cap, atomically.

        Returns whether they were counted. A negative count gives takes back (never below 0).
        """
        ...

    # --- retention -------------------------------------------------------------------

    async def delete_old_guild_days(self, before: str, limit: int) -> int:
        """Delete up to ``limit`` guilds' day counts of days (ISO dates) before ``before``."""
        ...

    async def delete_ended_lines(self, limit: int) -> int:
        """Delete up to ``limit`` take counts of lines none of whose requests keeps its photo.

        A request belongs to the line first asked in it and to the line its address's
        ``extra["line_request"]`` names (another take of that line). A press under a take
        of a deleted line counts again from that take's own number on.
        """
        ...
