"""Result actions: the buttons under results and status messages, behind opaque ids.

Another take, a new line, the other length, cancel while waiting: each for the requester
or an admin. Access buttons (approve, deny) go to the access desk, for admins only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection

from core.errors import RequestRejected, UserError
from core.i18n import render
from core.models import DeliveryAddress, JobState, UserRef
from core.service import Admission, Service
from core.storage import ChatStore, JobStore

from .access import ACCESS_ACTIONS, AccessDesk, Applicant
from .intents import Press, place_of
from .platform import AskReply, Platform, PlatformError
from .texts import LINE_REQUEST, TAKE_OFFSET, take_numbers

log = logging.getLogger(__name__)

Admit = Callable[..., Awaitable[Admission | None]]
Refusal = Callable[[UserError, str, Applicant | None], Awaitable[str | None]]


class Actions:
    """Handle presses of the buttons the bot put under its messages."""

    def __init__(
        self,
        *,
        platform: Platform,
        service: Service,
        store: JobStore,
        chatstate: ChatStore,
        admins: Collection[str],
        admit: Admit,
        refusal: Refusal,
        access: AccessDesk,
    ) -> None:
        self._platform = platform
        self._service = service
        self._store = store
        self._chatstate = chatstate
        self._admins = admins
        self._admit = admit
        self._refusal = refusal
        self._access = access

    async def pressed(self, press: Press, locale: str) -> None:
        """Act on a button: a request's for its requester or an admin; access ones for admins."""
        answer = self._platform.answer
        button = await self._chatstate.button(self._platform.name, press.button_id)
        if button is None:
            await answer(press.token, render("chat.button_expired", locale))
            return
        presser = press.person.user_id
        admin = press.person.admin or presser in self._admins
        if button.action in ACCESS_ACTIONS:
            # Only admins decide access; the owner is the applicant, who may not approve.
            if admin:
                await self._access.decide(press, button, locale)
            else:
                await answer(press.token, render("chat.admin_only", locale), alert=True)
            return
        if presser != button.owner and not admin:
            # Someone else's buttons do nothing; the alert is shown to the presser only.
            await answer(press.token, render("request.not_owner", locale), alert=True)
            return
        if button.action == "cancel":
            await self._cancel(press, button.request_id, admin, locale)
        elif button.action == "newline":
            await self._ask_new_line(press, button.request_id, button.owner, locale)
        elif button.action in ("retake", "switch") and button.job_id is not None:
            await self._retake(press, button.job_id, button.action, button.owner, locale)
        elif button.action == "portrait" and button.job_id is not None:
            await self._portrait(press, button.request_id, int(button.job_id), button.owner, locale)
        else:
            await answer(press.token, render("chat.button_expired", locale))

    async def _portrait(
        self, press: Press, portrait_id: str, number: int, owner: str, locale: str
    ) -> None:
        """Save the picked candidate as the owner's character (once), or drop them all."""
        user = (
            press.person.ref(locale)
            if press.person.user_id == owner
            else UserRef(self._platform.name, owner, locale=locale)
        )
        portraits = self._service.portraits
        try:
            if number == 0:
                await portraits.cancel(user, portrait_id)
                text = render("portrait.canceled", locale)
            else:
                saved = await portraits.pick(user, portrait_id, number)
                text = render("portrait.picked", locale, name=saved.name, number=number)
        except UserError as exc:
            await self._platform.answer(press.token, render(exc.key, locale, **exc.params))
            return
        await self._platform.answer(press.token, text)
        if press.message is not None:
            # The choice replaces the question and its buttons: nothing left to press twice.
            try:
                await self._platform.edit(press.message.place, press.message.message_id, text)
            except PlatformError as exc:
                log.info("could not edit the pick message: %s", exc)

    async def _cancel(self, press: Press, request_id: str, admin: bool, locale: str) -> None:
        user = UserRef(self._platform.name, press.person.user_id)
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
        await self._platform.answer(press.token, text)

    async def _ask_new_line(self, press: Press, request_id: str, owner: str, locale: str) -> None:
        jobs = await self._service.status(request_id)
        address = jobs[0].address
        await self._chatstate.remember_photo(
            self._platform.name, address.chat_id, owner, request_id=request_id
        )
        if self._platform.capabilities.modals:
            # A form asks for the line in place; the answer arrives as a new request.
            ask = AskReply(render("chat.ask_line_placeholder", locale))
            await self._platform.answer(
                press.token, render("chat.new_line_prompt", locale), ask=ask
            )
            return
        await self._platform.answer(press.token)
        # Reply to the request so that a request for the answer targets its sender.
        await self._platform.send(
            place_of(address),
            render("chat.new_line_prompt", locale),
            reply_to=address.reply_to,
            ask=AskReply(),
        )

    async def _retake(
        self, press: Press, job_id: str, action: str, owner: str, locale: str
    ) -> None:
        platform = self._platform.name
        base = await self._store.job(job_id)
        if base is None:
            await self._platform.answer(press.token, render("chat.button_expired", locale))
            return
        key = f"{platform}:cb:{press.token}"
        old = base.address
        owner_locale = str(old.extra.get("locale") or locale)
        user = (
            press.person.ref(owner_locale)
            if press.person.user_id == owner
            else UserRef(platform, owner, locale=owner_locale)
        )
        seconds = base.seconds if action == "retake" else (10 if base.seconds == 5 else 5)
        try:
            checked = await self._service.check(
                user, base.line, key, seconds=seconds, takes=1, voice=base.voice
            )
        except UserError as exc:
            text = await self._refusal(exc, locale, None)
            await self._platform.answer(press.token, text, alert=text is not None)
            return
        await self._platform.answer(press.token, render("chat.retake_started", locale))
        # Another take of the same line (either length): it keeps that line's status
        # message (no second "Got it!") and numbers itself after every take the line has
        # had, counted in the store: not after the pressed take, which would give two
        # presses under one video, or two at once in any process, the same number.
        line = str(old.extra.get(LINE_REQUEST) or base.request_id)
        _, before = take_numbers(base)
        take = await self._chatstate.add_line_take(platform, line, before)
        extra = {**old.extra, TAKE_OFFSET: take - 1, LINE_REQUEST: line}
        address = DeliveryAddress(
            platform, old.chat_id, reply_to=old.reply_to, thread_id=old.thread_id,
            status_message_id=old.status_message_id, extra=extra,
        )  # fmt: skip

        async def stored_image() -> bytes:
            jpeg, _, _ = await self._store.request_image(base.request_id)
            return jpeg

        await self._admit(
            stored_image, checked=checked, ack_id=None, user=user, line=base.line,
            address=address, key=key, locale=owner_locale, seconds=seconds, takes=1,
            voice=base.voice,
        )  # fmt: skip
