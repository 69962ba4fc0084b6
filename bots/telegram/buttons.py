"""Inline buttons under results and status messages: act for the requester or an admin."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Bot, CallbackQuery, ForceReply, Update

from config.settings import TelegramSettings
from core.chatstate import ChatState
from core.errors import RequestRejected, UserError
from core.i18n import render
from core.models import DeliveryAddress, JobState, UserRef
from core.service import Admission, Service
from core.store import Store

from .access import ACCESS_ACTIONS, AccessDesk, Applicant
from .render import TAKE_OFFSET, take_numbers
from .replies import answer, reply_to
from .routing import PLATFORM, user_locale, user_ref

log = logging.getLogger(__name__)

Admit = Callable[..., Awaitable[Admission | None]]
Refusal = Callable[[UserError, str, Applicant | None], Awaitable[str | None]]


class Buttons:
    """Handle presses of the buttons the bot put under its messages."""

    def __init__(
        self,
        *,
        bot: Bot,
        service: Service,
        store: Store,
        chatstate: ChatState,
        settings: TelegramSettings,
        admit: Admit,
        refusal: Refusal,
        access: AccessDesk,
    ) -> None:
        self._bot = bot
        self._service = service
        self._store = store
        self._chatstate = chatstate
        self._settings = settings
        self._admit = admit
        self._refusal = refusal
        self._access = access

    async def on_button(self, update: Update, context: Any) -> None:
        """Act on a button: a request's for its requester or an admin; access ones for admins."""
        query = update.callback_query
        if query is None:
            return
        chosen = await self._chatstate.locale(PLATFORM, str(query.from_user.id))
        locale = user_locale(chosen, query.from_user)
        button = await self._chatstate.button(PLATFORM, query.data or "")
        if button is None:
            await answer(query, render("chat.button_expired", locale))
            return
        presser = str(query.from_user.id)
        admin = query.from_user.id in self._settings.admin_ids
        if button.action in ACCESS_ACTIONS:
            # Only admins decide access; the owner is the applicant, who may not approve.
            if admin:
                await self._access.decide(query, button, locale)
            else:
                await answer(query, render("chat.admin_only", locale), alert=True)
            return
        if presser != button.owner and not admin:
            # Someone else's buttons do nothing; the alert is shown to the presser only.
            await answer(query, render("request.not_owner", locale), alert=True)
            return
        if button.action == "cancel":
            await self._cancel(query, button.request_id, admin, locale)
        elif button.action == "newline":
            await self._ask_new_line(query, button.request_id, button.owner, locale)
        elif button.action in ("retake", "switch") and button.job_id is not None:
            await self._retake(query, button.job_id, button.action, button.owner, locale)
        else:
            await answer(query, render("chat.button_expired", locale))

    async def _cancel(
        self, query: CallbackQuery, request_id: str, admin: bool, locale: str
    ) -> None:
        user = UserRef(PLATFORM, str(query.from_user.id))
        canceled = 0
        for job in await self._service.status(request_id):
            if job.state is not JobState.QUEUED:
                continue
            try:
                await self._service.cancel(job.id, user, admin=admin)
                canceled += 1
            except RequestRejected as exc:
                log.info("cancel of %s refused: %s", job.id, exc.key)
        text = (
            render("chat.canceled", locale, count=canceled)
            if canceled
            else render("request.not_cancelable", locale)
        )
        await answer(query, text)

    async def _ask_new_line(
        self, query: CallbackQuery, request_id: str, owner: str, locale: str
    ) -> None:
        jobs = await self._service.status(request_id)
        address = jobs[0].address
        await self._chatstate.remember_photo(
            PLATFORM, address.chat_id, owner, request_id=request_id
        )
        await answer(query)
        # Reply to the request so that a selective ForceReply targets its sender.
        await self._bot.send_message(
            int(address.chat_id),
            render("chat.new_line_prompt", locale),
            reply_parameters=reply_to(address.reply_to),
            message_thread_id=None if address.thread_id is None else int(address.thread_id),
            reply_markup=ForceReply(selective=True),
        )

    async def _retake(
        self, query: CallbackQuery, job_id: str, action: str, owner: str, locale: str
    ) -> None:
        base = await self._store.job(job_id)
        if base is None:
            await answer(query, render("chat.button_expired", locale))
            return
        key = f"{PLATFORM}:cb:{query.id}"
        old = base.address
        owner_locale = str(old.extra.get("locale") or locale)
        user = (
            user_ref(query.from_user, owner_locale)
            if str(query.from_user.id) == owner
            else UserRef(PLATFORM, owner, locale=owner_locale)
        )
        seconds = base.seconds if action == "retake" else (10 if base.seconds == 5 else 5)
        try:
            checked = await self._service.check(
                user, base.line, key, seconds=seconds, takes=1, voice=base.voice
            )
        except UserError as exc:
            text = await self._refusal(exc, locale, None)
            await answer(query, text, alert=text is not None)
            return
        await answer(query, render("chat.retake_started", locale))
        # Another take of the same line: it keeps that line's status message (no second
        # "Got it!") and numbers itself after the takes before it.
        _, before = take_numbers(base)
        address = DeliveryAddress(
            PLATFORM, old.chat_id, reply_to=old.reply_to, thread_id=old.thread_id,
            status_message_id=old.status_message_id, extra={**old.extra, TAKE_OFFSET: before},
        )  # fmt: skip

        async def stored_image() -> bytes:
            jpeg, _, _ = await self._store.request_image(base.request_id)
            return jpeg

        await self._admit(
            stored_image, checked=checked, ack_id=None, user=user, line=base.line,
            address=address, key=key, locale=owner_locale, seconds=seconds, takes=1,
            voice=base.voice,
        )  # fmt: skip
