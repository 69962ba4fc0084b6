"""Answers that must be sent once: the first reply to an update, button answers."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from telegram import CallbackQuery, ForceReply, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.error import BadRequest

from .ingest import Ingest

log = logging.getLogger(__name__)


class ReplyOnce:
    """Send the first answer to an update once, even across a crash and replay."""

    def __init__(
        self,
        ingest: Ingest,
        key: str,
        message: Message,
        *,
        pace: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._ingest = ingest
        self._key = key
        self._message = message
        self._pace = pace  # waits for the chat's turn (Telegram's per-chat pace)

    async def send(
        self, text: str, *, markup: ForceReply | InlineKeyboardMarkup | None = None,
        quote: bool | None = None,
    ) -> int:  # fmt: skip
        """Reply to the message (quoting in groups, or when asked); return the message id."""
        done = self._ingest.first_reply(self._key)
        if done is not None:
            return int(done)
        if self._pace is not None:
            await self._pace()
        sent = await self._message.reply_text(text, do_quote=quote, reply_markup=markup)
        await self._ingest.record_first_reply(self._key, sent.message_id)
        return sent.message_id


def reply_to(message_id: str | None) -> ReplyParameters | None:
    """Return reply parameters for a stored message id (None: no reply)."""
    # The request may have been deleted meanwhile: answer anyway.
    if message_id is None:
        return None
    return ReplyParameters(int(message_id), allow_sending_without_reply=True)


async def answer(query: CallbackQuery, text: str | None = None, *, alert: bool = False) -> None:
    """Answer a button press; it must be answered even when nothing is shown."""
    try:
        await query.answer(text, show_alert=alert)
    except BadRequest as exc:
        # After a restart the query may be too old to answer; the action still happened.
        log.info("could not answer a button press: %s", exc.message)
