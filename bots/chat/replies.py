"""Answers that must be sent once: the first reply to a user's message, even on replay."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from .platform import AskReply, Origin, Platform


class FirstReplies(Protocol):
    """Where an adapter's inbox keeps the first answer sent for each stored event."""

    def first_reply(self, key: str) -> str | None:
        """Return the first answer already sent for an event (set on replays)."""
        ...

    async def record_first_reply(self, key: str, message_id: str) -> None:
        """Remember the first answer, so a replay after a crash does not send it again."""
        ...


class ReplyOnce:
    """Send the first answer to an event once, even across a crash and replay."""

    def __init__(
        self,
        inbox: FirstReplies,
        key: str,
        platform: Platform,
        origin: Origin,
        *,
        pace: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._inbox = inbox
        self._key = key
        self._platform = platform
        self.origin = origin
        self._pace = pace  # waits for the chat's turn (the platform's per-chat pace)

    async def send(
        self,
        text: str,
        *,
        ask: AskReply | None = None,
        quote: bool | None = None,
        private: bool = False,
    ) -> str:
        """Reply to the message (quoting in groups, or when asked); return the message id."""
        done = self._inbox.first_reply(self._key)
        if done is not None:
            return done
        if self._pace is not None:
            await self._pace()
        sent = await self._platform.reply(self.origin, text, quote=quote, ask=ask, private=private)
        await self._inbox.record_first_reply(self._key, sent)
        return sent
