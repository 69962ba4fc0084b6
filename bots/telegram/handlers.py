"""PTB handlers: translate updates into the conversation's intents, and back on errors.

Thin glue: ``routing`` decides what a message asks, ``bots.chat`` holds the conversation.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from telegram import Bot, BotCommand, Update
from telegram.error import Forbidden, TelegramError
from telegram.ext import Application, CallbackContext, CallbackQueryHandler, MessageHandler, filters

from bots.chat.commands import menu
from bots.chat.conversation import Conversation
from bots.chat.platform import Blocked
from bots.chat.status import StatusBoard
from config.settings import TelegramSettings
from core.i18n import LOCALES, render

from .ingest import Ingest
from .routing import Me, press_of, route, said_of, user_locale

log = logging.getLogger(__name__)

Context = CallbackContext[Any, Any, Any, Any]


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


class Handlers:
    """Message and button handlers for the Application."""

    def __init__(
        self,
        conversation: Conversation,
        *,
        board: StatusBoard,
        ingest: Ingest,
        settings: TelegramSettings,
        me: Me,
    ) -> None:
        self._conversation = conversation
        self._board = board
        self._ingest = ingest
        self._settings = settings
        self._me = me

    def register(self, app: Application) -> None:  # type: ignore[type-arg]
        """Add the handlers to an Application."""
        app.add_handler(CallbackQueryHandler(self.on_button))
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self.on_message))
        app.add_error_handler(self.on_error)

    async def on_message(self, update: Update, context: Context) -> None:
        """Turn a message into a request, a question for the line, or a command answer."""
        message = update.message
        if message is None or message.from_user is None:
            return
        intent = route(message, self._me, group_trigger=self._settings.group_trigger)
        if intent is None:
            return
        await self._conversation.said(said_of(message), intent)

    async def on_button(self, update: Update, context: Context) -> None:
        """Act on a press of one of the bot's inline buttons."""
        if update.callback_query is not None:
            await self._conversation.pressed(press_of(update.callback_query))

    async def on_error(self, update: object, context: Context) -> None:
        """Log a handler failure; tell the user unless the update is tried again."""
        error = context.error
        chat = update.effective_chat if isinstance(update, Update) else None
        if isinstance(error, (Forbidden, Blocked)):
            # The user blocked the bot (or it left the group): nothing failed on our side,
            # and every further message there would be refused too.
            where = chat.id if chat is not None else "?"
            log.info("chat %s refused the bot (%s); not writing to it", where, error)
            if chat is not None:
                self._board.block(str(chat.id))
            return
        if isinstance(update, Update) and self._ingest.failed(update):
            log.warning("handling update %s failed; trying again: %r", update.update_id, error)
            return
        log.error("handler failed", exc_info=error)
        if isinstance(update, Update) and update.effective_message and update.effective_user:
            if chat is not None and self._board.is_blocked(str(chat.id)):
                return
            locale = user_locale(None, update.effective_user)
            with contextlib.suppress(TelegramError):
                await update.effective_message.reply_text(render("chat.internal_error", locale))
