"""Access requests (approval mode): ask the admins, and their Approve / Deny buttons."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from telegram import Bot, CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, User
from telegram.error import TelegramError

from config.settings import TelegramSettings
from core.chatstate import Button, ChatState
from core.errors import RequestRejected
from core.i18n import DEFAULT_LOCALE, render
from core.models import UserRef
from core.service import Service

from .render import access_buttons, access_decided_text, access_request_text
from .replies import answer
from .routing import PLATFORM

log = logging.getLogger(__name__)

ACCESS_ACTIONS = frozenset({"approve", "deny"})


@dataclass(frozen=True)
class Applicant:
    """A Telegram user asking for access, and where to tell them the outcome."""

    user_id: str
    name: str
    username: str | None
    chat_id: str  # the chat they asked from
    locale: str


def applicant_of(user: User, chat_id: int | str, locale: str) -> Applicant:
    """Return the applicant a Telegram user is, asking from ``chat_id``."""
    return Applicant(str(user.id), user.full_name, user.username, str(chat_id), locale)


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
        self, *, bot: Bot, service: Service, chatstate: ChatState, settings: TelegramSettings
    ) -> None:
        self._bot = bot
        self._service = service
        self._chatstate = chatstate
        self._settings = settings

    @property
    def required(self) -> bool:
        """Return whether users need an admin's approval before their first request."""
        quotas = self._service.quotas
        return quotas.enabled and quotas.settings.access == "approval"

    async def ask(self, applicant: Applicant) -> str | None:
        """Ask for access (admins are messaged once); return the user's answer, None if in."""
        user = UserRef(
            PLATFORM, applicant.user_id, display_name=applicant.name, locale=applicant.locale
        )
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
        for admin_id in self._settings.admin_ids:
            await self.offer(admin_id, request.account_id, applicant)
        return render("chat.access_asked", applicant.locale)

    async def offer(self, chat_id: int, account_id: int, applicant: Applicant) -> None:
        """Post an access request with Approve / Deny buttons to an admin's chat."""
        chosen = await self._chatstate.locale(PLATFORM, str(chat_id))
        locale = chosen or DEFAULT_LOCALE
        specs = access_buttons(locale)
        ref = access_ref(account_id, applicant)
        ids = await self._chatstate.add_buttons(
            PLATFORM, [(spec.action, ref, None, applicant.user_id) for spec in specs]
        )
        markup = InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton(spec.label, callback_data=button_id)
                    for spec, button_id in zip(specs, ids, strict=True)
                ]
            ]
        )
        text = access_request_text(applicant.name, applicant.username, applicant.user_id, locale)
        try:
            await self._bot.send_message(chat_id, text, reply_markup=markup)
        except TelegramError as exc:
            # An admin who never opened a private chat with the bot cannot be messaged;
            # the others still are, and /pending lists the request again.
            log.warning("could not ask admin %s about access: %s", chat_id, exc)

    async def decide(self, query: CallbackQuery, button: Button, locale: str) -> None:
        """Approve or deny a waiting request (the caller checked the presser is an admin)."""
        ref = parse_access_ref(button.request_id)
        if ref is None:
            await answer(query, render("chat.button_expired", locale))
            return
        account_id, chat_id, user_locale = ref
        approved = button.action == "approve"
        actor = f"{PLATFORM}:{query.from_user.id}"
        accounts = self._service.accounts
        if not await accounts.decide_access(account_id, approve=approved, actor=actor):
            await answer(query, render("chat.access_already", locale))
            return
        await answer(
            query, render("chat.access_approved" if approved else "chat.access_denied", locale)
        )
        message = query.message
        if isinstance(message, Message):
            request = message.text or ""
            text = access_decided_text(request, approved, query.from_user.full_name, locale)
            try:
                await self._bot.edit_message_text(
                    text, chat_id=message.chat_id, message_id=message.message_id
                )
            except TelegramError as exc:
                log.info("could not mark the access request decided: %s", exc)
        outcome = "access.approved" if approved else "chat.access_user_denied"
        try:
            await self._bot.send_message(int(chat_id), render(outcome, user_locale))
        except TelegramError as exc:
            log.info("could not tell user %s about their access: %s", button.owner, exc)
