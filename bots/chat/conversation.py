"""The conversation: a message becomes a request, a question for the line, or a command.

Platform-neutral: an adapter turns its events into ``Said`` + an intent and calls
``Conversation.said``; the core decides whether a request is allowed, and ``StatusBoard``
owns the status message after the first answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from core.errors import ImageRejected, UserError
from core.i18n import render, render_for
from core.models import DeliveryAddress, UserRef, VideoRequest
from core.prompts import character_names
from core.service import Admission, Checked, Service
from core.storage import ChatStore, JobStore
from core.storage.types import RememberedPhoto

from .access import AccessDesk, Applicant, applicant_of
from .actions import Actions
from .commands import ChatOptions, Commands
from .intents import (
    CharacterAction,
    Command,
    Generate,
    Person,
    Press,
    Said,
    address_for,
    place_of,
)
from .platform import (
    AskReply,
    MessageGone,
    NotModified,
    PhotoRef,
    Platform,
    PlatformError,
    Refused,
)
from .replies import FirstReplies, ReplyOnce
from .status import StatusBoard
from .texts import TakeHint

log = logging.getLogger(__name__)

ImageSource = Callable[[], Awaitable[bytes]]


class Conversation:
    """What the bot says and does for the messages and button presses of one platform."""

    def __init__(
        self,
        *,
        platform: Platform,
        service: Service,
        store: JobStore,
        chatstate: ChatStore,
        board: StatusBoard,
        inbox: FirstReplies,
        options: ChatOptions,
    ) -> None:
        self._platform = platform
        self._service = service
        self._store = store
        self._chatstate = chatstate
        self._board = board
        self._inbox = inbox
        self._options = options
        self.access = AccessDesk(
            platform=platform, service=service, chatstate=chatstate, admins=options.admins
        )
        self._commands = Commands(platform, service, store, chatstate, options, self.access)
        self._actions = Actions(
            platform=platform, service=service, store=store, chatstate=chatstate,
            admins=options.admins, admit=self._admit, refusal=self.refusal, access=self.access,
        )  # fmt: skip
        # Per-chat order for the quick part of a message (remembering a photo before the
        # line that follows it); downloads and admission run concurrently.
        self._chat_locks: dict[str, tuple[asyncio.Lock, int]] = {}  # lock, holders + waiters
        # Downloads and image decoding compete with the event loop for the CPU (and the
        # GIL); a burst of large photos must not delay the acknowledgements of the next
        # requests, so only a few are prepared at once and the rest wait their turn.
        self._heavy = asyncio.Semaphore(max(1, os.cpu_count() or 1))

    @contextlib.asynccontextmanager
    async def _chat_lock(self, chat_id: str) -> AsyncIterator[None]:
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

    async def locale(self, person: Person) -> str:
        """Return the language to answer a user in: their choice, else their client's."""
        chosen = await self._chatstate.locale(self._platform.name, person.user_id)
        return chosen or person.locale

    # --- messages --------------------------------------------------------------------

    async def said(self, said: Said, intent: Generate | Command | CharacterAction) -> None:
        """Turn a message into a request, a question for the line, or a command answer."""
        self._board.unblock(said.origin.place.chat_id)  # writing to the bot undoes a block
        locale = await self.locale(said.person)
        if isinstance(intent, Command):
            await self._commands.run(said, intent, locale, self._reply_once(said))
        elif isinstance(intent, CharacterAction):
            await self._commands.character(said, intent, locale, self._reply_once(said))
        else:
            await self._generate(said, intent, locale)

    def _reply_once(self, said: Said) -> ReplyOnce:
        place = said.origin.place
        pace = functools.partial(self._board.pace, place.chat_id, group=place.group)
        return ReplyOnce(self._inbox, said.key, self._platform, said.origin, pace=pace)

    async def _generate(self, said: Said, intent: Generate, locale: str) -> None:
        name = self._platform.name
        user_id = said.person.user_id
        chat = said.origin.place.chat_id
        key = said.key
        reply = self._reply_once(said)
        user = said.person.ref(locale)
        applicant = applicant_of(said.person, chat, locale)
        async with self._chat_lock(chat):
            remembered: RememberedPhoto | None = None
            if intent.photo is not None:
                await self._chatstate.remember_photo(
                    name, chat, user_id,
                    file_ref=intent.photo.file_id, message_id=str(intent.photo.message_id),
                )  # fmt: skip
            elif intent.line is None or not character_names(intent.line):
                # A line that casts a saved character brings its own image.
                remembered = await self._chatstate.last_photo(
                    name, chat, user_id, self._options.photo_memory_seconds
                )
                if remembered is None:
                    await reply.send(render("chat.need_photo", locale))
                    return
            if intent.line is None:
                ask = AskReply(render("chat.ask_line_placeholder", locale))
                await reply.send(render("chat.ask_line", locale), ask=ask)
                return
            # The cheap checks come before any answer: a refused request costs its refusal
            # alone, and nothing at all once the user was warned about a flood.
            try:
                checked = await self._service.check(user, intent.line, key, chat_id=chat)
            except UserError as exc:
                text = await self.refusal(exc, locale, applicant)
                if text is not None:
                    await reply.send(text, quote=True, private=True)
                return
            # A refusal here (the chat blocked the bot) ends the handler before admission:
            # nothing is stored or charged.
            ack_id = await reply.send(
                render("chat.ack_album" if intent.album else "chat.ack", locale), quote=True
            )
        address = address_for(
            name, said.origin, user_id=user_id, locale=locale, status_message_id=ack_id
        )
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
            return await self.access.ask(applicant) or render("access.approved", locale)
        return render_for(self._platform.name, exc.key, locale, **exc.params)

    async def _admit(
        self,
        image: ImageSource,
        *,
        checked: Checked,
        ack_id: str | None,
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
                # A cast character's image is stored: no photo to fetch.
                jpeg = b"" if checked.character is not None else await image()
                request = VideoRequest(
                    user=user, image=jpeg, line=line, address=address, source_key=key, **options
                )
                admission = await self._service.submit(request, checked)
        except UserError as exc:
            text = await self.refusal(exc, locale, applicant)
            if text is not None:
                await self._refuse(address, text, ack_id)
            return None
        except PlatformError as exc:
            log.warning("could not fetch the photo for %s: %s", key, exc)
            await self._refuse(address, render("chat.fetch_failed", locale), ack_id)
            return None
        if admission.jobs:
            # The status shows every take as stored; the first one's place comes from the
            # admission itself, the others' from the store.
            hint = None
            if admission.position is not None:
                hint = TakeHint(admission.position, admission.eta_seconds)
            self._board.update(admission.jobs[0], hint)
        return admission

    async def _image(self, photo: PhotoRef | None, remembered: RememberedPhoto | None) -> bytes:
        """Download the photo (or take a stored request's image)."""
        if photo is None and remembered is not None and remembered.request_id is not None:
            jpeg, _, _ = await self._store.request_image(remembered.request_id)
            return jpeg
        if photo is None and remembered is not None and remembered.file_ref is not None:
            photo = PhotoRef(remembered.file_ref, None, 0)  # size unknown: the platform checks
        if photo is None:
            raise ImageRejected("image.empty")
        return await self._platform.download(photo)

    async def _refuse(self, address: DeliveryAddress, text: str, ack_id: str | None) -> None:
        """Answer a refusal found after the acknowledgement with a reply of its own.

        An edit of "Got it!" would go unnoticed (edits do not notify, and the notification
        showed "Got it!"), so the acknowledgement goes and the refusal is a new reply.
        """
        place = place_of(address)
        if ack_id is not None:
            try:
                await self._platform.delete(place, ack_id)
            except MessageGone:
                return  # a replay after a crash: the refusal was sent with the deletion
            except (NotModified, Refused) as exc:
                log.info("could not delete the acknowledgement: %s", exc)
        await self._board.pace(place.chat_id, group=place.group)
        await self._platform.send(place, text, reply_to=address.reply_to, private=True)

    # --- buttons ---------------------------------------------------------------------

    async def pressed(self, press: Press) -> None:
        """Act on a press of one of the bot's buttons."""
        await self._actions.pressed(press, await self.locale(press.person))
