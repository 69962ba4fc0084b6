"""Durable intake of updates: store first, confirm to Telegram second, handle third.

PTB's own ``Updater`` confirms a batch (by asking for the next offset) as soon as it has
fetched it, before any handler ran: a crash then loses the batch. Here the offset moves
only after every update that asks something of the bot is in the inbox table; handling
happens after that, and whatever was not finished is replayed at the next start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from telegram import Bot, Update
from telegram.error import Conflict, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application
from telegram.warnings import PTBDeprecationWarning

from core.chatstate import ChatState
from core.failpoints import Failpoints

from .routing import PLATFORM

log = logging.getLogger(__name__)

# Telegram keeps an unconfirmed update for at most 24 h; a handled key must outlive that
# to recognise a late redelivery.
_KEEP_HANDLED_SECONDS = 26 * 3600
_PRUNE_EVERY_SECONDS = 3600.0
_MAX_ATTEMPTS = 3  # replays of one update before it is given up as poison
_RETRY_SECONDS = 1.0  # first wait before handling a failed update again; doubles each time
_ALLOWED_UPDATES = ("message", "callback_query")


def retry_seconds(exc: RetryAfter) -> float:
    """Return a RetryAfter's wait in seconds, whether PTB gives an int or a timedelta."""
    # Reading ``retry_after`` warns while PTB moves it from int seconds to a timedelta.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class Ingest:
    """Store updates in the inbox, then hand each one to the Application exactly once."""

    def __init__(
        self,
        app: Application,  # type: ignore[type-arg]
        chatstate: ChatState,
        keyer: Callable[[Update], str | None],
        *,
        failpoints: Failpoints | None = None,
    ) -> None:
        self._app = app
        self._chatstate = chatstate
        self._keyer = keyer
        self._failpoints = failpoints or Failpoints()
        self._tasks: set[asyncio.Task[None]] = set()
        self._retries: set[asyncio.Task[None]] = set()  # failed updates waiting to run again
        self._handling: dict[int, _Handling] = {}  # update_id -> its handling, while it runs
        self._first_replies: dict[str, str | None] = {}  # key -> first answer, while handled
        self._pruned_at = time.monotonic()

    @property
    def bot(self) -> Bot:
        """Return the Application's bot."""
        bot: Bot = self._app.bot
        return bot

    async def accept(self, updates: Sequence[Update]) -> None:
        """Store the updates that ask for something; return once they are durable."""
        keyed = [(update, self._keyer(update)) for update in updates]
        rows = [(key, update.to_json()) for update, key in keyed if key is not None]
        new = await self._chatstate.inbox_add(PLATFORM, rows)
        self._failpoints.hit("telegram.after_store")
        if time.monotonic() - self._pruned_at > _PRUNE_EVERY_SECONDS:
            self._pruned_at = time.monotonic()
            await self._chatstate.inbox_prune(PLATFORM, _KEEP_HANDLED_SECONDS)
        for update, key in keyed:
            if key is None:
                continue  # not for us (group chatter, edits, other bots' commands)
            if key not in new:
                # Redelivered, or the same message in a second update: already stored and
                # handled (or being handled) once.
                log.info("update %s repeats %s; ignored", update.update_id, key)
                continue
            self._spawn(update, key, None)

    async def replay(self) -> int:
        """Hand stored but unfinished updates to the Application again (after a restart)."""
        entries = await self._chatstate.inbox_open(PLATFORM)
        for entry in entries:
            if entry.attempts >= _MAX_ATTEMPTS:
                log.error("giving up on update %s after %d attempts", entry.key, entry.attempts)
                await self._chatstate.inbox_done(PLATFORM, entry.key)
                continue
            await self._chatstate.inbox_attempt(PLATFORM, entry.key)
            update = Update.de_json(json.loads(entry.payload), self.bot)
            self._spawn(update, entry.key, entry.first_reply, entry.attempts + 1)
        await self._chatstate.inbox_prune(PLATFORM, _KEEP_HANDLED_SECONDS)
        return len(entries)

    def first_reply(self, key: str) -> str | None:
        """Return the first answer already sent for an update (set on replays)."""
        return self._first_replies.get(key)

    async def record_first_reply(self, key: str, message_id: str) -> None:
        """Remember the first answer, so a replay after a crash does not send it again."""
        self._first_replies[key] = message_id
        await self._chatstate.inbox_first_reply(PLATFORM, key, message_id)

    def failed(self, update: Update) -> bool:
        """Record that handling an update failed; return whether it will be tried again.

        The error handler calls this for failures that may pass (a store or network
        error). A permanent refusal is an answer, not a failure: the handler returns.
        """
        handling = self._handling.get(update.update_id)
        if handling is None:
            return False
        handling.failed = True
        return handling.attempts < _MAX_ATTEMPTS

    def _spawn(self, update: Update, key: str, first_reply: str | None, attempts: int = 0) -> None:
        self._first_replies[key] = first_reply
        task = asyncio.create_task(self._handle(update, key, attempts), name=f"telegram-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, update: Update, key: str, attempts: int) -> None:
        handling = self._handling[update.update_id] = _Handling(attempts)
        try:
            # Handler errors go to the Application's error handler, which reports them
            # through ``failed``; process_update itself returns.
            await self._app.process_update(update)
            if handling.failed and attempts < _MAX_ATTEMPTS:
                # Not done: it stays in the inbox (a restart replays it) and runs again soon.
                await self._chatstate.inbox_attempt(PLATFORM, key)
                self._retry(update, key, attempts + 1)
            else:
                if handling.failed:
                    log.error("giving up on update %s after %d attempts", key, attempts + 1)
                await self._chatstate.inbox_done(PLATFORM, key)
        except asyncio.CancelledError:
            raise  # shutting down: left open, replayed at the next start
        except Exception:
            log.exception("could not finish update %s", key)
        finally:
            self._handling.pop(update.update_id, None)
            self._first_replies.pop(key, None)

    def _retry(self, update: Update, key: str, attempts: int) -> None:
        first_reply = self._first_replies.get(key)

        async def later() -> None:
            await asyncio.sleep(_RETRY_SECONDS * 2 ** (attempts - 1))
            self._spawn(update, key, first_reply, attempts)

        task = asyncio.create_task(later(), name=f"telegram-retry-{key}")
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def drain(self, timeout: float) -> None:
        """Let handlers finish for up to ``timeout`` seconds, then cancel the rest."""
        for task in self._retries:
            task.cancel()  # waiting to run again: the inbox keeps them for the next start
        await asyncio.gather(*self._retries, return_exceptions=True)
        if not self._tasks:
            return
        _, pending = await asyncio.wait(list(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


@dataclass
class _Handling:
    """One run of an update's handlers."""

    attempts: int  # earlier runs that failed
    failed: bool = False


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
            except (NetworkError, Conflict, TelegramError) as exc:
                # Conflict: another process polls this token; keep trying, loudly.
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
