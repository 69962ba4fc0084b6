"""One status message per request, edited in place, and one pace per chat.

Platforms limit how fast a bot may write to one chat (Telegram: about one message a second
in a private chat and 20 a minute in a group, edits included). Each chat has a lane: every
message the bot sends or edits there takes a turn (``group_interval`` apart in groups,
``private_interval`` in private chats), whether it is a status edit, an acknowledgement or
a refusal (``pace``). Status changes wait for a turn and are coalesced meanwhile: a status
that changed five times while waiting is sent once, with its latest text.

The text is rendered from stored state when the turn comes: the request's takes as the
store has them (``take_line``), plus places in queues passed in with the updates. Any
process (an ingress that admitted the request, any worker driving one of its takes) edits
the message correctly: what a board keeps is a cache of what it sent, never the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.models import Job, JobState
from core.storage import ChatStore, JobStore

from .intents import place_of
from .platform import (
    Action,
    Blocked,
    Keyboard,
    MessageGone,
    NotModified,
    Place,
    Platform,
    PlatformError,
    Refused,
)
from .texts import TakeHint, cancel_button, status_text, take_line

log = logging.getLogger(__name__)

_BLOCK_MEMORY_SECONDS = 600.0  # after a 403, stay quiet in that chat this long
_MAX_FAILURES = 3
_COMPLETED_MEMORY = 1000


@dataclass
class _Status:
    request_id: str
    place: Place
    reply_to: str | None
    message_id: str | None
    locale: str | None
    owner: str
    group: bool
    hints: dict[int, TakeHint] = field(default_factory=dict)  # take -> its place in a queue
    shown: tuple[str, bool] | None = None
    cancel_id: str | None = None
    failures: int = 0
    complete: bool = False  # every take finished, as last read

    @property
    def chat_id(self) -> str:
        return self.place.chat_id


@dataclass
class _Lane:
    interval: float
    next_at: float = 0.0
    dirty: dict[str, None] = field(default_factory=dict)  # request ids, oldest first
    task: asyncio.Task[None] | None = None


class StatusBoard:
    """Keep each request's status message current without flooding its chat."""

    def __init__(
        self,
        platform: Platform,
        chatstate: ChatStore,
        store: JobStore,
        *,
        private_interval: float,
        group_interval: float,
        eta: Callable[[int], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._platform = platform
        self._chatstate = chatstate
        self._store = store
        self._eta = eta  # the ETA of a queue place, for a waiting take this board has no hint of
        self._private_interval = private_interval
        self._group_interval = group_interval
        self._clock = clock
        self._statuses: dict[str, _Status] = {}
        self._lanes: dict[str, _Lane] = {}
        self._blocked: dict[str, float] = {}  # chat -> when the 403 was seen
        self._completed: dict[str, None] = {}  # recently finished requests, oldest first

    # --- blocked chats ---------------------------------------------------------------

    def block(self, chat_id: str) -> None:
        """Remember that the user blocked the bot (a 403): stop talking to that chat."""
        self._blocked[chat_id] = self._clock()

    def unblock(self, chat_id: str) -> None:
        """Forget a block (the user wrote to the bot again)."""
        self._blocked.pop(chat_id, None)

    def is_blocked(self, chat_id: str) -> bool:
        """Return whether the chat answered 403 recently."""
        since = self._blocked.get(chat_id)
        if since is not None and self._clock() - since > _BLOCK_MEMORY_SECONDS:
            del self._blocked[chat_id]
            return False
        return since is not None

    # --- updates ---------------------------------------------------------------------

    def update(self, job: Job, hint: TakeHint | None = None) -> None:
        """Note that a take changed: its request's message is re-rendered when the lane allows.

        The text is rendered from the store then; ``hint`` is the take's place in a queue.
        """
        if job.request_id in self._completed:
            return  # a late view of a finished request must not edit it again
        status = self._status_for(job)
        if hint is not None:
            status.hints[job.take] = hint
        self._mark(status)

    def _status_for(self, job: Job) -> _Status:
        status = self._statuses.get(job.request_id)
        address = job.address
        if status is None:
            place = place_of(address)
            group = place.group
            status = _Status(
                request_id=job.request_id,
                place=place,
                reply_to=address.reply_to,
                message_id=address.status_message_id,
                locale=address.extra.get("locale"),
                owner=str(address.extra.get("user", "")),
                group=group,
            )
            self._statuses[job.request_id] = status
        elif status.message_id is None and address.status_message_id is not None:
            status.message_id = address.status_message_id
        return status

    def _lane(self, chat_id: str, group: bool) -> _Lane:
        lane = self._lanes.get(chat_id)
        if lane is None:
            interval = self._group_interval if group else self._private_interval
            lane = self._lanes[chat_id] = _Lane(interval)
        return lane

    async def pace(self, chat_id: str, *, group: bool) -> None:
        """Wait for the chat's next turn; call it before each message sent to the chat."""
        await self._turn(chat_id, self._lane(chat_id, group))

    async def _turn(self, chat_id: str, lane: _Lane) -> float:
        """Reserve the lane's next free turn, wait for it and return when it was."""
        now = self._clock()
        at = max(now, lane.next_at)
        lane.next_at = at + lane.interval
        # Keep the lane while its spacing still matters, so the next message waits too.
        asyncio.get_running_loop().call_later(lane.next_at - now, self._forget_lane, chat_id, lane)
        if at > now:
            await asyncio.sleep(at - now)
        woke = self._clock()
        if woke > at and lane.next_at == at + lane.interval:
            # A late wake-up (a busy event loop) must not shorten the gap to the next one.
            lane.next_at = woke + lane.interval
            at = woke
        return at

    def _mark(self, status: _Status) -> None:
        lane = self._lane(status.chat_id, status.group)
        lane.dirty[status.request_id] = None
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._drain(status.chat_id, lane))

    async def _drain(self, chat_id: str, lane: _Lane) -> None:
        while lane.dirty:
            at = await self._turn(chat_id, lane)
            request_id = next(iter(lane.dirty))
            del lane.dirty[request_id]
            status = self._statuses.get(request_id)
            if (status is None or not await self._apply(status)) and (
                lane.next_at == at + lane.interval
            ):
                lane.next_at = at  # nothing was sent: the turn is still free
            if status is not None and status.complete and request_id not in lane.dirty:
                self._statuses.pop(request_id, None)
                # A late, stale view of a finished request must not revive its status.
                self._completed[request_id] = None
                if len(self._completed) > _COMPLETED_MEMORY:
                    self._completed.pop(next(iter(self._completed)))

    def _forget_lane(self, chat_id: str, lane: _Lane) -> None:
        if self._lanes.get(chat_id) is not lane or lane.dirty:
            return
        if lane.task is not None and not lane.task.done():
            return  # the drain's next turn schedules another look
        wait = lane.next_at - self._clock()
        if wait > 0:
            asyncio.get_running_loop().call_later(wait, self._forget_lane, chat_id, lane)
        else:
            del self._lanes[chat_id]

    async def _render(self, status: _Status) -> tuple[str, bool] | None:
        """Return the status text and whether it has a cancel button, from the store."""
        jobs = await self._store.jobs_for_request(status.request_id)
        if not jobs:
            return None
        stored = jobs[0].address.status_message_id
        if stored is not None:
            status.message_id = stored  # another process may have posted a new one
        status.complete = all(job.state.is_terminal for job in jobs)
        lines: dict[int, str] = {}
        for job in jobs:
            hint = status.hints.get(job.take)
            if job.state is JobState.QUEUED and (hint is None or hint.provider):
                # Admitted or moved by another process: ask the store where it waits.
                position = await self._store.queue_position(job.id)
                eta = None if position is None or self._eta is None else self._eta(position)
                hint = TakeHint(position, eta)
            lines[job.take] = take_line(job, status.locale, hint)
        limit = self._platform.capabilities.text_limit
        text = status_text(lines, jobs[0].takes, status.locale, limit)
        waiting = any(job.state is JobState.QUEUED for job in jobs)
        return text, waiting

    async def _apply(self, status: _Status) -> bool:
        """Send or edit the status message; return whether a request was made."""
        if self.is_blocked(status.chat_id):
            return False
        try:
            rendered = await self._render(status)
        except Exception:
            log.exception("reading the status of %s failed", status.request_id)
            return False
        if rendered is None:
            return False
        text, with_cancel = rendered
        if status.shown == (text, with_cancel):
            return False
        try:
            buttons = await self._buttons(status) if with_cancel else None
            if status.message_id is None:
                await self._send_new(status, text, buttons)
            else:
                moved = await self._platform.edit(
                    status.place, status.message_id, text, buttons=buttons
                )
                if moved is not None and moved != status.message_id:
                    # Posted anew (the old message could no longer be edited): keep this one.
                    status.message_id = moved
                    await self._chatstate.set_status_message(status.request_id, moved)
            status.shown = (text, with_cancel)
        except NotModified:
            status.shown = (text, with_cancel)
        except MessageGone:
            # The user deleted the status message: the next change posts a new one (every
            # process: the stored id goes too).
            status.message_id = None
            try:
                await self._chatstate.set_status_message(status.request_id, None)
            except Exception:
                log.exception("forgetting the status message of %s failed", status.request_id)
        except Refused as exc:
            log.warning("status of %s not shown: %s", status.request_id, exc)
        except Blocked:
            log.info("chat %s blocked the bot; status updates stop", status.chat_id)
            self.block(status.chat_id)
        except PlatformError as exc:
            status.failures += 1
            log.warning("status of %s not shown (%s)", status.request_id, exc)
            if status.failures < _MAX_FAILURES:
                self._mark(status)
        return True

    async def _buttons(self, status: _Status) -> Keyboard:
        spec = cancel_button(status.locale)
        if status.cancel_id is None:
            [status.cancel_id] = await self._chatstate.add_buttons(
                self._platform.name, [(spec.action, status.request_id, None, status.owner)]
            )
        return [[Action(spec.label, status.cancel_id)]]

    async def _send_new(self, status: _Status, text: str, buttons: Keyboard | None) -> None:
        message_id = await self._platform.send(
            status.place, text, reply_to=status.reply_to, buttons=buttons
        )
        status.message_id = message_id
        await self._chatstate.set_status_message(status.request_id, message_id)

    async def close(self, timeout: float = 2.0) -> None:
        """Send the latest text of every changed status once, ignoring the spacing."""
        lanes = list(self._lanes.values())
        for lane in lanes:
            if lane.task is not None:
                lane.task.cancel()
        await asyncio.gather(*(lane.task for lane in lanes if lane.task), return_exceptions=True)
        pending = [
            self._statuses[request_id]
            for lane in lanes
            for request_id in lane.dirty
            if request_id in self._statuses
        ]
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(self._apply(s) for s in pending), return_exceptions=True),
                    timeout,
                )
