"""PTB handlers: messages become requests, buttons act on stored requests.

Thin glue: ``routing`` decides what a message asks, the core decides whether it is
allowed, and ``StatusBoard`` owns the status message after the first answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from telegram import (
    Bot,
    CallbackQuery,
    ForceReply,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
)
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, CallbackContext, CallbackQueryHandler, MessageHandler, filters

from config.settings import PromptSettings, TelegramSettings
from core.chatstate import ChatState, RememberedPhoto
from core.errors import ImageRejected, RequestRejected, UserError
from core.i18n import render
from core.models import DeliveryAddress, JobState, UserRef, VideoRequest
from core.service import Admission, Service
from core.store import Store

from .commands import Commands
from .ingest import Ingest
from .render import queued_line
from .routing import (
    PLATFORM,
    Command,
    Generate,
    Me,
    PhotoRef,
    address_for,
    route,
    source_key,
    user_locale,
    user_ref,
)
from .status import StatusBoard

log = logging.getLogger(__name__)

Context = CallbackContext[Any, Any, Any, Any]


@dataclass
class Deps:
    """What the handlers use, built once by the composition root."""

    bot: Bot
    service: Service
    store: Store
    chatstate: ChatState
    board: StatusBoard
    ingest: Ingest
    settings: TelegramSettings
    prompts: PromptSettings
    me: Me


class Handlers:
    """Message and button handlers for the Application."""

    def __init__(self, deps: Deps) -> None:
        self._d = deps
        self._commands = Commands(deps.bot, deps.service, deps.store, deps.chatstate,
                                  deps.settings, deps.prompts)  # fmt: skip
        # Per-chat order for the quick part of a message (remembering a photo before the
        # line that follows it); downloads and admission run concurrently.
        self._chat_locks: dict[int, tuple[asyncio.Lock, int]] = {}  # lock, holders + waiters
        # Downloads and image decoding compete with the event loop for the CPU (and the
        # GIL); a burst of large photos must not delay the acknowledgements of the next
        # requests, so only a few are prepared at once and the rest wait their turn.
        self._heavy = asyncio.Semaphore(max(1, os.cpu_count() or 1))

    def register(self, app: Application) -> None:  # type: ignore[type-arg]
        """Add the handlers to an Application."""
        app.add_handler(CallbackQueryHandler(self.on_button))
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self.on_message))
        app.add_error_handler(self.on_error)

    @contextlib.asynccontextmanager
    async def _chat_lock(self, chat_id: int) -> AsyncIterator[None]:
        """Serialise the quick part of one chat's messages; forget idle chats' locks."""
        lock, users = self._chat_locks.get(chat_id, (asyncio.Lock(), 0))
        self._chat_locks[chat_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._chat_locks[chat_id]
            if users <= 1:
                del self._chat_locks[chat_id]
            else:
                self._chat_locks[chat_id] = (lock, users - 1)

    async def _locale(self, user_id: int, update_user: Any) -> str:
        chosen = await self._d.chatstate.locale(PLATFORM, str(user_id))
        return user_locale(chosen, update_user)

    # --- messages --------------------------------------------------------------------

    async def on_message(self, update: Update, context: Context) -> None:
        """Turn a message into a request, a question for the line, or a command answer."""
        message = update.message
        if message is None or message.from_user is None:
            return
        action = route(message, self._d.me, group_trigger=self._d.settings.group_trigger)
        if action is None:
            return
        self._d.board.unblock(message.chat_id)  # writing to the bot undoes a block
        locale = await self._locale(message.from_user.id, message.from_user)
        key = source_key(message.chat_id, message.message_id)
        if isinstance(action, Command):
            await self._commands.run(message, action, locale, self._reply_once(key, message))
        else:
            await self._generate(message, action, locale, key)

    def _reply_once(self, key: str, message: Message) -> ReplyOnce:
        return ReplyOnce(self._d.ingest, key, message)

    async def _generate(self, message: Message, intent: Generate, locale: str, key: str) -> None:
        assert message.from_user is not None
        user_id = str(message.from_user.id)
        chat = str(message.chat_id)
        reply = self._reply_once(key, message)
        async with self._chat_lock(message.chat_id):
            remembered: RememberedPhoto | None = None
            if intent.photo is not None:
                await self._d.chatstate.remember_photo(
                    PLATFORM, chat, user_id,
                    file_ref=intent.photo.file_id, message_id=str(intent.photo.message_id),
                )  # fmt: skip
            else:
                remembered = await self._d.chatstate.last_photo(
                    PLATFORM, chat, user_id, self._d.settings.photo_memory_seconds
                )
                if remembered is None:
                    await reply.send(render("tg.need_photo", locale))
                    return
            if intent.line is None:
                prompt = ForceReply(
                    selective=True,
                    input_field_placeholder=render("tg.ask_line_placeholder", locale)[:64],
                )
                await reply.send(render("tg.ask_line", locale), markup=prompt)
                return
            status_id = await reply.send(
                render("tg.ack_album" if intent.album else "tg.ack", locale), quote=True
            )
        address = address_for(message, user_id=user_id, locale=locale, status_message_id=status_id)
        await self._admit(
            lambda: self._image(intent.photo, remembered),
            user=user_ref(message.from_user, locale),
            line=intent.line,
            address=address,
            key=key,
            locale=locale,
        )

    async def _admit(
        self,
        image: Any,
        *,
        user: UserRef,
        line: str,
        address: DeliveryAddress,
        key: str,
        locale: str,
        **options: Any,
    ) -> Admission | None:
        """Fetch the image, submit the request and show its place in the queue."""
        chat_id = int(address.chat_id)
        status_id = int(address.status_message_id) if address.status_message_id else None
        try:
            async with self._heavy:
                jpeg = await image()
                request = VideoRequest(
                    user=user, image=jpeg, line=line, address=address, source_key=key, **options
                )
                admission = await self._d.service.submit(request)
        except RequestRejected as exc:
            if exc.key == "request.duplicate":
                return None  # stored before a crash; the worker's events take it from here
            await self._show_error(chat_id, status_id, render(exc.key, locale, **exc.params))
            return None
        except UserError as exc:
            await self._show_error(chat_id, status_id, render(exc.key, locale, **exc.params))
            return None
        except TelegramError as exc:
            log.warning("could not fetch the photo for %s: %s", key, exc)
            await self._show_error(chat_id, status_id, render("tg.fetch_failed", locale))
            return None
        for index, job in enumerate(admission.jobs):
            position = (
                admission.position if index == 0 else await self._d.store.queue_position(job.id)
            )
            if position is None:
                continue  # already started: the worker's events say so
            eta = admission.eta_seconds if index == 0 else self._d.service.eta_for(position)
            line_text = queued_line(position, eta, locale)
            self._d.board.update(job, line_text, waiting=True, final=False, fresh=False)
        return admission

    async def _image(self, photo: PhotoRef | None, remembered: RememberedPhoto | None) -> bytes:
        """Download the photo (or take a stored request's image)."""
        if photo is None and remembered is not None and remembered.request_id is not None:
            jpeg, _, _ = await self._d.store.request_image(remembered.request_id)
            return jpeg
        file_id = (
            photo.file_id if photo is not None else (remembered.file_ref if remembered else None)
        )
        if file_id is None:
            raise ImageRejected("image.empty")
        limit = self._d.settings.max_download_bytes
        size = photo.file_size if photo is not None else None
        if size is not None and size > limit and not self._d.settings.local_mode:
            # The public Bot API refuses getFile above 20 MB: say so instead of failing.
            raise ImageRejected("image.too_many_bytes", size_mb=size / 1e6, limit_mb=limit / 1e6)
        telegram_file = await self._d.bot.get_file(file_id)
        return bytes(await telegram_file.download_as_bytearray())

    async def _show_error(self, chat_id: int, status_id: int | None, text: str) -> None:
        """Turn the acknowledgement into the error (or post it, if there is none)."""
        try:
            if status_id is not None:
                await self._d.bot.edit_message_text(text, chat_id=chat_id, message_id=status_id)
                return
        except BadRequest as exc:
            log.info("could not edit the acknowledgement: %s", exc.message)
        await self._d.bot.send_message(chat_id, text)

    # --- buttons ---------------------------------------------------------------------

    async def on_button(self, update: Update, context: Context) -> None:
        """Act on a result or status button, for its requester or an admin only."""
        query = update.callback_query
        if query is None:
            return
        locale = await self._locale(query.from_user.id, query.from_user)
        button = await self._d.chatstate.button(PLATFORM, query.data or "")
        if button is None:
            await _answer(query, render("tg.button_expired", locale))
            return
        presser = str(query.from_user.id)
        admin = query.from_user.id in self._d.settings.admin_ids
        if presser != button.owner and not admin:
            # Someone else's buttons do nothing; the alert is shown to the presser only.
            await _answer(query, render("request.not_owner", locale), alert=True)
            return
        if button.action == "cancel":
            await self._cancel(query, button.request_id, admin, locale)
        elif button.action == "newline":
            await self._ask_new_line(query, button.request_id, button.owner, locale)
        elif button.action in ("retake", "switch") and button.job_id is not None:
            await self._retake(query, button.job_id, button.action, button.owner, locale)
        else:
            await _answer(query, render("tg.button_expired", locale))

    async def _cancel(
        self, query: CallbackQuery, request_id: str, admin: bool, locale: str
    ) -> None:
        user = UserRef(PLATFORM, str(query.from_user.id))
        canceled = 0
        for job in await self._d.service.status(request_id):
            if job.state is not JobState.QUEUED:
                continue
            try:
                await self._d.service.cancel(job.id, user, admin=admin)
                canceled += 1
            except RequestRejected as exc:
                log.info("cancel of %s refused: %s", job.id, exc.key)
        text = (
            render("tg.canceled", locale, count=canceled)
            if canceled
            else render("request.not_cancelable", locale)
        )
        await _answer(query, text)

    async def _ask_new_line(
        self, query: CallbackQuery, request_id: str, owner: str, locale: str
    ) -> None:
        jobs = await self._d.service.status(request_id)
        address = jobs[0].address
        await self._d.chatstate.remember_photo(
            PLATFORM, address.chat_id, owner, request_id=request_id
        )
        await _answer(query)
        # Reply to the request so that a selective ForceReply targets its sender.
        await self._d.bot.send_message(
            int(address.chat_id),
            render("tg.new_line_prompt", locale),
            reply_parameters=_reply_to(address.reply_to),
            message_thread_id=None if address.thread_id is None else int(address.thread_id),
            reply_markup=ForceReply(selective=True),
        )

    async def _retake(
        self, query: CallbackQuery, job_id: str, action: str, owner: str, locale: str
    ) -> None:
        base = await self._d.store.job(job_id)
        if base is None:
            await _answer(query, render("tg.button_expired", locale))
            return
        await _answer(query, render("tg.retake_started", locale))
        key = f"{PLATFORM}:cb:{query.id}"
        old = base.address
        owner_locale = str(old.extra.get("locale") or locale)
        status_id = await ReplyOnce(self._d.ingest, key, None).send_to(
            self._d.bot, old, render("tg.ack", owner_locale)
        )
        address = DeliveryAddress(
            PLATFORM, old.chat_id, reply_to=old.reply_to, thread_id=old.thread_id,
            status_message_id=str(status_id), extra=dict(old.extra),
        )  # fmt: skip
        user = (
            user_ref(query.from_user, owner_locale)
            if str(query.from_user.id) == owner
            else UserRef(PLATFORM, owner, locale=owner_locale)
        )

        async def stored_image() -> bytes:
            jpeg, _, _ = await self._d.store.request_image(base.request_id)
            return jpeg

        seconds = base.seconds if action == "retake" else (10 if base.seconds == 5 else 5)
        await self._admit(
            stored_image, user=user, line=base.line, address=address, key=key,
            locale=owner_locale, seconds=seconds, takes=1, voice=base.voice,
        )  # fmt: skip

    async def on_error(self, update: object, context: Context) -> None:
        """Log a handler failure and tell the user something went wrong."""
        log.error("handler failed", exc_info=context.error)
        if isinstance(update, Update) and update.effective_message and update.effective_user:
            locale = user_locale(None, update.effective_user)
            with contextlib.suppress(TelegramError):
                await update.effective_message.reply_text(render("tg.internal_error", locale))


class ReplyOnce:
    """Send the first answer to an update once, even across a crash and replay."""

    def __init__(self, ingest: Ingest, key: str, message: Message | None) -> None:
        self._ingest = ingest
        self._key = key
        self._message = message

    async def send(
        self, text: str, *, markup: ForceReply | InlineKeyboardMarkup | None = None,
        quote: bool | None = None,
    ) -> int:  # fmt: skip
        """Reply to the message (quoting in groups, or when asked); return the message id."""
        done = self._ingest.first_reply(self._key)
        if done is not None:
            return int(done)
        assert self._message is not None
        sent = await self._message.reply_text(text, do_quote=quote, reply_markup=markup)
        await self._ingest.record_first_reply(self._key, sent.message_id)
        return sent.message_id

    async def send_to(self, bot: Bot, address: DeliveryAddress, text: str) -> int:
        """Post to a stored address (replying to its request); return the message id."""
        done = self._ingest.first_reply(self._key)
        if done is not None:
            return int(done)
        sent = await bot.send_message(
            int(address.chat_id),
            text,
            reply_parameters=_reply_to(address.reply_to),
            message_thread_id=None if address.thread_id is None else int(address.thread_id),
        )
        await self._ingest.record_first_reply(self._key, sent.message_id)
        return sent.message_id


def _reply_to(message_id: str | None) -> ReplyParameters | None:
    # The request may have been deleted meanwhile: answer anyway.
    if message_id is None:
        return None
    return ReplyParameters(int(message_id), allow_sending_without_reply=True)


async def _answer(query: CallbackQuery, text: str | None = None, *, alert: bool = False) -> None:
    """Answer a button press; it must be answered even when nothing is shown."""
    try:
        await query.answer(text, show_alert=alert)
    except BadRequest as exc:
        # After a restart the query may be too old to answer; the action still happened.
        log.info("could not answer a button press: %s", exc.message)
