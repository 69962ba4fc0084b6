"""Durable intake of updates: fetch, store in the inbox (``bots.chat.inbox``), confirm.

PTB's own ``Updater`` confirms a batch (by asking for the next offset) as soon as it has
fetched it, before any handler ran: a crash then loses the batch. Here the offset moves
only after every update that asks something of the bot is in the inbox table; handling
happens after that, and whatever was not finished is replayed at the next start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from collections.abc import Callable
from datetime import timedelta

from telegram import Bot, Update
from telegram.error import Conflict, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application
from telegram.warnings import PTBDeprecationWarning

from bots.adapters import AdapterUnavailable
from bots.chat.inbox import Inbox
from core.failpoints import Failpoints
from core.storage import ChatStore

from .routing import PLATFORM

log = logging.getLogger(__name__)

# Telegram keeps an unconfirmed update for at most 24 h; a handled key must outlive that
# to recognise a late redelivery.
_KEEP_HANDLED_SECONDS = 26 * 3600
_ALLOWED_UPDATES = ("message", "callback_query")


def retry_seconds(exc: RetryAfter) -> float:
    """Return a RetryAfter's wait in seconds, whether PTB gives an int or a timedelta."""
    # Reading ``retry_after`` warns while PTB moves it from int seconds to a timedelta.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class Ingest(Inbox[Update]):
    """The inbox for Telegram updates, handed to the PTB Application exactly once."""

    def __init__(
        self,
        app: Application,  # type: ignore[type-arg]
        chatstate: ChatStore,
        keyer: Callable[[Update], str | None],
        *,
        failpoints: Failpoints | None = None,
    ) -> None:
        super().__init__(
            PLATFORM,
            chatstate,
            keyer=keyer,
            encode=lambda update: update.to_json(),
            decode=lambda payload: Update.de_json(json.loads(payload), app.bot),
            # Handler errors go to the Application's error handler, which reports them
            # through ``failed``; process_update itself returns.
            handle=app.process_update,
            keep_handled_seconds=_KEEP_HANDLED_SECONDS,
            failpoints=failpoints,
        )
        self._app = app

    @property
    def bot(self) -> Bot:
        """Return the Application's bot."""
        bot: Bot = self._app.bot
        return bot


class Poller:
    """Long-poll getUpdates; confirm a batch only after ``Ingest`` stored it."""

    def __init__(
        self,
        ingest: Ingest,
        *,
        timeout: int,
        failpoints: Failpoints | None = None,
    ) -> None:
        self._ingest = ingest
        self._timeout = timeout
        self._failpoints = failpoints or Failpoints()
        self._offset = 0

    async def run(self) -> None:
        """Fetch and store updates until canceled."""
        bot = self._ingest.bot
        # Polling and a webhook are exclusive; PTB's start_polling clears it the same way.
        await bot.delete_webhook()
        backoff = 1.0
        while True:
            try:
                updates = await bot.get_updates(
                    offset=self._offset or None,
                    timeout=self._timeout,
                    allowed_updates=list(_ALLOWED_UPDATES),
                )
            except InvalidToken:
                raise
            except RetryAfter as exc:
                await asyncio.sleep(retry_seconds(exc))
                continue
            except Conflict as exc:
                # Telegram hands updates to one poller per token: another process has them.
                raise AdapterUnavailable(
                    "Another process is already polling this Telegram bot token"
                    " (409 Conflict from getUpdates).",
                    "Run exactly one polling ingress per token, or set telegram.webhook_url"
                    " to run any number of ingress processes behind webhooks.",
                ) from exc
            except (NetworkError, TelegramError) as exc:
                log.warning("getUpdates failed (%s); retrying in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(30.0, backoff * 2)
                continue
            except Exception:
                # PTB could not parse the batch (it logged the raw data). Nothing was
                # confirmed; try again later rather than stop taking requests.
                log.exception("unreadable getUpdates answer; retrying in %.0f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(30.0, backoff * 2)
                continue
            backoff = 1.0
            if not updates:
                continue
            self._failpoints.hit("telegram.after_fetch")
            try:
                await self._ingest.accept(updates)
            except Exception:
                # Not stored: do not confirm; Telegram hands the batch out again.
                log.exception("could not store %d updates; fetching them again", len(updates))
                await asyncio.sleep(1.0)
                continue
            self._offset = max(self._offset, *(u.update_id + 1 for u in updates))

    async def confirm(self) -> None:
        """Confirm what was stored (a last getUpdates with the offset, no waiting)."""
        if self._offset:
            try:
                await self._ingest.bot.get_updates(offset=self._offset, timeout=0, limit=1)
            except Exception as exc:  # shutting down: the next start confirms instead
                log.info("could not confirm updates at shutdown: %s", exc)
