"""The core's Notifier for Telegram: status changes and result delivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaVideo,
    ReplyParameters,
)
from telegram.constants import ChatAction
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from core.delivery import fit_video_async
from core.errors import DeliveryError, DeliveryUnknown
from core.models import EventKind, Job, JobEvent
from core.storage import ChatStore

from .render import album_buttons_text, album_captions, caption, result_buttons, status_line
from .routing import PLATFORM
from .status import StatusBoard

log = logging.getLogger(__name__)

PUBLIC_UPLOAD_LIMIT = 50 * 1000 * 1000  # Bot API upload limit, decimal MB to stay clear of it
LOCAL_UPLOAD_LIMIT = 2000 * 1000 * 1000  # self-hosted Bot API server in --local mode
_CHAT_ACTION_EVERY = 4.5  # an action shows for 5 s at most: repeat it while uploading
_FINAL = frozenset({EventKind.DELIVERED, EventKind.FAILED, EventKind.CANCELED})
# Telegram answers an upload only after processing the video: wait for that answer at
# least this long, and longer for bigger files (PTB's default read timeout is 5 s).
MEDIA_READ_TIMEOUT = 60.0
_UPLOAD_BYTES_PER_SECOND = 500_000  # assume at least 0.5 MB/s for sending...
_PROCESS_BYTES_PER_SECOND = 250_000  # ...and for Telegram to process what it received
# httpx failures that leave the request unsent (PTB raises them ``from`` the httpx
# exception): no connection, no free pooled connection, or a body that never got through.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteTimeout)


def is_too_large(exc: TelegramError) -> bool:
    """Return whether Telegram refused an upload for its size (HTTP 413).

    PTB maps 413 to a plain ``NetworkError``; only the description tells it apart.
    """
    return "too large" in exc.message.lower() or "(413)" in exc.message


def outcome_unknown(exc: TelegramError) -> bool:
    """Return whether Telegram may have acted on a request that failed with ``exc``.

    An answer from Telegram (any HTTP status) says what happened. Without one, PTB's
    ``TimedOut``/``NetworkError`` wraps the httpx exception as ``__cause__``: a failure to
    connect or to send the whole body left the request unsent, but a read timeout or a
    connection closed while waiting for the answer came after Telegram may have taken it.
    (httpcore swallows a write error and reads on, so a dropped upload shows as a read error.)
    """
    cause = exc.__cause__
    return isinstance(cause, httpx.TransportError) and not isinstance(cause, _NOT_SENT)


def media_timeouts(size: int, least_read: float = MEDIA_READ_TIMEOUT) -> tuple[float, float]:
    """Return the write and read timeouts for uploading ``size`` bytes of media."""
    write = max(20.0, size / _UPLOAD_BYTES_PER_SECOND)
    read = max(least_read, size / _PROCESS_BYTES_PER_SECOND)
    return write, read


class TelegramNotifier:
    """Show status changes in the requester's chat and upload results there."""

    def __init__(
        self,
        bot: Bot,
        board: StatusBoard,
        chatstate: ChatStore,
        *,
        max_upload_bytes: int,
        work_dir: Path,
        local_mode: bool = False,
        media_read_timeout: float = MEDIA_READ_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bot = bot
        self._board = board
        self._chatstate = chatstate
        self.max_upload_bytes = max_upload_bytes
        self._work_dir = work_dir
        self._local_mode = local_mode
        self.media_read_timeout = media_read_timeout  # the least wait for an upload's answer
        self._clock = clock

    async def notify(self, event: JobEvent) -> None:
        """Update the request's status message (throttled; never raises)."""
        job = event.job
        locale = job.address.extra.get("locale")
        line = status_line(event, locale)
        self._board.update(
            job, line, waiting=event.kind is EventKind.QUEUED, final=event.kind in _FINAL
        )

    async def deliver(self, job: Job, video: Path) -> None:
        """Upload the video as a reply to the request, with the result buttons."""
        address = job.address
        chat_id = int(address.chat_id)
        if self._board.is_blocked(chat_id):
            # Known 403: asking again would only add to the invalid-request count.
            raise DeliveryError("the user blocked the bot", permanent=True)
        # Never upload what Telegram would refuse with 413: fit it first (or refuse).
        fitted = await fit_video_async(video, self.max_upload_bytes, self._work_dir)
        locale = address.extra.get("locale")
        owner = str(address.extra.get("user", ""))
        text = caption(job, locale)
        markup = await self._result_markup(job, locale, owner)
        thread = None if address.thread_id is None else int(address.thread_id)
        reply = _reply_to(address.reply_to)
        # Local mode: the server reads the file itself (PTB sends a file:// URI).
        payload: Path | bytes = (
            fitted if self._local_mode else await asyncio.to_thread(fitted.read_bytes)
        )
        write_timeout, read_timeout = media_timeouts(fitted.stat().st_size, self.media_read_timeout)
        action = asyncio.create_task(self._upload_action(chat_id, thread))
        try:
            message = await self._bot.send_video(
                chat_id,
                payload,
                caption=text,
                supports_streaming=True,
                reply_parameters=reply,
                message_thread_id=thread,
                reply_markup=markup,
                filename=f"{job.id}.mp4",
                write_timeout=write_timeout,
                read_timeout=read_timeout,
            )
        except TelegramError as exc:
            raise self._delivery_error(exc, chat_id, fitted.stat().st_size) from exc
        finally:
            action.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await action
            if fitted != video:
                fitted.unlink(missing_ok=True)
        if message.video is not None and owner:
            # The video arrived: a bookkeeping error must not turn it into a failed take.
            try:
                await self._chatstate.add_history(
                    PLATFORM, owner, job.id, address.chat_id, message.video.file_id, text
                )
            except Exception:
                log.exception("recording history for job %s failed", job.id)

    async def deliver_group(self, jobs: list[Job], videos: list[Path]) -> None:
        """Upload several takes as one album replying to the request, then their buttons.

        An album cannot carry buttons, so one short message after it does. An album holds
        at most 10 items, which is also the settings' cap on takes.
        """
        first = jobs[0]
        address = first.address
        chat_id = int(address.chat_id)
        if self._board.is_blocked(chat_id):
            raise DeliveryError("the user blocked the bot", permanent=True)
        locale = address.extra.get("locale")
        owner = str(address.extra.get("user", ""))
        thread = None if address.thread_id is None else int(address.thread_id)
        fitted: list[Path] = []
        action = asyncio.create_task(self._upload_action(chat_id, thread))
        try:
            for video in videos:
                fitted.append(await fit_video_async(video, self.max_upload_bytes, self._work_dir))
            payloads: list[Path | bytes] = [
                path if self._local_mode else await asyncio.to_thread(path.read_bytes)
                for path in fitted
            ]
            size = sum(path.stat().st_size for path in fitted)
            media = [
                InputMediaVideo(
                    payload,
                    caption=text,
                    supports_streaming=True,
                    filename=f"{job.id}.mp4",
                )
                for job, payload, text in zip(
                    jobs, payloads, album_captions(jobs, locale), strict=True
                )
            ]
            write_timeout, read_timeout = media_timeouts(size, self.media_read_timeout)
            try:
                messages = await self._bot.send_media_group(
                    chat_id,
                    media,
                    reply_parameters=_reply_to(address.reply_to),
                    message_thread_id=thread,
                    write_timeout=write_timeout,
                    read_timeout=read_timeout,
                )
            except TelegramError as exc:
                raise self._delivery_error(exc, chat_id, size) from exc
        finally:
            action.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await action
            for path, video in zip(fitted, videos, strict=False):
                if path != video:
                    path.unlink(missing_ok=True)
        try:
            for job, message in zip(jobs, messages, strict=False):
                if owner and message.video is not None:
                    await self._chatstate.add_history(
                        PLATFORM, owner, job.id, address.chat_id, message.video.file_id,
                        caption(job, locale),
                    )  # fmt: skip
        except Exception:
            # The album arrived: a bookkeeping error must not make the worker send it again.
            log.exception("recording history for request %s failed", first.request_id)
        try:
            await self._bot.send_message(
                chat_id,
                album_buttons_text(len(jobs), locale),
                reply_parameters=_reply_to(str(messages[0].message_id) if messages else None),
                message_thread_id=thread,
                reply_markup=await self._result_markup(first, locale, owner),
            )
        except Exception as exc:
            # The videos arrived: sending the album again for its buttons would be worse.
            log.warning("buttons after the album in chat %s failed: %r", chat_id, exc)

    def _delivery_error(self, exc: TelegramError, chat_id: int, size: int) -> DeliveryError:
        """Translate a failed upload into the core's error, remembering a blocked chat."""
        if outcome_unknown(exc):
            # Maybe delivered: sending again could show the same video twice, or five times.
            return DeliveryUnknown(f"no answer to the upload of {size} bytes: {exc.message}")
        if isinstance(exc, Forbidden):
            self._board.block(chat_id)
            return DeliveryError(f"forbidden: {exc.message}", permanent=True)
        if isinstance(exc, BadRequest):
            # The chat, topic or permission is gone; sending again will not change that.
            return DeliveryError(f"refused: {exc.message}", permanent=True)
        if isinstance(exc, RetryAfter):
            return DeliveryError("flood control after retries", permanent=False)
        if isinstance(exc, NetworkError):
            if is_too_large(exc):
                return DeliveryError(
                    f"413 for {size} bytes",
                    permanent=True,
                    key="job.too_large_to_deliver",
                    size_mb=size / 1e6,
                    limit_mb=self.max_upload_bytes / 1e6,
                )
            return DeliveryError(f"network: {exc.message}", permanent=False)
        return DeliveryError(f"telegram: {exc.message}", permanent=False)

    async def _result_markup(
        self, job: Job, locale: str | None, owner: str
    ) -> InlineKeyboardMarkup:
        specs = result_buttons(job, locale)
        ids = await self._chatstate.add_buttons(
            PLATFORM, [(spec.action, job.request_id, job.id, owner) for spec in specs]
        )
        return InlineKeyboardMarkup(
            [
                [InlineKeyboardButton(spec.label, callback_data=button_id)]
                for spec, button_id in zip(specs, ids, strict=True)
            ]
        )

    async def _upload_action(self, chat_id: int, thread: int | None) -> None:
        while True:
            try:
                await self._bot.send_chat_action(
                    chat_id, ChatAction.UPLOAD_VIDEO, message_thread_id=thread
                )
            except TelegramError as exc:
                log.debug("chat action failed: %s", exc)
                return
            await asyncio.sleep(_CHAT_ACTION_EVERY)


def _reply_to(message_id: str | None) -> ReplyParameters | None:
    """Return reply parameters that still send if the message was deleted meanwhile."""
    if message_id is None:
        return None
    return ReplyParameters(int(message_id), allow_sending_without_reply=True)
