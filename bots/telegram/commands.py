"""Bot commands: /start, /help, /cancel, /lang, /history, /access, admin ones, the menu."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from telegram import BotCommand, InputMediaVideo, Message
from telegram.error import TelegramError

from config.settings import PromptSettings, TelegramSettings
from core.chatstate import ChatState
from core.errors import RequestRejected
from core.i18n import DEFAULT_LOCALE, LOCALES, render
from core.models import UserRef
from core.quotas import time_left
from core.service import Service
from core.store import Store

from .access import AccessDesk, Applicant, applicant_of
from .render import stats_summary
from .routing import PLATFORM, Command, thread_of, user_ref

if TYPE_CHECKING:
    from telegram import Bot

    from .replies import ReplyOnce

log = logging.getLogger(__name__)

# The command menu, in order; each has a description key chat.cmd.<name>.
MENU = ("gen", "help", "quota", "cancel", "history", "lang", "link", "start")
# Commands that only make sense beside another chat platform.
NEEDS_PEERS = frozenset({"link"})


def menu(peers: Sequence[str]) -> tuple[str, ...]:
    """Return the commands offered when ``peers`` run beside Telegram."""
    return tuple(name for name in MENU if peers or name not in NEEDS_PEERS)


_LANGUAGE_NAMES = {
    "en": "en", "english": "en", "英文": "en", "英语": "en",
    "zh": "zh", "cn": "zh", "chinese": "zh", "中文": "zh", "汉语": "zh", "zh-cn": "zh",
    "zh-hans": "zh",
}  # fmt: skip


async def set_command_menus(bot: Bot, peers: Sequence[str] = ()) -> None:
    """Register the command menu in English (default) and Simplified Chinese."""
    for locale in LOCALES:
        commands = [BotCommand(name, render(f"chat.cmd.{name}", locale)) for name in menu(peers)]
        # No language_code: the default list, shown to users of any other language.
        code = None if locale == "en" else locale
        try:
            await bot.set_my_commands(commands, language_code=code)
        except TelegramError as exc:
            log.warning("could not set the %s command menu: %s", locale, exc)


class Commands:
    """Answer commands; every answer goes through ``ReplyOnce`` (no repeat on replay)."""

    def __init__(
        self,
        bot: Bot,
        service: Service,
        store: Store,
        chatstate: ChatState,
        settings: TelegramSettings,
        prompts: PromptSettings,
        access: AccessDesk,
        *,
        peers: Sequence[str] = (),
    ) -> None:
        self._bot = bot
        self._service = service
        self._store = store
        self._chatstate = chatstate
        self._settings = settings
        self._prompts = prompts
        self._access = access
        self._peers = tuple(peers)

    async def run(self, message: Message, command: Command, locale: str, reply: ReplyOnce) -> None:
        """Run one command."""
        handler = getattr(self, f"_c_{command.name}", None)
        if command.name in NEEDS_PEERS and not self._peers:
            handler = None  # nothing to reach: as unknown as any other bot's command
        if handler is None:
            return  # unknown commands are not ours to answer (other bots share groups)
        await handler(message, command.args, locale, reply)

    async def _c_start(self, message: Message, args: str, locale: str, reply: ReplyOnce) -> None:
        assert message.from_user is not None
        text = render("chat.start", locale)
        if self._access.required:
            # A newcomer asks for access by starting the bot, not by a first refused request.
            asked = await self._access.ask(applicant_of(message.from_user, message.chat_id, locale))
            text = text if asked is None else f"{text}\n\n{asked}"
        await reply.send(text)

    async def _c_access(self, message: Message, args: str, locale: str, reply: ReplyOnce) -> None:
        assert message.from_user is not None
        if not self._access.required:
            await reply.send(render("chat.access_open", locale))
            return
        asked = await self._access.ask(applicant_of(message.from_user, message.chat_id, locale))
        await reply.send(asked or render("chat.access_open", locale))

    async def _c_pending(self, message: Message, args: str, locale: str, reply: ReplyOnce) -> None:
        assert message.from_user is not None
        if message.from_user.id not in self._settings.admin_ids:
            await reply.send(render("chat.admin_only", locale))
            return
        waiting = [p for p in await self._service.accounts.pending() if p[1] == PLATFORM]
        if not waiting:
            await reply.send(render("chat.pending_none", locale))
            return
        await reply.send(render("chat.pending_count", locale, count=len(waiting)))
        for account_id, _, user_id, name in waiting:
            chosen = await self._chatstate.locale(PLATFORM, user_id)
            # Where they asked is not stored: the outcome goes to their private chat.
            applicant = Applicant(user_id, name, None, user_id, chosen or DEFAULT_LOCALE)
            await self._access.offer(message.chat_id, account_id, applicant)

    async def _c_help(self, message: Message, args: str, locale: str, reply: ReplyOnce) -> None:
        text = render("chat.help", locale, max_takes=self._prompts.max_takes)
        if self._peers:
            names = ", ".join(peer.capitalize() for peer in self._peers)
            text = f"{text}\n" + render("chat.help_link", locale, platforms=names)
        await reply.send(text)

    async def _c_lang(self, message: Message, args: str, locale: str, reply: ReplyOnce) -> None:
        assert message.from_user is not None
        chosen = _LANGUAGE_NAMES.get(args.strip().lower())
        if chosen is None:
            await reply.send(render("chat.lang_usage", locale))
            return
        await self._chatstate.set_locale(PLATFORM, str(message.from_user.id), chosen)
        await reply.send(render("chat.lang_set", chosen))

    async def _c_cancel(self, message: Message, args: str, locale: str, reply: ReplyOnce) -> None:
        assert message.from_user is not None
        user = user_ref(message.from_user, locale)
        canceled = await self._service.cancel_waiting(user, str(message.chat_id))
        key = "chat.canceled" if canceled else "chat.nothing_to_cancel"
        await reply.send(render(key, locale, count=canceled))

    async def _c_history(self, message: Message, args: str, locale: str, reply: ReplyOnce) -> None:
        assert message.from_user is not None
        items = await self._chatstate.history(
            PLATFORM, str(message.from_user.id), self._settings.history_size
        )
        if not items:
            await reply.send(render("chat.history_empty", locale))
            return
        # Re-sent by Telegram's file id: nothing is uploaded again.
        thread = thread_of(message)
        if len(items) == 1:
            await self._bot.send_video(
                message.chat_id, items[0].file_ref, caption=items[0].caption,
                message_thread_id=thread,
            )  # fmt: skip
            return
        media = [InputMediaVideo(item.file_ref, caption=item.caption) for item in items[:10]]
        await self._bot.send_media_group(message.chat_id, media, message_thread_id=thread)

    async def _c_quota(self, message: Message, args: str, locale: str, reply: ReplyOnce) -> None:
        assert message.from_user is not None
        balance = await self._service.accounts.balance(user_ref(message.from_user, locale))
        hours, minutes = time_left(balance.resets_at, time.time())
        text = render(
            "quota.balance", locale, credits=balance.credits, hours=hours, minutes=minutes
        )
        await reply.send(text)

    async def _c_link(self, message: Message, args: str, locale: str, reply: ReplyOnce) -> None:
        assert message.from_user is not None
        user = user_ref(message.from_user, locale)
        try:
            if args:
                await self._service.accounts.link(user, args)
                await reply.send(render("access.linked", locale))
                return
            code = await self._service.accounts.link_code(user)
        except RequestRejected as exc:
            await reply.send(render(exc.key, locale, **exc.params))
            return
        await reply.send(render("access.link_code", locale, code=code.code, minutes=code.minutes))

    async def _c_grant(self, message: Message, args: str, locale: str, reply: ReplyOnce) -> None:
        await self._admin(message, "grant", args, locale, reply)

    async def _c_ban(self, message: Message, args: str, locale: str, reply: ReplyOnce) -> None:
        await self._admin(message, "ban", args, locale, reply)

    async def _c_unban(self, message: Message, args: str, locale: str, reply: ReplyOnce) -> None:
        await self._admin(message, "unban", args, locale, reply)

    async def _admin(
        self, message: Message, action: str, args: str, locale: str, reply: ReplyOnce
    ) -> None:
        """Run an admin action on a user named by id, or by replying to their message."""
        assert message.from_user is not None
        if message.from_user.id not in self._settings.admin_ids:
            await reply.send(render("chat.admin_only", locale))
            return
        words = args.split()
        replied = message.reply_to_message
        if replied is not None and replied.from_user is not None and not replied.from_user.is_bot:
            target = str(replied.from_user.id)
        elif words and words[0].isdigit():
            target = words.pop(0)
        else:
            await reply.send(render("chat.admin_usage", locale))
            return
        accounts = self._service.accounts
        user = UserRef(PLATFORM, target)
        actor = f"{PLATFORM}:{message.from_user.id}"
        account = await accounts.account_id(user, create=action == "grant")
        if account is None:
            await reply.send(render("access.unknown_account", locale))
            return
        if action == "grant":
            if not words or not words[0].isdigit():
                await reply.send(render("chat.admin_usage", locale))
                return
            await accounts.grant(account, int(words[0]), actor=actor)
        elif action == "ban":
            await accounts.ban(account, actor=actor, reason=" ".join(words))
        else:
            await accounts.unban(account, actor=actor)
        await reply.send(render("chat.admin_done", locale, action=action, user_id=target))

    async def _c_stats(self, message: Message, args: str, locale: str, reply: ReplyOnce) -> None:
        assert message.from_user is not None
        if message.from_user.id not in self._settings.admin_ids:
            await reply.send(render("chat.admin_only", locale))
            return
        counts = await self._store.count_by_state()
        summary = stats_summary({state.value: count for state, count in counts.items()})
        await reply.send(render("chat.stats", locale, summary=summary))
