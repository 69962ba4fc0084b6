"""Access requests (approval mode): ask the admins, and act on their Approve / Deny."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

from core.errors import RequestRejected
from core.i18n import DEFAULT_LOCALE, render
from core.models import UserRef
from core.service import Service
from core.storage import ChatStore
from core.storage.types import Button

from .intents import Person, Press
from .platform import Action, Place, Platform, PlatformError
from .texts import access_buttons, access_decided_text, access_request_text

log = logging.getLogger(__name__)

ACCESS_ACTIONS = frozenset({"approve", "deny"})


@dataclass(frozen=True)
class Applicant:
    """A user asking for access, and where to tell them the outcome."""

    user_id: str
    name: str
    username: str | None
    chat_id: str  # the chat they asked from
    locale: str


def applicant_of(person: Person, chat_id: str, locale: str) -> Applicant:
    """Return the applicant a user is, asking from ``chat_id``."""
    return Applicant(person.user_id, person.name, person.username, chat_id, locale)


def access_ref(account_id: int, applicant: Applicant) -> str:
    """Return what an access button stores as its request: account, answer chat, language."""
    # Decisions come long after the request: the button must carry where and how to answer.
    return f"{account_id}:{applicant.chat_id}:{applicant.locale}"


def parse_access_ref(ref: str) -> tuple[int, str, str] | None:
    """Return (account id, chat id, locale) from ``access_ref``, or None if malformed."""
    parts = ref.split(":")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    try:
        int(parts[1])
    except ValueError:
        return None
    return int(parts[0]), parts[1], parts[2]


class AccessDesk:
    """Ask the admins for a user's access, and act on their decision."""

    def __init__(
        self,
        *,
        platform: Platform,
        service: Service,
        chatstate: ChatStore,
        admins: Collection[str],
    ) -> None:
        self._platform = platform
        self._service = service
        self._chatstate = chatstate
        self._admins = admins  # user ids: the platform says how to reach each privately

    @property
    def required(self) -> bool:
        """Return whether users need an admin's approval before their first request."""
        quotas = self._service.quotas
        return quotas.enabled and quotas.settings.access == "approval"

    async def ask(self, applicant: Applicant) -> str | None:
        """Ask for access (admins are messaged once); return the user's answer, None if in."""
        user = UserRef(
            self._platform.name, applicant.user_id, display_name=applicant.name,
            locale=applicant.locale,
        )  # fmt: skip
        try:
            request = await self._service.accounts.request_access(user)
        except RequestRejected as exc:
            return render(exc.key, applicant.locale, **exc.params)
        if request.status == "allowed":
            return None
        if request.status == "denied":
            return render("access.denied", applicant.locale)
        if not request.new:
            return render("access.pending", applicant.locale)
        for admin_id in self._admins:
            try:
                place = await self._platform.private_place(admin_id)
            except PlatformError as exc:
                log.warning("could not reach admin %s privately: %s", admin_id, exc)
                continue
            await self.offer(place.chat_id, request.account_id, applicant)
        return render("chat.access_asked", applicant.locale)

    async def offer(self, chat_id: str, account_id: int, applicant: Applicant) -> None:
        """Post an access request with Approve / Deny buttons to an admin's chat."""
        name = self._platform.name
        chosen = await self._chatstate.locale(name, chat_id)
        locale = chosen or DEFAULT_LOCALE
        specs = access_buttons(locale)
        ref = access_ref(account_id, applicant)
        ids = await self._chatstate.add_buttons(
            name, [(spec.action, ref, None, applicant.user_id) for spec in specs]
        )
        row = [Action(spec.label, button_id) for spec, button_id in zip(specs, ids, strict=True)]
        text = access_request_text(applicant.name, applicant.username, applicant.user_id, locale)
        try:
            await self._platform.send(Place(chat_id), text, buttons=[row])
        except PlatformError as exc:
            # An admin who never opened a private chat with the bot cannot be messaged;
            # the others still are, and /pending lists the request again.
            log.warning("could not ask admin %s about access: %s", chat_id, exc)

    async def decide(self, press: Press, button: Button, locale: str) -> None:
        """Approve or deny a waiting request (the caller checked the presser is an admin)."""
        platform = self._platform
        ref = parse_access_ref(button.request_id)
        if ref is None:
            await platform.answer(press.token, render("chat.button_expired", locale))
            return
        account_id, chat_id, user_locale = ref
        approved = button.action == "approve"
        actor = f"{platform.name}:{press.person.user_id}"
        # Conditional on the request still pending: of two admins, on any platform or
        # process, only the first decides; the other hears it was decided already.
        accounts = self._service.accounts
        if not await accounts.decide_access(account_id, approve=approved, actor=actor):
            await platform.answer(press.token, render("chat.access_already", locale))
            return
        key = "chat.access_approved" if approved else "chat.access_denied"
        await platform.answer(press.token, render(key, locale))
        if press.message is not None:
            limit = platform.capabilities.text_limit
            text = access_decided_text(
                press.message_text, approved, press.person.name, locale, limit
            )
            try:
                await platform.edit(press.message.place, press.message.message_id, text)
            except PlatformError as exc:
                log.info("could not mark the access request decided: %s", exc)
        outcome = "access.approved" if approved else "chat.access_user_denied"
        try:
            # A chat id equal to the user's id stands for their private chat (/pending).
            place = (
                await platform.private_place(chat_id) if chat_id == button.owner else Place(chat_id)
            )
            await platform.send(place, render(outcome, user_locale))
        except PlatformError as exc:
            log.info("could not tell user %s about their access: %s", button.owner, exc)
