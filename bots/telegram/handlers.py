"""PTB handlers: messages become requests, buttons act on stored requests.

Thin glue: ``routing`` decides what a message asks, the core decides whether it is
allowed, and ``StatusBoard`` owns the status message after the first answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from telegram import (
    Bot,
    ForceReply,
    Message,
    Update,
)
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import Application, CallbackContext, CallbackQueryHandler, MessageHandler, filters

from config.settings import PromptSettings, TelegramSettings
from core.chatstate import ChatState, RememberedPhoto
from core.errors import ImageRejected, UserError
from core.i18n import render
from core.models import DeliveryAddress, UserRef, VideoRequest
from core.service import Admission, Checked, Service
from core.store import Store

from .access import AccessDesk, Applicant, applicant_of
from .buttons import Buttons
from .commands import Commands
from .ingest import Ingest
from .render import queued_line
from .replies import ReplyOnce, reply_to
from .routing import (
    PLATFORM,
    Command,
    Generate,
    Me,
    PhotoRef,
    address_for,
    is_group,
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
    peers: tuple[str, ...] = ()  # other chat platforms running beside this one (/link)


class Handlers:
    """Message and button handlers for the Application."""

    def __init__(self, deps: Deps) -> None:
        self._d = deps
        self._access = AccessDesk(
            bot=deps.bot, service=deps.service, chatstate=deps.chatstate, settings=deps.settings
        )
        self._commands = Commands(deps.bot, deps.service, deps.store, deps.chatstate,
                                  deps.settings, deps.prompts, self._access,
                                  peers=deps.peers)  # fmt: skip
        self._buttons = Buttons(
            bot=deps.bot, service=deps.service, store=deps.store, chatstate=deps.chatstate,
            settings=deps.settings, admit=self._admit, refusal=self.refusal, access=self._access,
        )  # fmt: skip
        # Per-chat order for the quick part of a message (remembering a photo before the
        # line that follows it); downloads and admission run concurrently.
        self._chat_locks: dict[int, tuple[asyncio.Lock, int]] = {}  # lock, holders + waiters
        # Downloads and image decoding compete with the event loop for the CPU (and the
        # GIL); a burst of large photos must not delay the acknowledgements of the next
        # requests, so only a few are prepared at once and the rest wait their turn.
        self._heavy = asyncio.Semaphore(max(1, os.cpu_count() or 1))

    def register(self, app: Application) -> None:  # type: ignore[type-arg]
        """Add the handlers to an Application."""
        app.add_handler(CallbackQueryHandler(self._buttons.on_button))
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
        pace = functools.partial(self._d.board.pace, message.chat_id, group=is_group(message))
        return ReplyOnce(self._d.ingest, key, message, pace=pace)

    async def _generate(self, message: Message, intent: Generate, locale: str, key: str) -> None:
        assert message.from_user is not None
        user_id = str(message.from_user.id)
        chat = str(message.chat_id)
        reply = self._reply_once(key, message)
        user = user_ref(message.from_user, locale)
        applicant = applicant_of(message.from_user, message.chat_id, locale)
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
                    await reply.send(render("chat.need_photo", locale))
                    return
            if intent.line is None:
                prompt = ForceReply(
                    selective=True,
                    input_field_placeholder=render("chat.ask_line_placeholder", locale)[:64],
                )
                await reply.send(render("chat.ask_line", locale), markup=prompt)
                return
            # The cheap checks come before any answer: a refused request costs its refusal
            # alone, and nothing at all once the user was warned about a flood.
            try:
                checked = await self._d.service.check(user, intent.line, key)
            except UserError as exc:
                text = await self.refusal(exc, locale, applicant)
                if text is not None:
                    await reply.send(text, quote=True)
                return
            # A 403 here ends the handler before admission: nothing is stored or charged.
            ack_id = await reply.send(
                render("chat.ack_album" if intent.album else "chat.ack", locale), quote=True
            )
        address = address_for(message, user_id=user_id, locale=locale, status_message_id=ack_id)
        await self._admit(
            lambda: self._image(intent.photo, remembered),
            checked=checked,
            ack_id=ack_id,
            user=user,
            line=intent.line,
            address=address,
            key=key,
            locale=locale,
            applicant=applicant,
        )

    async def refusal(self, exc: UserError, locale: str, applicant: Applicant | None) -> str | None:
        """Return what to tell a refused user; None when they hear nothing (again)."""
        if exc.silent:
            return None  # warned once already in this burst
        if exc.key == "request.duplicate":
            return None  # stored before a crash; the worker's events take it from here
        if exc.key == "access.approval_required" and applicant is not None:
            # Asking is what the user wants: do it for them instead of naming a command.
            return await self._access.ask(applicant) or render("access.approved", locale)
        return render(exc.key, locale, **exc.params)

    async def _admit(
        self,
        image: Any,
        *,
        checked: Checked,
        ack_id: int | None,
        user: UserRef,
        line: str,
        address: DeliveryAddress,
        key: str,
        locale: str,
        applicant: Applicant | None = None,
        **options: Any,
    ) -> Admission | None:
        """Fetch the image, submit the checked request and show its place in the queue."""
        try:
            async with self._heavy:
                jpeg = await image()
                request = VideoRequest(
                    user=user, image=jpeg, line=line, address=address, source_key=key, **options
                )
                admission = await self._d.service.submit(request, checked)
        except UserError as exc:
            text = await self.refusal(exc, locale, applicant)
            if text is not None:
                await self._refuse(address, text, ack_id)
            return None
        except TelegramError as exc:
            log.warning("could not fetch the photo for %s: %s", key, exc)
            await self._refuse(address, render("chat.fetch_failed", locale), ack_id)
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

    async def _refuse(self, address: DeliveryAddress, text: str, ack_id: int | None) -> None:
        """Answer a refusal found after the acknowledgement with a reply of its own.

        An edit of "Got it!" would go unnoticed (edits do not notify, and the notification
        showed "Got it!"), so the acknowledgement goes and the refusal is a new reply.
        """
        chat_id = int(address.chat_id)
        if ack_id is not None:
            try:
                await self._d.bot.delete_message(chat_id, ack_id)
            except BadRequest as exc:
                if "not found" in exc.message.lower():
                    return  # a replay after a crash: the refusal was sent with the deletion
                log.info("could not delete the acknowledgement: %s", exc.message)
        await self._d.board.pace(chat_id, group=bool(address.extra.get("group")))
        await self._d.bot.send_message(
            chat_id,
            text,
            reply_parameters=reply_to(address.reply_to),
            message_thread_id=None if address.thread_id is None else int(address.thread_id),
        )

    # --- buttons ---------------------------------------------------------------------

    async def on_error(self, update: object, context: Context) -> None:
        """Log a handler failure; tell the user unless the update is tried again."""
        error = context.error
        chat = update.effective_chat if isinstance(update, Update) else None
        if isinstance(error, Forbidden):
            # The user blocked the bot (or it left the group): nothing failed on our side,
            # and every further message there would be refused too.
            where = chat.id if chat is not None else "?"
            log.info("chat %s refused the bot (%s); not writing to it", where, error)
            if chat is not None:
                self._d.board.block(chat.id)
            return
        if isinstance(update, Update) and self._d.ingest.failed(update):
            log.warning("handling update %s failed; trying again: %r", update.update_id, error)
            return
        log.error("handler failed", exc_info=error)
        if isinstance(update, Update) and update.effective_message and update.effective_user:
            if chat is not None and self._d.board.is_blocked(chat.id):
                return
            locale = user_locale(None, update.effective_user)
            with contextlib.suppress(TelegramError):
                await update.effective_message.reply_text(render("chat.internal_error", locale))
