"""Durable intake of platform events: store first, confirm to the platform second, handle third.

An event that asks something of the bot is written to the inbox table before the platform
is told it arrived; handling happens after that, and whatever was not finished is replayed
at the next start. A redelivered event has the same key and is ignored. The first answer
to an event is remembered (``ReplyOnce``), so a replay does not send it twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from core.failpoints import Failpoints
from core.storage import ChatStore

log = logging.getLogger(__name__)

E = TypeVar("E")

_PRUNE_EVERY_SECONDS = 3600.0
_MAX_ATTEMPTS = 3  # replays of one event before it is given up as poison
_RETRY_SECONDS = 1.0  # first wait before handling a failed event again; doubles each time


@dataclass
class _Handling:
    """One run of an event's handlers."""

    attempts: int  # earlier runs that failed
    failed: bool = False


class Inbox(Generic[E]):
    """Store events in the inbox, then hand each one to ``handle`` exactly once."""

    def __init__(
        self,
        platform: str,
        chatstate: ChatStore,
        *,
        keyer: Callable[[E], str | None],
        encode: Callable[[E], str],
        decode: Callable[[str], E],
        handle: Callable[[E], Awaitable[None]],
        keep_handled_seconds: float,
        failpoints: Failpoints | None = None,
    ) -> None:
        self._platform = platform
        self._chatstate = chatstate
        self._keyer = keyer
        self._encode = encode
        self._decode = decode
        self._handle_event = handle  # reports failures through ``failed``; never raises
        # A handled key must outlive the platform's redelivery window to recognise a late one.
        self._keep_handled = keep_handled_seconds
        self._failpoints = failpoints or Failpoints()
        self._tasks: set[asyncio.Task[None]] = set()
        self._retries: set[asyncio.Task[None]] = set()  # failed events waiting to run again
        self._handling: dict[str, _Handling] = {}  # key -> its handling, while it runs
        self._first_replies: dict[str, str | None] = {}  # key -> first answer, while handled
        self._pruned_at = time.monotonic()

    async def accept(self, events: Sequence[E]) -> None:
        """Store the events that ask for something; return once they are durable."""
        keyed = [(event, self._keyer(event)) for event in events]
        rows = [(key, self._encode(event)) for event, key in keyed if key is not None]
        new = await self._chatstate.inbox_add(self._platform, rows)
        self._failpoints.hit(f"{self._platform}.after_store")
        if time.monotonic() - self._pruned_at > _PRUNE_EVERY_SECONDS:
            self._pruned_at = time.monotonic()
            await self._chatstate.inbox_prune(self._platform, self._keep_handled)
        for event, key in keyed:
            if key is None:
                continue  # not for us (group chatter, edits, other bots' commands)
            if key not in new:
                # Redelivered, or the same message in a second event: already stored and
                # handled (or being handled) once.
                log.info("event %s repeats; ignored", key)
                continue
            self._spawn(event, key, None)

    async def replay(self) -> int:
        """Hand stored but unfinished events to ``handle`` again (after a restart)."""
        entries = await self._chatstate.inbox_open(self._platform)
        for entry in entries:
            if entry.attempts >= _MAX_ATTEMPTS:
                log.error("giving up on event %s after %d attempts", entry.key, entry.attempts)
                await self._chatstate.inbox_done(self._platform, entry.key)
                continue
            await self._chatstate.inbox_attempt(self._platform, entry.key)
            event = self._decode(entry.payload)
            self._spawn(event, entry.key, entry.first_reply, entry.attempts + 1)
        await self._chatstate.inbox_prune(self._platform, self._keep_handled)
        return len(entries)

    def first_reply(self, key: str) -> str | None:
        """Return the first answer already sent for an event (set on replays)."""
        return self._first_replies.get(key)

    async def record_first_reply(self, key: str, message_id: str) -> None:
        """Remember the first answer, so a replay after a crash does not send it again."""
        self._first_replies[key] = message_id
        await self._chatstate.inbox_first_reply(self._platform, key, message_id)

    def failed(self, event: E) -> bool:
        """Record that handling an event failed; return whether it will be tried again.

        The error handler calls this for failures that may pass (a store or network
        error). A permanent refusal is an answer, not a failure: the handler returns.
        """
        key = self._keyer(event)
        handling = None if key is None else self._handling.get(key)
        if handling is None:
            return False
        handling.failed = True
        return handling.attempts < _MAX_ATTEMPTS

    def _spawn(self, event: E, key: str, first_reply: str | None, attempts: int = 0) -> None:
        self._first_replies[key] = first_reply
        task = asyncio.create_task(
            self._handle(event, key, attempts), name=f"{self._platform}-{key}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, event: E, key: str, attempts: int) -> None:
        handling = self._handling[key] = _Handling(attempts)
        try:
            await self._handle_event(event)
            if handling.failed and attempts < _MAX_ATTEMPTS:
                # Not done: it stays in the inbox (a restart replays it) and runs again soon.
                await self._chatstate.inbox_attempt(self._platform, key)
                self._retry(event, key, attempts + 1)
            else:
                if handling.failed:
                    log.error("giving up on event %s after %d attempts", key, attempts + 1)
                await self._chatstate.inbox_done(self._platform, key)
        except asyncio.CancelledError:
            raise  # shutting down: left open, replayed at the next start
        except Exception:
            log.exception("could not finish event %s", key)
        finally:
            self._handling.pop(key, None)
            self._first_replies.pop(key, None)

    def _retry(self, event: E, key: str, attempts: int) -> None:
        first_reply = self._first_replies.get(key)

        async def later() -> None:
            await asyncio.sleep(_RETRY_SECONDS * 2 ** (attempts - 1))
            self._spawn(event, key, first_reply, attempts)

        task = asyncio.create_task(later(), name=f"{self._platform}-retry-{key}")
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
